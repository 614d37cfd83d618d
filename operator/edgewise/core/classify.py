"""Nodes → hardware classes: the first class whose selector a node matches wins."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from edgewise.api.profile import DeploymentProfileSpec
from edgewise.core.observed import NodeInfo
from edgewise.core.selector import class_term, term_matches
from edgewise.core.tolerations import schedulable


@dataclass(frozen=True)
class ClassMembers:
    """The nodes of one class: where its pods can run, and those its taints keep out."""

    name: str
    nodes: tuple[NodeInfo, ...] = ()
    untolerated: tuple[NodeInfo, ...] = ()


@dataclass(frozen=True)
class Classification:
    classes: tuple[ClassMembers, ...]
    unmatched: tuple[NodeInfo, ...] = field(default=())

    def members(self, name: str) -> ClassMembers:
        return next(c for c in self.classes if c.name == name)

    @property
    def matched_count(self) -> int:
        return sum(len(c.nodes) for c in self.classes)

    def class_of(self, node_name: str) -> str | None:
        for c in self.classes:
            if any(n.name == node_name for n in (*c.nodes, *c.untolerated)):
                return c.name
        return None


def classify(profile: DeploymentProfileSpec, nodes: Iterable[NodeInfo]) -> Classification:
    """Assign every node to the first class it matches; count the rest as unmatched.

    Nodes and classes keep a stable order (by node name), so the result is
    deterministic whatever order the API listed them in.
    """
    terms = [(hc, class_term(hc)) for hc in profile.classes]
    buckets: dict[str, tuple[list[NodeInfo], list[NodeInfo]]] = {hc.name: ([], []) for hc in profile.classes}
    unmatched: list[NodeInfo] = []
    for node in sorted(nodes, key=lambda n: n.name):
        for hc, term in terms:
            if term_matches(term, node.labels):
                ok, blocked = buckets[hc.name]
                (ok if schedulable(node.taints, hc.tolerations or []) else blocked).append(node)
                break
        else:
            unmatched.append(node)
    return Classification(
        classes=tuple(ClassMembers(name, tuple(ok), tuple(blocked))
                      for name, (ok, blocked) in buckets.items()),
        unmatched=tuple(unmatched),
    )
