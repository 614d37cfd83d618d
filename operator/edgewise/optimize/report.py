"""The optimization report: what was made, how it compares, which gates it passed. JSON, camelCase.

The operator copies `summary()` into annotations and status; the full report is kept next to
the artifact in the store. `outcome` is a condition reason: Optimized, OptimizationRejected
(no candidate passed the accuracy gate and fallback was off), DoesNotFit (memory gate).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

Outcome = Literal["Optimized", "OptimizationRejected", "DoesNotFit"]


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class FileInfo(_Model):
    path: str
    sha256: str
    size_bytes: int


class TargetInfo(_Model):
    runtime: str
    precision: str
    cpu_features: list[str] = Field(default_factory=list)


class AgreementInfo(_Model):
    samples: int
    min_cosine: float
    mean_cosine: float
    max_abs_error: float
    top1_agreement_percent: float | None = None


class LatencyInfo(_Model):
    """The speed measurement (see optimize.speed): CPU time per inference, interleaved rounds."""

    before_ms: float  # CPU ms per inference, median over rounds
    after_ms: float
    ratio: float  # geometric mean of the rounds' artifact/original ratios
    batch: int
    threads: int  # intra-op threads while measuring (1: the CPU time is the model's own)
    clock: Literal["cpu", "wall"] = "cpu"
    rounds: int = 0
    ratio_low: float | None = None  # 95% confidence interval of the ratio
    ratio_high: float | None = None
    limit: float | None = None  # what the verdict compares with: the speed gate, or 1.0
    verdict: Literal["slower", "faster", "inconclusive"] | None = None
    runs_per_round: int = 0


class MemoryInfo(_Model):
    peak_mib: float = Field(alias="peakMiB")
    baseline_mib: float = Field(alias="baselineMiB")
    model_mib: float = Field(alias="modelMiB")


class GateInfo(_Model):
    passed: bool
    reason: str
    message: str
    numbers: dict[str, float] = Field(default_factory=dict)


class Attempt(_Model):
    technique: str
    precision: str
    status: Literal["accepted", "rejected", "failed"]
    message: str = ""
    agreement: AgreementInfo | None = None


def latency_summary(latency: dict[str, Any]) -> str:
    """`latency 0.62x (0.58-0.66x, 6 rounds: faster)` from a report's camelCase `latency`."""
    text = f"latency {latency['ratio']:.2f}x"
    if latency.get("verdict") and latency.get("ratioLow") is not None and latency.get("ratioHigh") is not None:
        text += (f" ({latency['ratioLow']:.2f}-{latency['ratioHigh']:.2f}x, {latency.get('rounds', 0)} rounds: "
                 f"{latency['verdict']})")
    return text


class OptimizationReport(_Model):
    outcome: Outcome
    message: str
    source: FileInfo
    source_kind: str
    source_opset: int
    target: TargetInfo
    precision: str  # of the artifact
    technique: str
    artifact: FileInfo | None = None
    size_ratio: float | None = None
    latency: LatencyInfo | None = None
    agreement: AgreementInfo | None = None
    validation: Literal["calibration", "validation", "synthetic"] = "synthetic"
    memory: MemoryInfo | None = None
    accuracy_gate: GateInfo | None = None
    memory_gate: GateInfo | None = None
    kept_float: list[str] = Field(default_factory=list)
    attempts: list[Attempt] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    versions: dict[str, str] = Field(default_factory=dict)
    duration_seconds: float = 0.0

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def read(cls, path: str | Path) -> OptimizationReport:
        return cls.model_validate_json(Path(path).read_text())

    def summary(self) -> str:
        """One line for annotations, Events and status messages."""
        parts = [f"{self.outcome}: {self.technique}"]
        if self.size_ratio is not None:
            parts.append(f"size {self.size_ratio:.2f}x")
        if self.latency:
            parts.append(latency_summary(self.latency.model_dump(by_alias=True)))
        if self.agreement:
            parts.append(f"min cosine {self.agreement.min_cosine:.4f}")
        if self.memory:
            parts.append(f"peak {self.memory.peak_mib:.0f} MiB")
        return ", ".join(parts)
