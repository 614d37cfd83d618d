"""Pure gates: accuracy against the original, memory fit, speed."""

from __future__ import annotations

import math

import pytest

from edgewise.api.model import AccuracyGate
from edgewise.optimize import gates, speed
from edgewise.optimize.gates import Agreement
from edgewise.optimize.speed import SpeedMeasurement


def test_accuracy_passes_within_the_gate_with_numbers() -> None:
    result = gates.check_accuracy(Agreement(64, 0.993, 0.996, 0.08), AccuracyGate(min_cosine=0.99))
    assert result.passed and result.reason == "AccuracyGatePassed"
    assert "0.9930" in result.message and "64 samples" in result.message
    assert result.numbers["minCosine"] == 0.993


def test_accuracy_fails_below_min_cosine_and_says_by_how_much() -> None:
    result = gates.check_accuracy(Agreement(64, 0.941, 0.97, 0.24), AccuracyGate(min_cosine=0.99))
    assert not result.passed and result.reason == "AccuracyGateFailed"
    assert "min cosine 0.9410 < 0.99" in result.message


def test_accuracy_fails_on_nan() -> None:
    assert not gates.check_accuracy(Agreement(4, math.nan, math.nan, math.nan), AccuracyGate()).passed


def test_top1_drop_is_gated_for_classifiers() -> None:
    ok = Agreement(100, 0.999, 0.9995, 0.01, top1_agreement_percent=99.5)
    bad = Agreement(100, 0.999, 0.9995, 0.01, top1_agreement_percent=97.0)
    gate = AccuracyGate(min_cosine=0.99, max_top1_drop_percent=1.0)
    assert gates.check_accuracy(ok, gate).passed
    result = gates.check_accuracy(bad, gate)
    assert not result.passed and "top-1 drop 3.00% > 1.0%" in result.message
    assert result.numbers["top1DropPercent"] == 3.0


def test_memory_fits_within_slo_and_node() -> None:
    result = gates.check_memory(180.0, max_memory_mib=512, node_allocatable_mib=4096)
    assert result.passed and result.reason == "Fits"
    assert "180 MiB" in result.message


def test_memory_does_not_fit_the_slo() -> None:
    result = gates.check_memory(700.0, max_memory_mib=512)
    assert not result.passed and result.reason == "DoesNotFit"
    assert result.message == "peak memory 700 MiB > slo.maxMemoryMiB 512 MiB"
    assert result.numbers == {"peakMiB": 700.0, "maxMemoryMiB": 512}


def test_model_larger_than_any_node() -> None:
    result = gates.check_memory(3000.0, max_memory_mib=None, node_allocatable_mib=2048)
    assert not result.passed and "node allocatable memory 2048 MiB" in result.message


def test_no_limits_always_fit() -> None:
    result = gates.check_memory(10_000.0)
    assert result.passed and "no limit given" in result.message


def _speed(ratios: list[float], limit: float = 1.0) -> SpeedMeasurement:
    return speed.summarize([speed.Round(10.0, 10.0 * r) for r in ratios], limit)


def test_latency_gate_is_off_unless_asked() -> None:
    assert gates.check_latency(_speed([1.4, 1.41, 1.39]), None).passed
    slow = gates.check_latency(_speed([1.4, 1.41, 1.39]), 1.0)
    assert not slow.passed and slow.reason == "LatencyGateFailed" and "1.40x the original > 1.0x" in slow.message
    assert "3 interleaved rounds" in slow.message and "slower than 1x" in slow.message
    assert gates.check_latency(_speed([0.55, 0.56, 0.54], 0.8), 0.8).passed


def test_an_inconclusive_speed_keeps_the_artifact() -> None:
    result = gates.check_latency(_speed([0.9, 1.1, 1.05, 0.95]), 1.0)
    assert result.passed and result.reason == "LatencyInconclusive" and "kept" in result.message
    assert result.numbers["latencyRatioLow"] < 1.0 < result.numbers["latencyRatioHigh"]
    assert result.numbers["latencyRounds"] == 4


def test_the_gate_refuses_a_measurement_against_another_limit() -> None:
    with pytest.raises(ValueError, match="measured against 1.0x, the gate is 0.8x"):
        gates.check_latency(_speed([1.0, 1.1]), 0.8)
