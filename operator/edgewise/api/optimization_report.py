"""The optimization report, as it crosses back from the optimizer (a worker process or a Job's pod).

The optimizer writes it (optimize/pipeline.py, optimize/job.py, `edgewise optimize --report`);
the operator validates it once (controller/artifacts.py) and reads attributes, never keys. It is
the twin of api/optimization_job.py, which crosses the other way. JSON, camelCase.

`outcome` is a condition reason. Three say something was made and judged — Optimized,
OptimizationRejected (no candidate passed the accuracy gate and fallback was off), DoesNotFit
(memory gate) — and carry what was measured. The others say the job failed before that and
carry only a message (and, from a download, the error's own words in `detail`, for the
operator's log only). The wire form of a failure is what it always was, `{"outcome", "message"}`:
the operator's index keeps reports next to the artifacts they describe, and reads old ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, model_validator

from edgewise.api.base import ApiModel

# Something was made and judged: the report says what and how it measured.
MadeOutcome = Literal["Optimized", "OptimizationRejected", "DoesNotFit"]
# Nothing was made. InvalidModel and CalibrationMismatch are the input's fault; SourceUnavailable
# and DigestMismatch happen while fetching; TechniqueFailed is a technique's error that escaped
# the pipeline; OptimizationFailed is everything else (a crash, a limit, a malformed report).
FailedOutcome = Literal["OptimizationFailed", "InvalidModel", "CalibrationMismatch", "TechniqueFailed",
                        "SourceUnavailable", "DigestMismatch"]
Outcome = Literal[MadeOutcome, FailedOutcome]
MADE_OUTCOMES: frozenset[str] = frozenset(get_args(MadeOutcome))
FAILED_OUTCOMES: frozenset[str] = frozenset(get_args(FailedOutcome))


class FileInfo(ApiModel):
    path: str
    sha256: str
    size_bytes: int


class TargetInfo(ApiModel):
    runtime: str
    precision: str
    cpu_features: list[str] = Field(default_factory=list)


class AgreementInfo(ApiModel):
    samples: int
    min_cosine: float
    mean_cosine: float
    max_abs_error: float
    top1_agreement_percent: float | None = None


class LatencyInfo(ApiModel):
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

    def summary(self) -> str:
        """`latency 0.62x (0.58-0.66x, 6 rounds: faster)`; reports older than the rounds say `latency 0.62x`."""
        text = f"latency {self.ratio:.2f}x"
        if self.verdict and self.ratio_low is not None and self.ratio_high is not None:
            text += f" ({self.ratio_low:.2f}-{self.ratio_high:.2f}x, {self.rounds} rounds: {self.verdict})"
        return text


class MemoryInfo(ApiModel):
    peak_mib: float = Field(alias="peakMiB")
    baseline_mib: float = Field(alias="baselineMiB")
    model_mib: float = Field(alias="modelMiB")


class GateInfo(ApiModel):
    passed: bool
    reason: str
    message: str
    numbers: dict[str, float] = Field(default_factory=dict)


class Attempt(ApiModel):
    technique: str
    precision: str
    status: Literal["accepted", "rejected", "failed"]
    message: str = ""
    agreement: AgreementInfo | None = None


class OptimizationReport(ApiModel):
    """What a job made and how it measured, or why it made nothing."""

    outcome: Outcome
    message: str
    # Filled when something was made and judged (MADE_OUTCOMES); the validator below insists.
    source: FileInfo | None = None
    source_kind: str = ""
    source_opset: int = 0
    target: TargetInfo | None = None
    precision: str = ""  # of the artifact
    technique: str = ""
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
    # A failure's own words (a server's answer, a path): for the operator's log, never a status.
    # Its wire name is contract.JOB_REPORT_DETAIL.
    detail: str | None = None

    @model_validator(mode="after")
    def _made_reports_say_what(self) -> OptimizationReport:
        if self.outcome in MADE_OUTCOMES and (self.source is None or self.target is None):
            raise ValueError(f"a report with outcome {self.outcome} names its source and target")
        if self.outcome in ("Optimized", "DoesNotFit") and self.artifact is None:
            raise ValueError(f"a report with outcome {self.outcome} describes its artifact")
        return self

    @classmethod
    def failed(cls, outcome: FailedOutcome, message: str, detail: str | None = None) -> OptimizationReport:
        return cls(outcome=outcome, message=message, detail=detail)

    @property
    def made(self) -> bool:
        """Something was made and judged (accepted or not); else the job failed before that."""
        return self.outcome in MADE_OUTCOMES

    def to_wire(self) -> dict[str, Any]:
        """The JSON form. A failure's is only what it says (outcome, message, detail when given)."""
        return self.model_dump(mode="json", **self._wire_options())

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, **self._wire_options())

    def _wire_options(self) -> dict[str, Any]:
        if not self.made:
            return {"by_alias": True, "include": {"outcome", "message", "detail"}, "exclude_none": True}
        return {"by_alias": True, "exclude": {"detail"} if self.detail is None else None}

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def read(cls, path: str | Path) -> OptimizationReport:
        return cls.model_validate_json(Path(path).read_text())

    def without_detail(self) -> OptimizationReport:
        return self.model_copy(update={"detail": None})

    def summary(self) -> str:
        """One line for annotations, Events and status messages."""
        parts = [f"{self.outcome}: {self.technique}".rstrip(": ")]
        if self.size_ratio is not None:
            parts.append(f"size {self.size_ratio:.2f}x")
        if self.latency:
            parts.append(self.latency.summary())
        if self.agreement:
            parts.append(f"min cosine {self.agreement.min_cosine:.4f}")
        if self.memory:
            parts.append(f"peak {self.memory.peak_mib:.0f} MiB")
        return ", ".join(parts)

    def passed_over(self) -> list[str]:
        """What was tried before the artifact and why it was not taken (an accuracy or speed gate, a failure)."""
        return [f"{a.technique} {a.status}: {a.message[:200]}" for a in self.attempts if a.status != "accepted"]
