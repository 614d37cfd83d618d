"""The token bucket and the daily cap, on an injected clock (nothing sleeps for real)."""

from __future__ import annotations

import datetime as dt

import pytest

from edgewise.shared.bandwidth import QUANTUM, Budget, Limiter, TokenBucket, next_midnight


class FakeClock:
    """Monotonic and wall time that move only when the limiter sleeps."""

    def __init__(self, wall: float) -> None:
        self.t = 0.0
        self.wall0 = wall
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.wall0 + self.t

    def sleep(self, seconds: float) -> bool:
        self.sleeps.append(seconds)
        self.t += seconds
        return False


NOON = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC).timestamp()


def drain(limiter: Limiter, clock: FakeClock, total: int, read: int = 1 << 20) -> list[tuple[float, int]]:
    """Read `total` bytes through `limiter` in reads of at most `read`; (time, bytes) of each grant."""
    grants = []
    left = total
    while left:
        got = limiter.acquire(min(read, left))
        assert 0 < got <= min(read, left)
        grants.append((clock.t, got))
        left -= got
    return grants


def test_a_bucket_grants_its_burst_at_once_then_the_rate() -> None:
    bucket = TokenBucket(rate=100_000, burst=QUANTUM, now=0.0)
    assert bucket.take(1 << 20, now=0.0) == QUANTUM  # full at start: one burst
    assert bucket.take(1 << 20, now=0.0) == 0
    assert bucket.wait_time(QUANTUM, now=0.0) == pytest.approx(QUANTUM / 100_000)
    assert bucket.take(1 << 20, now=0.5) == 50_000  # half a second of rate
    assert bucket.take(1 << 20, now=100.0) == QUANTUM  # never more than the burst, however long idle


def test_the_limiter_never_exceeds_rate_times_time_plus_burst() -> None:
    clock = FakeClock(NOON)
    budget = Budget(bytes_per_second=200_000)
    limiter = Limiter(budget, monotonic=clock.monotonic, wall=clock.wall, sleep=clock.sleep)
    grants = drain(limiter, clock, 5_000_000)
    assert sum(g for _, g in grants) == 5_000_000
    for end in {t for t, _ in grants}:  # bytes granted by time t never exceed burst + rate * t
        assert sum(g for t, g in grants if t <= end) <= budget.burst() + 200_000 * end + 1
    assert clock.t == pytest.approx((5_000_000 - budget.burst()) / 200_000, rel=0.02)  # and it is not slower


def test_without_a_rate_nothing_waits() -> None:
    clock = FakeClock(NOON)
    limiter = Limiter(Budget(), monotonic=clock.monotonic, wall=clock.wall, sleep=clock.sleep)
    assert limiter.acquire(1 << 20) == 1 << 20
    assert clock.sleeps == []


def test_past_the_daily_cap_reads_wait_for_midnight_in_the_budgets_zone() -> None:
    clock = FakeClock(NOON)
    limiter = Limiter(Budget(daily_bytes=3_000_000), monotonic=clock.monotonic, wall=clock.wall, sleep=clock.sleep)
    grants = drain(limiter, clock, 5_000_000)
    before = [g for t, g in grants if clock.wall0 + t < NOON + 12 * 3600]
    assert sum(before) == 3_000_000  # the cap, exactly, on the first day
    assert clock.wall() == pytest.approx(NOON + 12 * 3600, abs=1)  # the rest at the next UTC midnight
    assert limiter.used_today == 2_000_000 and limiter.day == "2026-03-02"
    assert limiter.waiting_until is None  # not waiting any more


def test_the_daily_cap_resets_at_local_midnight_and_says_until_when_while_waiting() -> None:
    berlin = dt.datetime(2026, 3, 1, 22, 30, tzinfo=dt.UTC).timestamp()  # 23:30 in Berlin (UTC+1)
    assert next_midnight(berlin, "Europe/Berlin") == berlin + 30 * 60
    clock = FakeClock(berlin)
    waits: list[float | None] = []
    limiter: Limiter

    def sleep(seconds: float) -> bool:
        waits.append(limiter.waiting_until)
        return clock.sleep(seconds)

    limiter = Limiter(Budget(daily_bytes=1000, time_zone="Europe/Berlin"), monotonic=clock.monotonic,
                      wall=clock.wall, sleep=sleep)
    drain(limiter, clock, 1500)
    assert waits == [berlin + 30 * 60]  # one wait, reported with its end, and only the cap's
    assert clock.wall() == pytest.approx(berlin + 30 * 60)


def test_refunded_bytes_are_not_counted_and_a_stop_ends_the_wait() -> None:
    clock = FakeClock(NOON)
    limiter = Limiter(Budget(daily_bytes=100), monotonic=clock.monotonic, wall=clock.wall, sleep=clock.sleep)
    assert limiter.acquire(100) == 100
    limiter.refund(40)  # the stream ended after 60 of them
    assert limiter.used_today == 60 and limiter.acquire(100) == 40
    stopping = Limiter(Budget(daily_bytes=1), monotonic=clock.monotonic, wall=clock.wall, sleep=lambda _s: True)
    assert stopping.acquire(5) == 1
    with pytest.raises(Exception, match="stopped"):
        stopping.acquire(5)


def test_budgets_from_the_wire_are_checked() -> None:
    assert Budget.from_wire({"bytesPerSecond": 5, "dailyBytes": None}) == Budget(bytes_per_second=5)
    assert Budget.from_wire(None).unlimited
    for bad in ({"bytesPerSecond": 0}, {"dailyBytes": "1G"}, {"timeZone": "Mars/Olympus"}, [1]):
        with pytest.raises(ValueError):
            Budget.from_wire(bad)
