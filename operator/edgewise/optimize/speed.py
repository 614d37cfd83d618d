"""Pure: is an artifact slower than a limit × the original, from paired CPU-time measurements?

A speed decision ships or withholds an artifact, so it must not flip with the load of the
machine that measures. Three things make it load-independent:

- the measurement is CPU time of the inference (one intra-op thread, so the work runs on
  the measuring thread), not wall time: time spent waiting for a busy core is not counted;
- both models are measured in interleaved rounds (the order alternates), and each round
  yields one ratio, so what load remains (shared caches, frequency) hits both alike;
- rounds go on until the confidence interval of the ratio lies wholly on one side of the
  limit, or a cap is reached: then the verdict is `inconclusive`, and an inconclusive
  measurement never rejects an artifact (the canary's latency analysis judges it on the
  class's own devices). The interval is looked at after every round from `min_rounds` on,
  so each look uses 95% confidence split over all possible looks (Bonferroni): looking
  fifteen times at 95% intervals would call a ratio equal to the limit "slower" far more
  often than 2.5% of the time, and an artifact near the limit would ship or not by chance.

The ratio is the geometric mean of the per-round ratios, its interval a Student t interval
on their logarithms. Measuring is injected (`Round`), so all of this is tested with numbers.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["slower", "faster", "inconclusive"]

MIN_ROUNDS = 6  # fewer paired rounds give intervals too wide to mean anything (t = 2.57 at 5 df)
MAX_ROUNDS = 20

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom; the normal 1.96 beyond.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


def t95(df: int) -> float:
    if df < 1:
        raise ValueError(f"a confidence interval needs at least 2 rounds (df={df})")
    return _T95[df - 1] if df <= len(_T95) else 1.96


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """Student's t quantile for probability `p` (0.5 < p < 1), by bisection on its CDF, which is
    integrated numerically (Simpson's rule on the density): only the standard library."""
    if df < 1 or not 0.5 < p < 1:
        raise ValueError(f"need df >= 1 and 0.5 < p < 1, got df={df}, p={p}")
    norm = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(t: float, steps: int = 2000) -> float:
        h = t / steps
        f = [norm * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(steps + 1)]
        return 0.5 + h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))

    low, high = 0.0, 1.0
    while cdf(high) < p:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return (low + high) / 2


@dataclass(frozen=True)
class Round:
    """One interleaved round: CPU milliseconds per inference of the original and of the artifact."""

    before_ms: float
    after_ms: float

    @property
    def ratio(self) -> float:
        return self.after_ms / self.before_ms


@dataclass(frozen=True)
class SpeedMeasurement:
    """The ratio artifact/original of CPU time per inference, with its 95% interval, against `limit`."""

    rounds: int
    ratio: float
    # low..high is a `confidence` interval (0.95 split over the looks `measure` may take)
    low: float
    high: float
    limit: float
    verdict: Verdict
    before_ms: float  # median over rounds, CPU ms per inference of the original
    after_ms: float

    def describe(self) -> str:
        """For attempts, notes and the status: the numbers a person needs to trust the verdict."""
        verdict = (f"inconclusive against {self.limit:g}x" if self.verdict == "inconclusive"
                   else f"{self.verdict} than {self.limit:g}x")
        return (f"CPU time per inference, {self.rounds} interleaved rounds, 95% interval "
                f"{self.low:.2f}-{self.high:.2f}x: {verdict}")  # 95% over every look `measure` took


def summarize(rounds: Sequence[Round], limit: float = 1.0, looks: int = 1) -> SpeedMeasurement:
    """The ratio, its interval and the verdict against `limit`, from at least two rounds.

    The interval has 95% confidence over `looks` intervals a caller may look at (one: a plain
    95% interval)."""
    if len(rounds) < 2:
        raise ValueError(f"a confidence interval needs at least 2 rounds, got {len(rounds)}")
    if limit <= 0 or any(not (r.before_ms > 0 and r.after_ms > 0) for r in rounds):
        raise ValueError(f"times and the limit must be positive: limit {limit}, rounds {list(rounds)}")
    logs = [math.log(r.ratio) for r in rounds]
    mean = statistics.fmean(logs)
    df = len(logs) - 1
    t = t95(df) if looks == 1 else t_quantile(1 - 0.025 / looks, df)
    half = t * statistics.stdev(logs) / math.sqrt(len(logs))
    low, high = math.exp(mean - half), math.exp(mean + half)
    verdict: Verdict = "slower" if low > limit else "faster" if high < limit else "inconclusive"
    return SpeedMeasurement(rounds=len(rounds), ratio=math.exp(mean), low=low, high=high, limit=limit,
                            verdict=verdict, before_ms=statistics.median(r.before_ms for r in rounds),
                            after_ms=statistics.median(r.after_ms for r in rounds))


def measure(measure_round: Callable[[bool], Round], limit: float = 1.0, min_rounds: int = MIN_ROUNDS,
            max_rounds: int = MAX_ROUNDS) -> SpeedMeasurement:
    """Rounds until the interval separates from `limit` (after `min_rounds`), at most `max_rounds`.

    `measure_round(original_first)` measures one round; the order alternates between rounds.
    """
    if not 2 <= min_rounds <= max_rounds:
        raise ValueError(f"need 2 <= min_rounds <= max_rounds, got {min_rounds}, {max_rounds}")
    rounds: list[Round] = []
    looks = max_rounds - min_rounds + 1
    while True:
        rounds.append(measure_round(len(rounds) % 2 == 0))
        if len(rounds) >= min_rounds:
            result = summarize(rounds, limit, looks)
            if result.verdict != "inconclusive" or len(rounds) >= max_rounds:
                return result
