"""Pure gates: is an artifact close enough to the original, and does it fit the class's devices?

Each gate returns the verdict with the numbers it was computed from, so a status condition
can say exactly why (`OptimizationRejected: min cosine 0.941 < 0.99`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgewise.api.model import AccuracyGate
from edgewise.optimize.speed import SpeedMeasurement


@dataclass(frozen=True)
class Agreement:
    """How close an artifact's outputs are to the original's on the validation inputs."""

    samples: int
    min_cosine: float
    mean_cosine: float
    max_abs_error: float
    top1_agreement_percent: float | None = None  # classifiers only: % of samples with the same argmax

    @property
    def top1_drop_percent(self) -> float | None:
        """Upper bound of the top-1 accuracy drop: every disagreement may be a new mistake."""
        return None if self.top1_agreement_percent is None else 100.0 - self.top1_agreement_percent


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str  # CamelCase, usable as a condition reason
    message: str
    numbers: dict[str, float] = field(default_factory=dict)


def check_accuracy(agreement: Agreement, gate: AccuracyGate) -> GateResult:
    """Pass when the minimum per-sample cosine and the top-1 drop are within the gate."""
    numbers = {"minCosine": agreement.min_cosine, "meanCosine": agreement.mean_cosine,
               "maxAbsError": agreement.max_abs_error, "gateMinCosine": gate.min_cosine}
    failures = []
    if not agreement.min_cosine >= gate.min_cosine:  # NaN fails too
        failures.append(f"min cosine {agreement.min_cosine:.4f} < {gate.min_cosine}")
    drop = agreement.top1_drop_percent
    if drop is not None:
        numbers |= {"top1DropPercent": drop, "gateMaxTop1DropPercent": gate.max_top1_drop_percent}
        if drop > gate.max_top1_drop_percent:
            failures.append(f"top-1 drop {drop:.2f}% > {gate.max_top1_drop_percent}%")
    summary = (f"min cosine {agreement.min_cosine:.4f} (mean {agreement.mean_cosine:.4f}), "
               f"max abs error {agreement.max_abs_error:.4g}"
               + (f", top-1 drop {drop:.2f}%" if drop is not None else "")
               + f" over {agreement.samples} samples")
    if failures:
        return GateResult(False, "AccuracyGateFailed", "; ".join(failures) + f" ({summary})", numbers)
    return GateResult(True, "AccuracyGatePassed", summary, numbers)


def check_memory(peak_mib: float, max_memory_mib: float | None = None,
                 node_allocatable_mib: float | None = None) -> GateResult:
    """Fits when the measured peak is within the class's SLO and what its nodes can allocate.

    `node_allocatable_mib` is the largest allocatable memory among the class's nodes: a model
    that fits none of them is larger than any node.
    """
    numbers: dict[str, float] = {"peakMiB": peak_mib}
    limits = []
    if max_memory_mib is not None:
        numbers["maxMemoryMiB"] = max_memory_mib
        limits.append(("slo.maxMemoryMiB", max_memory_mib))
    if node_allocatable_mib is not None:
        numbers["nodeAllocatableMiB"] = node_allocatable_mib
        limits.append(("node allocatable memory", node_allocatable_mib))
    over = [f"peak memory {peak_mib:.0f} MiB > {name} {limit:.0f} MiB" for name, limit in limits
            if peak_mib > limit]
    if over:
        return GateResult(False, "DoesNotFit", "; ".join(over), numbers)
    within = ", ".join(f"{name} {limit:.0f} MiB" for name, limit in limits) or "no limit given"
    return GateResult(True, "Fits", f"peak memory {peak_mib:.0f} MiB within {within}", numbers)


def check_latency(speed: SpeedMeasurement, max_ratio: float | None) -> GateResult:
    """Optional speed gate: an optimized artifact must not be slower than `max_ratio` × the original.

    Rejects only what was measured slower with confidence (`speed` was measured against
    `max_ratio`); an inconclusive measurement keeps the artifact. Meaningful only where the
    measuring machine speaks for the class's hardware: int8 convolutions pay off on edge CPUs
    and may not on an AVX-512 server.
    """
    numbers = {"latencyRatio": speed.ratio, "latencyRatioLow": speed.low, "latencyRatioHigh": speed.high,
               "latencyRounds": float(speed.rounds)}
    how = speed.describe()
    if max_ratio is None:
        return GateResult(True, "LatencyNotGated", f"latency {speed.ratio:.2f}x the original, not gated ({how})",
                          numbers)
    numbers["maxLatencyRatio"] = max_ratio
    if speed.limit != max_ratio:
        raise ValueError(f"the speed was measured against {speed.limit}x, the gate is {max_ratio}x")
    if speed.verdict == "slower":
        return GateResult(False, "LatencyGateFailed",
                          f"latency {speed.ratio:.2f}x the original > {max_ratio}x ({how})", numbers)
    if speed.verdict == "inconclusive":
        return GateResult(True, "LatencyInconclusive",
                          f"latency {speed.ratio:.2f}x the original, kept: not measurably slower than "
                          f"{max_ratio}x ({how})", numbers)
    return GateResult(True, "LatencyGatePassed", f"latency {speed.ratio:.2f}x the original <= {max_ratio}x ({how})",
                      numbers)
