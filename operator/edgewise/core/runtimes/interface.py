"""The runtime interface: what a runtime decides for a hardware class, and what it is given."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgewise.api.profile import HardwareClass
from edgewise.api.settings import OperatorSettings
from edgewise.core.observed import NodeInfo
from edgewise.core.selector import Requirement


@dataclass(frozen=True)
class Artifact:
    """What a class's pods fetch: a file by digest, and its numeric precision."""

    uri: str
    sha256: str
    precision: str = "fp32"


@dataclass(frozen=True)
class Variant:
    """A slice of a class's nodes that can share one pod template."""

    key: str  # "" when the class needs no split; part of the workload name otherwise
    requirements: tuple[Requirement, ...] = ()
    value: str = ""  # e.g. the compute capability "8.7"
    nodes: tuple[NodeInfo, ...] = ()


@dataclass(frozen=True)
class Split:
    variants: tuple[Variant, ...]
    rejected: tuple[tuple[NodeInfo, str], ...] = field(default=())  # node, why it can't run the class


@dataclass(frozen=True)
class PodContext:
    model: str
    version: str
    hardware: HardwareClass
    precision: str  # target precision of the class
    artifact: Artifact
    settings: OperatorSettings
    variant: Variant
    # The EdgeModel's pinned source digest: the fetch container checks that the artifact's attestation names it.
    source_sha256: str = ""


class Runtime(Protocol):
    name: str

    def split(self, nodes: Sequence[NodeInfo], hardware: HardwareClass) -> Split:
        """Group the class's nodes into workloads, each with one pod template."""

    def pod_spec(self, ctx: PodContext) -> dict[str, Any]:
        """The pod spec (without affinity and tolerations, which the planner adds)."""

    def image(self, ctx: PodContext) -> str:
        """The serving image."""
