"""Staging per site: who downloads from the source, who from a peer, and how long it should take.

Pure. One copy per site: of a site's nodes, the one whose name has the lowest sha256 (among the
Ready ones with an address) is the site's *source node*: it is the only one that downloads from
outside the site, within the site's budget (its agent's token bucket). The same node for every
class and every model of the site, so one bucket paces the site's whole uplink. The other nodes
fetch from its agent, inside the site, uncounted. The choice depends only on the names and
readiness of the site's nodes, so every reconcile picks the same node while the site is stable.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from edgewise.api.rollout_status import SiteStaging
from edgewise.api.settings import Bandwidth
from edgewise.core.observed import NodeInfo

DAY = 86400


def site_of(node: NodeInfo, label: str) -> str:
    return node.labels.get(label, "")


def _rank(node: NodeInfo) -> str:
    return hashlib.sha256(node.name.encode()).hexdigest()


def source_nodes(nodes: Iterable[NodeInfo], label: str, agent_selector: Mapping[str, str] | None = None
                 ) -> dict[str, NodeInfo]:
    """Per site, the node that downloads from outside it (sites with no eligible node are absent):
    Ready, with an address, and running an agent (the agent DaemonSet's node selector)."""
    out: dict[str, NodeInfo] = {}
    for node in nodes:
        if not node.ready or not node.address:
            continue
        if any(node.labels.get(k) != v for k, v in (agent_selector or {}).items()):
            continue
        site = site_of(node, label)
        if site not in out or _rank(node) < _rank(out[site]):
            out[site] = node
    return out


@dataclass(frozen=True)
class SiteStage:
    """One site's part of a stage request: its source node, then the nodes that fetch from it."""

    site: str
    source: NodeInfo | None  # None: no eligible node, so each of `others` downloads from the source itself
    others: tuple[NodeInfo, ...]  # fetch from `source`'s agent (falling back to the source)
    bytes_per_second: int | None
    daily_bytes: int | None
    time_zone: str = "UTC"  # whose midnight resets the daily cap

    def budget(self) -> dict[str, object]:
        """The budget as the agents read it (edgewise.shared.bandwidth.Budget.from_wire)."""
        return {"bytesPerSecond": self.bytes_per_second, "dailyBytes": self.daily_bytes, "timeZone": self.time_zone}


def site_stages(moving: Sequence[NodeInfo], fleet: Sequence[NodeInfo], bandwidth: Bandwidth,
                agent_selector: Mapping[str, str] | None = None) -> tuple[SiteStage, ...]:
    """The sites of the nodes a step moves, each with its source node (possibly not moving itself:
    it stages for the others) and its budget."""
    label = bandwidth.site_label
    sources = source_nodes(fleet, label, agent_selector) if bandwidth.one_copy_per_site else {}
    grouped: dict[str, list[NodeInfo]] = {}
    for node in moving:
        grouped.setdefault(site_of(node, label), []).append(node)
    out = []
    for site in sorted(grouped):
        source = sources.get(site)
        budget = bandwidth.budget(site)
        others = tuple(n for n in grouped[site] if source is None or n.name != source.name)
        out.append(SiteStage(site=site, source=source, others=others, bytes_per_second=budget.bytes_per_second,
                             daily_bytes=budget.daily_bytes, time_zone=bandwidth.time_zone))
    return tuple(out)


def staging_seconds(size: int, bytes_per_second: int | None, daily_bytes: int | None) -> int | None:
    """Seconds one copy of `size` bytes takes within a budget, counting whole days of waiting for a
    daily cap (from the start of a day: a cap already partly used makes it longer); None: unknown size."""
    if size <= 0:
        return None
    seconds = size / bytes_per_second if bytes_per_second else 0.0
    if daily_bytes and size > daily_bytes:
        seconds = max(seconds, (math.ceil(size / daily_bytes) - 1) * DAY)
    return math.ceil(seconds)


def estimate(members: Sequence[NodeInfo], size: int, bandwidth: Bandwidth,
             fleet: Sequence[NodeInfo] | None = None, agent_selector: Mapping[str, str] | None = None
             ) -> list[SiteStaging]:
    """Per site of a class's nodes: bytes from outside the site, the budget, and the staging time.
    With one copy per site a site downloads `size` once; otherwise once per node, each node paced
    by the budget on its own (so the site's uplink may carry several copies at once)."""
    label = bandwidth.site_label
    counts: dict[str, int] = {}
    for node in members:
        counts[site_of(node, label)] = counts.get(site_of(node, label), 0) + 1
    pool = fleet if fleet is not None else members
    sources = source_nodes(pool, label, agent_selector) if bandwidth.one_copy_per_site else {}
    out = []
    for site in sorted(counts):
        budget = bandwidth.budget(site)
        copies = 1 if site in sources else counts[site]
        out.append(SiteStaging(site=site, nodes=counts[site], bytes=size * copies if size > 0 else None,
                               bytes_per_second=budget.bytes_per_second, daily_bytes=budget.daily_bytes,
                               estimated_seconds=staging_seconds(size, budget.bytes_per_second,
                                                                 budget.daily_bytes)))
    return out


def summary(sites: Sequence[SiteStaging]) -> int | None:
    """The class's staging time: sites stage in parallel, so the slowest site's."""
    known = [s.estimated_seconds for s in sites if s.estimated_seconds is not None]
    return max(known) if known else None
