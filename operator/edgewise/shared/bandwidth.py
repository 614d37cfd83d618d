"""Pacing of downloads from outside a site: a token bucket (bytes per second) and a daily cap.

The node agent reads a source stream through a `Limiter`: every read asks `acquire(n)` for at
most `n` bytes and gets a grant it may read, so the bytes taken off the network — not only the
bytes written to disk — stay within the rate (TCP flow control then slows the sender). Clock and
sleep are injected: the unit tests drive both without waiting.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

QUANTUM = 1 << 16  # the smallest grant worth a read (a tiny read per token would burn CPU)


@dataclass(frozen=True)
class Budget:
    """A site's budget for downloads from outside it; None: no limit of that kind."""

    bytes_per_second: int | None = None
    daily_bytes: int | None = None
    time_zone: str = "UTC"  # the daily cap resets at midnight in this zone

    @property
    def unlimited(self) -> bool:
        return self.bytes_per_second is None and self.daily_bytes is None

    def burst(self) -> int:
        """Bytes the bucket holds when full: a quarter of a second's worth, at least one read."""
        return max(QUANTUM, (self.bytes_per_second or 0) // 4)

    @classmethod
    def from_wire(cls, body: object) -> Budget:
        """{"bytesPerSecond", "dailyBytes", "timeZone"} as the operator sends it; ValueError if malformed."""
        if body is None:
            return cls()
        if not isinstance(body, dict):
            raise ValueError("budget must be an object {bytesPerSecond, dailyBytes, timeZone}")
        rate, daily = body.get("bytesPerSecond"), body.get("dailyBytes")
        for name, value in (("bytesPerSecond", rate), ("dailyBytes", daily)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise ValueError(f"budget {name} must be a positive integer, not {value!r}")
        zone = str(body.get("timeZone") or "UTC")
        zone_info(zone)  # raises on an unknown zone (ValueError subclasses)
        return cls(bytes_per_second=rate, daily_bytes=daily, time_zone=zone)

    def to_wire(self) -> dict[str, object]:
        return {"bytesPerSecond": self.bytes_per_second, "dailyBytes": self.daily_bytes, "timeZone": self.time_zone}


class TokenBucket:
    """`rate` tokens (bytes) per second, at most `burst` held; `grant` says how many may go now."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def _refill(self, now: float) -> None:
        self.tokens = min(float(self.burst), self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)

    def wait_time(self, n: int, now: float) -> float:
        """Seconds until min(n, QUANTUM, burst) tokens are there (0: now)."""
        self._refill(now)
        need = min(n, QUANTUM, self.burst)
        if self.tokens + 1e-6 >= need:
            return 0.0
        return max(1e-3, (need - self.tokens) / self.rate)  # not less: a float clock may not move at all

    def take(self, n: int, now: float) -> int:
        """Up to `n` tokens that are there now (possibly 0), removed from the bucket."""
        self._refill(now)
        granted = min(n, int(self.tokens + 1e-6))
        self.tokens = max(0.0, self.tokens - granted)
        return granted


def zone_info(zone: str) -> dt.tzinfo:
    """`zone` as a tzinfo; UTC without a time zone database (node images may have none)."""
    if zone in ("UTC", "Etc/UTC", ""):
        return dt.UTC
    try:
        return ZoneInfo(zone)
    except (KeyError, ValueError) as err:  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"{zone!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from err


def next_midnight(wall: float, zone: str) -> float:
    """The wall time (epoch seconds) of the next midnight in `zone` after `wall`."""
    tz = zone_info(zone)
    local = dt.datetime.fromtimestamp(wall, tz)
    tomorrow = (local + dt.timedelta(days=1)).date()
    return dt.datetime.combine(tomorrow, dt.time(), tzinfo=tz).timestamp()


def day_of(wall: float, zone: str) -> str:
    return dt.datetime.fromtimestamp(wall, zone_info(zone)).date().isoformat()


class Stopped(Exception):
    """The limiter's `sleep` returned True: the agent is stopping."""


class Limiter:
    """A budget applied to every read of every download through it (thread-safe: the agent's
    download workers share one limiter, so they share the rate and the day's bytes).

    `monotonic` times the bucket, `wall` the day of the cap; `sleep(s)` returns True to abort.
    """

    def __init__(self, budget: Budget, *, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 sleep: Callable[[float], bool | None] = time.sleep) -> None:
        self._monotonic, self._wall, self._sleep = monotonic, wall, sleep
        self._lock = threading.Lock()
        self.day = ""
        self.used_today = 0
        self.budget = Budget()
        self.bucket: TokenBucket | None = None
        self.waiting_until: float | None = None  # wall time the daily cap lifts, while a download waits for it
        self.set_budget(budget)

    def set_budget(self, budget: Budget) -> None:
        """A new budget applies from the next read; the bytes of today still count."""
        with self._lock:
            if budget == self.budget and (self.bucket is not None or budget.bytes_per_second is None):
                return
            self.budget = budget
            self.bucket = (TokenBucket(budget.bytes_per_second, budget.burst(), self._monotonic())
                           if budget.bytes_per_second else None)

    def restore(self, day: str, used: int) -> None:
        """Bytes already downloaded on `day` (read back after a restart)."""
        with self._lock:
            self.day, self.used_today = day, used

    def _roll_day(self) -> None:
        today = day_of(self._wall(), self.budget.time_zone)
        if today != self.day:
            self.day, self.used_today = today, 0

    def acquire(self, n: int) -> int:
        """Block until some of `n` bytes may be read; how many (≥ 1). Raises Stopped."""
        while True:
            with self._lock:
                self._roll_day()
                pause, cap_wait = self._pause(n)
                if pause == 0.0:
                    granted = self._grant(n)
                    if granted:
                        self.waiting_until = None
                        return granted
                    pause = 0.01  # the bucket rounded down to nothing: look again shortly
                self.waiting_until = cap_wait
            if self._sleep(pause):
                raise Stopped("stopped while waiting for the bandwidth budget")

    def _pause(self, n: int) -> tuple[float, float | None]:
        """(seconds to wait before a grant, the wall time the daily cap lifts if that is the wait)."""
        b = self.budget
        if b.daily_bytes is not None and self.used_today >= b.daily_bytes:
            until = next_midnight(self._wall(), b.time_zone)
            return max(0.01, until - self._wall()), until
        if self.bucket is not None:
            return self.bucket.wait_time(n, self._monotonic()), None
        return 0.0, None

    def _grant(self, n: int) -> int:
        b = self.budget
        if b.daily_bytes is not None:
            n = min(n, b.daily_bytes - self.used_today)
        if self.bucket is not None:
            n = self.bucket.take(n, self._monotonic())
        self.used_today += n
        return n

    def refund(self, n: int) -> None:
        """Bytes granted but not read (the stream ended early): back to the bucket and the day."""
        if n <= 0:
            return
        with self._lock:
            self.used_today = max(0, self.used_today - n)
            if self.bucket is not None:
                self.bucket.tokens = min(float(self.bucket.burst), self.bucket.tokens + n)
