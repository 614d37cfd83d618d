"""Per-site judging of a class's canary (pure): which pods are compared with which, and the class's verdict.

Within a step each site's canary pods are judged against the stable pods of the same class at the same
site when that site has at least `MIN_SITE_STABLE_PODS` of them (core/rollout/sites.py). The sites with
fewer are judged together, against the class's stable pods at those sites and every site without a
baseline of its own: every pod is measured once per interval (providers turn two readings of a pod into
its traffic, so reading one pod for two sites would leave the second with no traffic to judge). A site
that fails fails the class's step; the class passes only when every group passed.

At most `MAX_LOCAL_SITES` sites (in rollout order) get a baseline of their own, so the number of pods
read per interval stays bounded by `analysis.samplePods` times that, not by the fleet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from edgewise.api.rollout_status import Outcome, SiteVerdict
from edgewise.core.analysis import Verdict
from edgewise.core.rollout.sites import MIN_SITE_STABLE_PODS, site_key

T = TypeVar("T")
MAX_LOCAL_SITES = 16
MAX_SITE_VERDICTS = 64


@dataclass(frozen=True)
class SiteGroup(Generic[T]):
    """Canary pods of one or more sites and the stable pods they are compared with."""

    sites: tuple[str, ...]
    baseline: Literal["site", "fleet"]
    canary: tuple[T, ...]
    stable: tuple[T, ...]


def group_by_site(canary: Sequence[T], stable: Sequence[T], site_of: Callable[[T], str],
                  min_stable: int = MIN_SITE_STABLE_PODS, max_local: int = MAX_LOCAL_SITES) -> list[SiteGroup[T]]:
    """The groups to measure: one per site with a baseline of its own, one for the rest (if it has canary pods)."""
    canary_sites = sorted({site_of(p) for p in canary}, key=lambda s: (site_key(s), s))
    local = [s for s in canary_sites if sum(1 for p in stable if site_of(p) == s) >= min_stable][:max_local]
    groups = [SiteGroup((s,), "site", tuple(p for p in canary if site_of(p) == s),
                        tuple(p for p in stable if site_of(p) == s)) for s in local]
    rest = [s for s in canary_sites if s not in local]
    if rest:
        groups.append(SiteGroup(tuple(rest), "fleet", tuple(p for p in canary if site_of(p) in rest),
                                tuple(p for p in stable if site_of(p) not in local)))
    return groups


def combine(judged: Sequence[tuple[SiteGroup[T], Verdict]]) -> tuple[Verdict, list[SiteVerdict]]:
    """The class's verdict from its groups' verdicts, and each site's verdict for the status.

    Fail if any site failed, else inconclusive if any site was, else pass (no group: inconclusive).
    """
    sites: list[SiteVerdict] = []
    reasons: list[str] = []
    outcomes = [v.outcome for _, v in judged]
    for group, verdict in judged:
        label = "site " + ", ".join(s or '""' for s in group.sites)
        message = verdict.summary()[:1024]
        sites += [SiteVerdict(site=s, outcome=verdict.outcome, baseline=group.baseline,
                              message="" if verdict.outcome is Outcome.PASS else message) for s in group.sites]
        if verdict.outcome is not Outcome.PASS:
            reasons += [f"{label} ({group.baseline} baseline) {verdict.outcome.value}: {r}" for r in verdict.reasons]
    # The status keeps at most MAX_SITE_VERDICTS, failures first (a step over many sites stays a small object).
    rank = {Outcome.FAIL: 0, Outcome.INCONCLUSIVE: 1, Outcome.PASS: 2}
    sites = sorted(sites, key=lambda v: (rank[v.outcome], site_key(v.site), v.site))[:MAX_SITE_VERDICTS]
    if not judged:
        return Verdict(Outcome.INCONCLUSIVE, ("no canary pod at any site yet",)), sites
    if Outcome.FAIL in outcomes:
        outcome = Outcome.FAIL
        reasons = [r for r in reasons if f") {Outcome.FAIL.value}: " in r]  # what failed, not what still waits
    elif Outcome.INCONCLUSIVE in outcomes:
        outcome = Outcome.INCONCLUSIVE
    else:
        outcome = Outcome.PASS
    checks = tuple(c for _, v in judged for c in v.checks)
    if outcome is Outcome.PASS:
        return Verdict(outcome, (), checks), sites
    return Verdict(outcome, tuple(reasons), checks), sites
