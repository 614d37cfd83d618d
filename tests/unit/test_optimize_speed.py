"""Pure: the speed verdict from paired CPU-time rounds, and when measuring stops (measurements injected)."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from edgewise.optimize import speed
from edgewise.optimize.speed import Round


def rounds(*ratios: float, before: float = 10.0) -> list[Round]:
    return [Round(before_ms=before, after_ms=before * r) for r in ratios]


def test_a_consistently_faster_artifact_is_faster_with_its_interval() -> None:
    m = speed.summarize(rounds(0.60, 0.62, 0.61, 0.63, 0.59, 0.60))
    assert m.verdict == "faster" and m.rounds == 6
    assert m.low < m.ratio < m.high < 1.0 and m.ratio == pytest.approx(0.608, abs=0.005)
    assert m.before_ms == 10.0 and m.after_ms == pytest.approx(6.05)


def test_a_consistently_slower_artifact_is_slower() -> None:
    m = speed.summarize(rounds(1.5, 1.4, 1.6, 1.45, 1.55, 1.5))
    assert m.verdict == "slower" and 1.0 < m.low < m.ratio < m.high


def test_a_ratio_near_one_is_inconclusive_not_a_coin_flip() -> None:
    m = speed.summarize(rounds(0.95, 1.06, 1.02, 0.97, 1.04, 0.99))
    assert m.verdict == "inconclusive" and m.low < 1.0 < m.high


def test_the_verdict_is_against_the_given_limit() -> None:
    data = rounds(0.70, 0.72, 0.71, 0.69, 0.70, 0.71)
    assert speed.summarize(data, limit=1.0).verdict == "faster"
    assert speed.summarize(data, limit=0.5).verdict == "slower"
    assert speed.summarize(data, limit=0.705).verdict == "inconclusive"


def test_the_interval_is_a_t_interval_on_log_ratios() -> None:
    m = speed.summarize(rounds(0.5, 2.0))  # logs ±ln2: mean 0, sd ln2·√2, t(1) = 12.706
    half = 12.706 * math.log(2) * math.sqrt(2) / math.sqrt(2)
    assert m.ratio == pytest.approx(1.0) and m.low == pytest.approx(math.exp(-half))
    assert m.high == pytest.approx(math.exp(half))
    assert speed.t95(5) == 2.571 and speed.t95(30) == 2.042 and speed.t95(1000) == 1.96


def test_a_round_that_is_uniformly_slower_for_both_models_does_not_move_the_ratio() -> None:
    """Load that slows both models alike in a round (the point of pairing) leaves the verdict alone."""
    quiet = rounds(0.6, 0.62, 0.61, 0.6, 0.61, 0.62)
    busy = [Round(r.before_ms * f, r.after_ms * f) for r, f in zip(quiet, (1, 3, 1.5, 5, 1, 2.5), strict=True)]
    a, b = speed.summarize(quiet), speed.summarize(busy)
    assert (a.verdict, a.ratio, a.low, a.high) == (b.verdict, pytest.approx(b.ratio), pytest.approx(b.low),
                                                   pytest.approx(b.high))


def test_bad_input_says_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="at least 2 rounds"):
        speed.summarize(rounds(0.5))
    with pytest.raises(ValueError, match="must be positive"):
        speed.summarize([Round(0.0, 1.0), Round(1.0, 1.0)])
    with pytest.raises(ValueError, match="min_rounds"):
        speed.measure(lambda first: Round(1, 1), min_rounds=5, max_rounds=3)


def test_measuring_stops_once_the_interval_separates() -> None:
    calls: list[bool] = []
    ratios = itertools.cycle([0.60, 0.62, 0.61])

    def measure_round(original_first: bool) -> Round:
        calls.append(original_first)
        return Round(10.0, 10.0 * next(ratios))

    m = speed.measure(measure_round, min_rounds=4, max_rounds=20)
    assert m.verdict == "faster" and m.rounds == 4 == len(calls)
    assert calls == [True, False, True, False]  # the order alternates, so drift hits both models alike


def test_measuring_gives_up_as_inconclusive_at_the_cap() -> None:
    noise = itertools.cycle([0.8, 1.25, 1.1, 1 / 1.1])  # the artifact is as fast as the original, noisily
    m = speed.measure(lambda first: Round(10.0, 10.0 * next(noise)), min_rounds=6, max_rounds=12)
    assert m.rounds == 12 and m.verdict == "inconclusive"


def test_the_description_carries_the_numbers_for_the_status() -> None:
    text = speed.summarize(rounds(1.5, 1.4, 1.6)).describe()
    assert text.startswith("CPU time per inference, 3 interleaved rounds, 95% interval ")
    assert text.endswith(": slower than 1x")


def test_the_status_line_carries_the_interval_and_verdict_and_reads_older_reports() -> None:
    from edgewise.api.optimization_report import LatencyInfo, OptimizationReport
    from edgewise.controller.artifacts import _summary

    older = {"beforeMs": 10.0, "afterMs": 6.34, "ratio": 0.634, "batch": 1, "threads": 1}  # before the rounds
    measured = older | {"ratioLow": 0.61, "ratioHigh": 0.66, "rounds": 6, "verdict": "faster"}
    assert LatencyInfo.model_validate(measured).summary() == "latency 0.63x (0.61-0.66x, 6 rounds: faster)"
    assert LatencyInfo.model_validate(older).summary() == "latency 0.63x"
    made = {"path": "m.onnx", "sha256": "0" * 64, "sizeBytes": 1}
    report = OptimizationReport.model_validate({
        "outcome": "Optimized", "message": "", "technique": "int8 dynamic", "latency": measured, "source": made,
        "artifact": made, "target": {"runtime": "onnxruntime", "precision": "int8"}})
    assert _summary(report) == "Optimized: int8 dynamic, latency 0.63x (0.61-0.66x, 6 rounds: faster)"


def test_an_artifact_exactly_at_the_limit_is_rarely_called_slower_though_every_round_is_looked_at() -> None:
    # Looking at a plain 95% interval after each of 15 rounds calls a ratio equal to the limit
    # "slower" about a tenth of the time; the looks share the 95% (Bonferroni), so it stays under 2.5%.
    rng = random.Random(20261203)
    trials, slower = 400, 0
    for _ in range(trials):
        m = speed.measure(lambda first: Round(10.0, 10.0 * math.exp(rng.gauss(0.0, 0.05))))
        slower += m.verdict == "slower"
    assert slower / trials <= 0.025, slower
