"""Where a class's artifact stands: made and ready, being made, refused, failed, or not needed yet.

The artifact manager (controller/artifacts.py) says it, the planner deploys only Ready
artifacts, and the status (core/status.py) reports it per class; one type for all three.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from edgewise.core.runtimes import Artifact


class ArtifactState(StrEnum):
    READY = "Ready"
    OPTIMIZING = "Optimizing"
    REJECTED = "Rejected"  # the optimizer refused it: a gate failed, or it does not fit
    FAILED = "Failed"
    IDLE = "Idle"  # no node in the class yet: nothing to make


@dataclass(frozen=True)
class ClassArtifact:
    state: ArtifactState
    artifact: Artifact | None = None  # what the class serves, when Ready
    reason: str = ""  # condition reason when not Ready (OptimizationRejected, DoesNotFit, InvalidModel, …)
    message: str = ""
    size_bytes: int = 0
    summary: str = ""  # the report in one line: technique, size and latency ratios, cosine, peak memory
    retry_in: float | None = None  # seconds until a passing failure is tried again
    peak_memory_mib: float | None = None  # measured peak of the artifact under the runtime, for the switch mode
    attested_by: str = ""  # id of the key that signed the artifact's attestation; "" when it has none

    @property
    def sha256(self) -> str:
        return self.artifact.sha256 if self.artifact else ""

    @property
    def precision(self) -> str:
        return self.artifact.precision if self.artifact else ""
