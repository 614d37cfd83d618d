"""Per-site progress of one class's canary, for the status, `kubectl edgewise status` and the metrics (pure)."""

from __future__ import annotations

from collections.abc import Sequence

from edgewise.api.rollout_status import ClassRollout, SiteProgress
from edgewise.core.durations import parse_time
from edgewise.core.observed import NodeInfo
from edgewise.core.rollout.sites import in_cohort, order_from, site_key

SITES_SHOWN = 64  # the status lists at most this many sites, in rollout order (the status object stays small)


def site_progress(state: ClassRollout, members: Sequence[NodeInfo]) -> list[SiteProgress]:
    """One entry per site of the class, in rollout order, while a canary placed by sites is in flight.

    A site's verdict is the one of the class's last analysis, if it was measured in the current step.
    """
    if not state.canary_revision or not state.order_label:
        return []
    order = order_from(state.order_label, state.site_label)
    pinned = frozenset(state.canary_sites or ())
    verdicts = {}
    last = state.last_analysis
    started, measured = parse_time(state.step_started_at), parse_time(state.last_analysis_at)
    if last is not None and last.sites and started is not None and measured is not None and measured >= started:
        verdicts = {v.site: v.outcome for v in last.sites}
    out: dict[str, SiteProgress] = {}
    for n in members:
        site = order.site(n)
        p = out.setdefault(site, SiteProgress(site=site, canary_site=site in pinned, verdict=verdicts.get(site)))
        canary = in_cohort(order.rank(n), site, state.bucket_threshold, pinned)
        out[site] = p.model_copy(update={"nodes": p.nodes + 1, "canary_nodes": p.canary_nodes + canary,
                                          "ready_nodes": p.ready_nodes + n.ready})
    ranked = sorted(out.values(), key=lambda p: (not p.canary_site, site_key(p.site), p.site))
    return ranked[:SITES_SHOWN]
