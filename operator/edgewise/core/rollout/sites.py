"""Sites: how a rollout counts in sites and still places each step with one threshold.

A site is the value of the site label on a node (spec.rollout.siteLabel, else the profile's
siteLabel, default topology.kubernetes.io/zone). Nodes without it form one implicit site, "".

A rollout whose steps count sites (`sites`, `sitesPercent`) or pin `canarySites` orders nodes
site by site instead of by their hashed bucket alone: every node gets a *rank*

    rank = site_key(site) * 100 + bucket(node)

as a label (`edgewise.io/site-rank-<hash of the site label>`, written once per node and site
label, like the bucket label). `site_key` is a hash of the site name, so sites come in a stable
order that does not depend on the model, and nodes within a site in their bucket order; the
implicit site "" has the largest key and comes last. "The first N sites" and "P percent of the
nodes, site by site" are then both one threshold on the rank, and a step is still one write per
workload whatever the fleet size.

Mandatory canary sites cannot sit first in a hashed order shared by every model, so they are
named in the affinity instead: the canary slot takes `site In canarySites` OR `rank < t`, the
stable slot `site NotIn canarySites` AND `rank >= t`. Both sides stay one node affinity each.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edgewise.api.model import Rollout, Step
from edgewise.core.observed import NodeInfo
from edgewise.core.rollout.buckets import BUCKET_LABEL, BUCKETS, bucket_of

DEFAULT_SITE_LABEL = "topology.kubernetes.io/zone"
NO_SITE = ""
SITE_SPAN = 10**9  # named sites' keys lie in [0, SITE_SPAN); the implicit site "" has SITE_SPAN
RANK_END = (SITE_SPAN + 1) * BUCKETS  # one past every rank
RANK_PREFIX = "edgewise.io/site-rank-"
# A site is judged against its own stable pods when it has at least this many (one pod's numbers are
# too noisy to stand for a site); otherwise against the class's stable pods fleet-wide.
MIN_SITE_STABLE_PODS = 2


def site_key(site: str) -> int:
    """A site's place in the rollout order: a hash of its name, stable across models and restarts."""
    if site == NO_SITE:
        return SITE_SPAN
    return int.from_bytes(hashlib.sha256(site.encode()).digest()[:8], "big") % SITE_SPAN


def rank_of(node_name: str, site: str) -> int:
    return site_key(site) * BUCKETS + bucket_of(node_name)


def rank_label(site_label: str) -> str:
    """The node label holding ranks for one site label (a label key is at most 63 characters after '/')."""
    return RANK_PREFIX + hashlib.sha256(site_label.encode()).hexdigest()[:10]


def site_label_of(rollout: Rollout, profile_site_label: str | None) -> str:
    """The model's site label wins over the profile's; both unset is the default."""
    return rollout.site_label or profile_site_label or DEFAULT_SITE_LABEL


@dataclass(frozen=True)
class Order:
    """How a class's nodes line up for a rollout: `label` holds each node's place, below `end`."""

    label: str = BUCKET_LABEL
    end: int = BUCKETS
    site_label: str | None = None  # None: the classic order, by bucket only

    @property
    def by_site(self) -> bool:
        return self.site_label is not None

    def site(self, node: NodeInfo) -> str:
        return node.labels.get(self.site_label, NO_SITE) if self.site_label else NO_SITE

    def rank(self, node: NodeInfo) -> int:
        return rank_of(node.name, self.site(node)) if self.site_label else bucket_of(node.name)


BY_BUCKET = Order()  # the classic order, by hashed bucket alone


def order_for(rollout: Rollout, profile_site_label: str | None) -> Order:
    """The order a rollout's spec asks for: by site when a step counts sites or pins canary sites."""
    if not rollout.uses_sites():
        return BY_BUCKET
    label = site_label_of(rollout, profile_site_label)
    return Order(label=rank_label(label), end=RANK_END, site_label=label)


def order_from(label: str | None, site_label: str | None) -> Order:
    """The order a class's rollout state was placed with."""
    if not label or label == BUCKET_LABEL or not site_label:
        return BY_BUCKET
    return Order(label=label, end=RANK_END, site_label=site_label)


Ranked = tuple[tuple[int, str], ...]  # (rank, site) of each node of a class, sorted


def ranked(order: Order, nodes: Iterable[NodeInfo]) -> Ranked:
    return tuple(sorted((order.rank(n), order.site(n)) for n in nodes))


def in_cohort(rank: int, site: str, t: int, pinned: Iterable[str]) -> bool:
    return rank < t or site in pinned


def cohort_size(nodes: Ranked, t: int, pinned: frozenset[str]) -> int:
    return sum(1 for r, s in nodes if in_cohort(r, s, t, pinned))


def site_order(nodes: Ranked) -> list[str]:
    """The sites of these nodes in rollout order (hashed key, then name; "" last)."""
    return sorted({s for _, s in nodes}, key=lambda s: (site_key(s), s))


def step_threshold(step: Step, nodes: Ranked, pinned: frozenset[str], end: int) -> int:
    """The rank threshold a step wants, its pinned sites aside (they are in the cohort anyway).

    `percent`: at least P% of the class's nodes (at least one), pinned sites first, then by rank.
    `sites`/`sitesPercent`: the pinned sites, then whole sites in order until the count is reached.
    """
    rest = [r for r, s in nodes if s not in pinned]
    if step.percent is not None:
        if step.percent >= 100:
            return end
        wanted = max(1, math.ceil(len(nodes) * step.percent / 100)) - (len(nodes) - len(rest))
        return rest[min(wanted, len(rest)) - 1] + 1 if wanted > 0 and rest else 0
    sites = site_order(nodes)
    count = step.sites if step.sites is not None else max(1, math.ceil(len(sites) * (step.sites_percent or 0) / 100))
    others = [s for s in sites if s not in pinned]
    wanted = count - (len(sites) - len(others))
    if wanted <= 0 or not others:
        return 0
    last = others[min(wanted, len(others)) - 1]
    return min(end, (site_key(last) + 1) * BUCKETS)


def pinned_through(steps: Sequence[Step], index: int) -> frozenset[str]:
    """The canary sites of every step up to and including `index`: once pinned, a site stays."""
    return frozenset(s for step in steps[:index + 1] for s in step.canary_sites or ())
