"""What the kube layer observed, reduced to what planning needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    ready: bool = True  # the Ready condition; a NotReady node is deferred by rollout analysis
    address: str = ""  # InternalIP, where the node agent listens
    memory_mib: int = 0  # allocatable memory, for the memory-fit gate (0: unknown)
    # status.allocatable as the node reports it (quantities by resource name; empty: unknown), for the
    # check that a class's requests fit its nodes (core/guards.py).
    allocatable: dict[str, str] = field(default_factory=dict, compare=False)

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
    # The live pod template: a stable workload keeps serving its revision while the spec moves on.
    template: dict[str, Any] | None = field(default=None, compare=False)

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def rolled_out(self) -> bool:
        """The controller has seen the latest spec and every pod it wants is ready."""
        # Workloads use the OnDelete strategy (see core/rollout/placement.py): a pod is replaced only when its
        # node moves between revisions, so "updated" counts lag by design and readiness is what counts.
        return self.observed_generation >= self.generation and self.ready == self.desired


@dataclass(frozen=True)
class Service:
    """An existing Service: what deciding to (re)write it needs."""

    name: str
    annotations: dict[str, str] = field(default_factory=dict)
    owner_uids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RuntimePod:
    """A model's runtime pod, as canary analysis needs it: where it answers, and what Kubernetes says."""

    name: str
    uid: str
    ip: str = ""
    node: str = ""
    owner_uid: str = ""  # the DaemonSet controlling it ("" if none)
    revision: str = ""  # the revision label of the template it was created from
    ready: bool = False
    restarts: int = 0  # container restarts, summed
    reason: str = ""  # last waiting (CrashLoopBackOff) or termination (OOMKilled) reason
    terminating: bool = False  # deletionTimestamp set
    phase: str = ""  # Pending, Running, Succeeded, Failed (a Failed canary pod counts for spec.rollout.abort)
