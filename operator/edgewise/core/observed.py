"""What the kube layer observed, reduced to what planning needs."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"


@dataclass(frozen=True)
class NodeInfo:
    """A node as the classifier sees it: its name, labels and taints."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()

    def __hash__(self) -> int:
        return hash(self.name)


@dataclass(frozen=True)
class Workload:
    """An existing DaemonSet owned by a model: its identity and rollout counters."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    uid: str = ""
    generation: int = 0
    observed_generation: int = 0
    desired: int = 0
    ready: int = 0
    updated: int = 0
    available: int = 0

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def rolled_out(self) -> bool:
        """The controller has seen the latest spec and every pod runs it and is ready."""
        return (self.observed_generation >= self.generation
                and self.updated == self.desired and self.ready == self.desired)
