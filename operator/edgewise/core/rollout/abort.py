"""spec.rollout.abort and nodeTimeout: what each canary node did, and the fleet-wide abort rule (pure).

Per class, from the observed runtime pods and nodes: the nodes of the canary cohort that *tried* the
new version (a canary pod was scheduled there, or the node timed out) and those that *failed* it:

- failed pod: its canary pod's phase is Failed;
- crash-looped: its canary pod restarted more than analysis.maxRestarts times;
- timed out: spec.rollout.nodeTimeout passed since the step that asked the node to take the new
  version (`ClassRollout.cohorts`), and the node is NotReady or its canary pod is not Ready;
- failed analysis: the class's canary failed analysis beyond failureLimit (analysis judges a class,
  not a node, so every node of the class that tried and did not fail otherwise counts).

A node counts once, in the first of these that applies. The counts of a revision are kept in the
class's status (`ClassRollout.tally`) and never go down while it rolls out: a node that failed stays
failed when its pod is replaced, and a class rolled back by its own analysis still counts for the
fleet. The rule adds the tallies of every class for the spec's version and fires once at least
`minNodes` nodes tried and more than `maxFailedPercent` of them failed. Everything it needs is in
status, so an operator restart changes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgewise.api.model import AbortRule, Rollout
from edgewise.api.rollout_status import ClassRollout, CohortStart, NodeTally
from edgewise.core.durations import parse_time, seconds
from edgewise.core.observed import NodeInfo, RuntimePod
from edgewise.core.rollout.sites import in_cohort, order_from


@dataclass(frozen=True)
class NodeFacts:
    """What the canary nodes of one class did, as observed in this reconcile."""

    tried: int = 0
    failed_pods: int = 0
    crash_looped: int = 0
    timed_out: int = 0
    timed_out_ready: int = 0  # timed out on a Ready node (its pod never got Ready): the step stops waiting
    next_timeout_in: float | None = None  # seconds until the next canary node would time out


def asked_at(cohorts: Sequence[CohortStart] | None, bucket: int) -> dt.datetime | None:
    """When the step that moved a node of this bucket onto the canary began."""
    for c in cohorts or []:
        if bucket < c.below_bucket:
            return parse_time(c.since)
    return None


def node_facts(spec: Rollout, state: ClassRollout, members: Sequence[NodeInfo], canary_pods: Sequence[RuntimePod],
               now: dt.datetime) -> NodeFacts:
    """Tried, failed and timed-out nodes of the class's canary cohort. `canary_pods`: the pods of the
    class's canary slot with the canary revision (terminating ones too: a Failed pod being replaced failed)."""
    if not state.canary_revision:
        return NodeFacts()
    by_node: dict[str, list[RuntimePod]] = {}
    for p in canary_pods:
        if p.node:
            by_node.setdefault(p.node, []).append(p)
    limit = seconds(spec.node_timeout) if spec.node_timeout else None
    tried = failed = crashed = timed_out = timed_out_ready = 0
    upcoming: list[float] = []
    # The order the cohort was placed in: by bucket, or site by site (rank, and pinned canary sites).
    order, pinned = order_from(state.order_label, state.site_label), state.canary_sites or ()
    for node in members:
        bucket = order.rank(node)
        if not in_cohort(bucket, order.site(node), state.bucket_threshold, pinned):
            continue
        pods = by_node.get(node.name, [])
        if any(p.phase == "Failed" for p in pods):
            failed += 1
        elif any(p.restarts > spec.analysis.max_restarts for p in pods):
            crashed += 1
        elif limit is not None and (not node.ready or not any(p.ready and not p.terminating for p in pods)):
            asked = asked_at(state.cohorts, bucket)
            waited = (now - asked).total_seconds() if asked else 0.0
            if waited >= limit:
                timed_out += 1
                timed_out_ready += node.ready
                tried += 1
                continue
            upcoming.append(limit - waited)
        tried += bool(pods)
    return NodeFacts(tried=tried, failed_pods=failed, crash_looped=crashed, timed_out=timed_out,
                     timed_out_ready=timed_out_ready, next_timeout_in=min(upcoming) if upcoming else None)


def merge(old: NodeTally | None, state: ClassRollout, facts: NodeFacts, analysis_failed: bool) -> NodeTally:
    """The class's tally for its canary revision: never lower than before, whatever pods come and go."""
    assert state.canary_revision and state.canary_version
    base = old if old is not None and old.revision == state.canary_revision \
        else NodeTally(version=state.canary_version, revision=state.canary_revision)
    tally = base.model_copy(update={
        "tried": max(base.tried, facts.tried), "failed_pods": max(base.failed_pods, facts.failed_pods),
        "crash_looped": max(base.crash_looped, facts.crash_looped), "timed_out": max(base.timed_out, facts.timed_out)})
    if analysis_failed:
        others = tally.failed_pods + tally.crash_looped + tally.timed_out
        tally = tally.model_copy(update={"failed_analysis": max(tally.failed_analysis, tally.tried - others, 0)})
    return tally


@dataclass(frozen=True)
class Verdict:
    fired: bool
    tried: int
    failed: int
    message: str


def judge(rule: AbortRule, version: str, tallies: Mapping[str, NodeTally]) -> Verdict:
    """The fleet-wide rule over every class's tally of `version`."""
    mine = {name: t for name, t in sorted(tallies.items()) if t.version == version}
    tried = sum(t.tried for t in mine.values())
    failed = sum(t.failed for t in mine.values())
    percent = 100.0 * failed / tried if tried else 0.0
    fired = tried >= rule.min_nodes and percent > rule.max_failed_percent
    compare = ">" if fired else "<="
    detail = "; ".join(f"{name} {_kinds(t)}" for name, t in mine.items() if t.failed)
    message = (f"abort: {failed} of {tried} nodes that tried {version} failed ({_num(percent)}% {compare} "
               f"maxFailedPercent {_num(rule.max_failed_percent)}, minNodes {rule.min_nodes})"
               + (f": {detail}" if detail else ""))
    return Verdict(fired=fired, tried=tried, failed=failed, message=message)


def _kinds(t: NodeTally) -> str:
    kinds = ((t.failed_pods, "failed"), (t.crash_looped, "crash-looped"), (t.failed_analysis, "failed analysis"),
             (t.timed_out, "timed out"))
    return ", ".join(f"{n} {what}" for n, what in kinds if n)


def _num(x: float) -> str:
    return f"{x:.1f}".removesuffix(".0")
