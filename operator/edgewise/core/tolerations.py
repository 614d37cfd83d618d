"""Whether a class's pods may run on a node, given the node's taints.

DaemonSet pods tolerate some taints automatically (the DaemonSet controller
adds them), so the counts in status match what the scheduler will do.
"""

from __future__ import annotations

from collections.abc import Iterable

from edgewise.api.profile import Toleration
from edgewise.core.observed import Taint

# Added to every DaemonSet pod by the DaemonSet controller.
DAEMONSET_TOLERATIONS = (
    Toleration(key="node.kubernetes.io/not-ready", operator="Exists", effect="NoExecute"),
    Toleration(key="node.kubernetes.io/unreachable", operator="Exists", effect="NoExecute"),
    Toleration(key="node.kubernetes.io/disk-pressure", operator="Exists", effect="NoSchedule"),
    Toleration(key="node.kubernetes.io/memory-pressure", operator="Exists", effect="NoSchedule"),
    Toleration(key="node.kubernetes.io/pid-pressure", operator="Exists", effect="NoSchedule"),
    Toleration(key="node.kubernetes.io/unschedulable", operator="Exists", effect="NoSchedule"),
)


def tolerates(toleration: Toleration, taint: Taint) -> bool:
    if toleration.effect and toleration.effect != taint.effect:
        return False
    if toleration.operator == "Exists":
        return toleration.key is None or toleration.key == taint.key
    return toleration.key == taint.key and (toleration.value or "") == taint.value


# What the node controller puts on a node that is away (NotReady, or its kubelet silent). The node
# stays in its class: its DaemonSet pods stay (they tolerate the NoExecute side), the rollout defers
# it, and the status counts it as a node without a ready pod rather than forgetting it — which is
# what the EdgewiseClassNodesUnready alert is about.
NODE_AWAY_TAINTS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})


def schedulable(taints: Iterable[Taint], tolerations: Iterable[Toleration]) -> bool:
    """True when every NoSchedule/NoExecute taint is tolerated (PreferNoSchedule never blocks), a node
    being away aside."""
    allowed = [*tolerations, *DAEMONSET_TOLERATIONS]
    return all(any(tolerates(t, taint) for t in allowed)
               for taint in taints if taint.effect in ("NoSchedule", "NoExecute")
               and not (taint.effect == "NoSchedule" and taint.key in NODE_AWAY_TAINTS))


def tolerates_every_taint(toleration: Toleration) -> bool:
    """A toleration without a key and operator Exists: every taint (of its effect, or all), the
    control plane's and any other a cluster admin set to keep workloads off a node."""
    return toleration.key is None and toleration.operator == "Exists"
