"""The rollout of one EdgeModel: every class's state machine, the class policy, commands, placement.

`advance` is the rollout's one entry point. The shell measures the classes whose analysis is due
(`due_analyses`) and passes the records in; `advance` decides the rest and returns the final
workloads to apply, the owned workloads to delete, the rollout status, Events, what to stage and
when to look again. Nothing downstream rewrites its output.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from edgewise.api.commands import Command, parse
from edgewise.api.resources import EdgeModel
from edgewise.api.rollout_status import AbortRecord, AnalysisRecord, ClassRollout, RolloutStatus
from edgewise.api.settings import Bandwidth
from edgewise.core import names
from edgewise.core.durations import iso, seconds
from edgewise.core.events import Event
from edgewise.core.observed import NodeInfo, RuntimePod, Workload
from edgewise.core.plan import ClassPlan, ModelPlan, WorkloadPlan
from edgewise.core.rollout import abort
from edgewise.core.rollout.buckets import bucket_of
from edgewise.core.rollout.class_machine import (
    ClassObservation,
    Decision,
    analysis_due,
    next_class_state,
    roll_back_all,
)
from edgewise.core.rollout.history import revision_history
from edgewise.core.rollout.observe import class_nodes, observe, placed_order, slots, stable_missing, switch_observation
from edgewise.core.rollout.placement import deletions, place, target_bounds
from edgewise.core.rollout.site_progress import site_progress
from edgewise.core.rollout.sites import Order, in_cohort, order_for
from edgewise.core.rollout.switch import Bounds, Mode, choose_mode, decide
from edgewise.core.rollout.windows import node_zone
from edgewise.core.staging import SiteStage, estimate, site_stages, summary


@dataclass(frozen=True)
class Observed:
    """What the shell read for this reconcile, besides the model and its plan."""

    nodes: Sequence[NodeInfo]
    workloads: Sequence[Workload]  # the model's live DaemonSets
    # Classes with no artifact for the spec yet (being optimized, or refused): they keep what they run,
    # and a new revision starts only once its artifact exists.
    waiting_for_artifact: frozenset[str] = frozenset()
    peak_memory_mib: Mapping[str, float] = field(default_factory=dict)  # per class, from the optimization report
    gpu_resource: str = "nvidia.com/gpu"  # the operator's GPU resource name, to choose a switch mode
    # The model's runtime pods, for spec.rollout.abort and nodeTimeout (None: not read; the shell reads them
    # only when one of those is set and a class has a canary, see `needs_pods`).
    pods: Sequence[RuntimePod] | None = None
    bandwidth: Bandwidth = field(default_factory=Bandwidth)  # download budgets per site (operator settings)
    artifact_bytes: Mapping[str, int] = field(default_factory=dict)  # per class, its artifact's size if known
    agent_selector: Mapping[str, str] = field(default_factory=dict)  # nodes the agent DaemonSet runs on


@dataclass(frozen=True)
class StageRequest:
    """Nodes whose agents should prefetch a class's canary artifact before the step moves them."""

    class_name: str
    uri: str
    sha256: str
    nodes: tuple[NodeInfo, ...]
    # Per site: the node that downloads from the source (staged first, possibly not one of `nodes`)
    # and the moving nodes that fetch from it. Empty: every node downloads on its own.
    sites: tuple[SiteStage, ...] = ()
    # The EdgeModel's pinned source digest: agents with trusted keys check the artifact's attestation names it.
    source_sha256: str = ""


@dataclass(frozen=True)
class RolloutResult:
    apply: tuple[WorkloadPlan, ...]  # every workload as it must be, final
    delete: tuple[str, ...]  # owned workloads to delete
    plan: ModelPlan  # the plan with each class's workloads as placed (what status compares with)
    status: RolloutStatus | None  # None: no profile, the rollout status stays as it is
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None
    stage: tuple[StageRequest, ...] = ()


def due_analyses(model: EdgeModel, plan: ModelPlan, now: dt.datetime) -> list[str]:
    """Classes whose canary should be measured now."""
    if model.spec.rollout.analysis.provider == "none" or plan.profile is None:
        return []
    old = model.status.rollout
    states = {c.name: c for c in (old.classes if old and old.classes else [])}
    return [c.name for c in plan.classes
            if c.name in states and analysis_due(model.spec.rollout, states[c.name], now)]


def needs_pods(model: EdgeModel) -> bool:
    """Does `advance` need the runtime pods (Observed.pods) to judge per-node facts this time?"""
    spec = model.spec.rollout
    old = model.status.rollout
    return (spec.abort is not None or spec.node_timeout is not None) and \
        any(c.canary_revision for c in (old.classes if old and old.classes else []))


def advance(model: EdgeModel, plan: ModelPlan, observed: Observed,
            measurements: Mapping[str, AnalysisRecord] | None, now: dt.datetime) -> RolloutResult:
    """One reconcile of the model's rollout. Without a profile nothing is applied or deleted."""
    if plan.profile is None:
        return RolloutResult(apply=(), delete=(), plan=plan, status=None)
    old = model.status.rollout or RolloutStatus()
    command = parse(model.metadata.annotations)
    fresh = command if command is not None and command.id != old.last_command else None
    by_name = {n.name: n for n in observed.nodes}
    members = {cp.name: class_nodes(cp, by_name) for cp in plan.classes}
    modes = _switch_modes(model, plan, observed, members)
    old_states = {c.name: c for c in old.classes or []}
    facts = {name: _node_facts(model, observed, members[name], state, now)
             for name, state in old_states.items() if name in members}
    order = order_for(model.spec.rollout, plan.profile.spec.site_label)
    decisions, observations = _decide_classes(model, plan, observed, members, modes, measurements or {}, fresh, now,
                                              {n: f.timed_out_ready for n, f in facts.items()}, order)
    if model.spec.rollout.class_policy == "AllOrNothing":
        _all_or_nothing(model, old, decisions, observations, measurements or {}, fresh, now)
    aborted = None
    if model.spec.rollout.abort is not None:
        _tally(model, old_states, decisions, observed, members, now)
        aborted = _fleet_abort(model, old, decisions, observations, fresh, now)

    states = {**{c.name: c for c in old.classes or []}, **{n: d.state for n, d in decisions.items()}}
    bounds: dict[str, Bounds] = {}
    for name, mode in modes.items():
        if name not in decisions:
            continue
        state = states[name] = states[name].model_copy(update={
            "switch": mode.name, "switch_reason": mode.reason[:1024],
            "sites": site_progress(states[name], members[name]) or None})
        if state.stable_revision:
            cp = next(c for c in plan.classes if c.name == name)
            live, canary_ok, stable_ok = slots(cp, observed.workloads, members[name], state.stable_slot,
                                               placed_order(state))
            bounds[name] = decide(mode.name, target_bounds(state), live, canary_ok, stable_ok)
    for name in decisions:
        states[name] = _with_staging(states[name], members[name], observed, name)
    classes = [states[c.name] for c in plan.classes if c.name in states]
    not_deployed = frozenset(c.name for c in plan.classes
                             if c.name in observed.waiting_for_artifact and c.name not in decisions)
    placed = place(model.metadata.name, plan.classes, states, observed.workloads, skip=not_deployed, bounds=bounds)
    history = revision_history(model, old, decisions, classes, now, aborted)
    status = RolloutStatus(revision=history[-1].revision if history else 0, classes=classes or None,
                           history=history or None, last_command=fresh.id if fresh else old.last_command,
                           aborted=aborted)
    timeouts = [f.next_timeout_in for f in facts.values() if f.next_timeout_in is not None]
    stage = (_stage(cp, decisions[cp.name], states[cp.name], members[cp.name], observed, order,
                    model.spec.source.digest())
             for cp in plan.classes if cp.name in decisions and decisions[cp.name].stage)
    return RolloutResult(
        apply=placed,
        delete=deletions(plan.classes, observed.workloads, placed, skip=not_deployed),
        plan=replace(plan, classes=tuple(replace(c, workloads=tuple(w for w in placed if w.class_name == c.name))
                                         for c in plan.classes)),
        status=status,
        events=tuple(e for d in decisions.values() for e in d.events),
        requeue_after=min((r for r in (_requeue_after(model, decisions, classes), *timeouts) if r is not None),
                          default=None),
        stage=tuple(s for s in stage if s.nodes),
    )


def _switch_modes(model: EdgeModel, plan: ModelPlan, observed: Observed, members: Mapping[str, list[NodeInfo]]
                  ) -> dict[str, Mode]:
    """How each class's nodes change version (spec.rollout.switch, resolved per class)."""
    assert plan.profile is not None
    hardware = {hc.name: hc for hc in plan.profile.spec.classes}
    return {cp.name: choose_mode(model.spec.rollout.switch, hardware[cp.name], observed.gpu_resource,
                                 members[cp.name], observed.peak_memory_mib.get(cp.name))
            for cp in plan.classes if cp.name in hardware}


def _decide_classes(model: EdgeModel, plan: ModelPlan, observed: Observed, members: Mapping[str, list[NodeInfo]],
                    modes: Mapping[str, Mode], measurements: Mapping[str, AnalysisRecord],
                    command: Command | None, now: dt.datetime, timed_out: Mapping[str, int], order: Order
                    ) -> tuple[dict[str, Decision], dict[str, ClassObservation]]:
    """Each class's next state, on its own (the class policy comes after)."""
    old = model.status.rollout or RolloutStatus()
    states = {c.name: c for c in old.classes or []}
    decisions: dict[str, Decision] = {}
    observations: dict[str, ClassObservation] = {}
    for cp in plan.classes:
        if cp.error:
            continue  # its workloads are kept as they are; nothing moves
        state = states.get(cp.name)
        obs = _observation(model, cp, observed, members[cp.name], modes.get(cp.name), state, order)
        if obs is None:
            continue  # nothing deployed yet: wait for the artifact
        obs = replace(obs, timed_out_canary_nodes=timed_out.get(cp.name, 0))
        observations[cp.name] = obs
        if state is not None and stable_missing(model, cp, observed.workloads, state, obs.desired_revision):
            state = None  # the stable workload is gone: nothing to protect, start from the spec
        decisions[cp.name] = next_class_state(model.spec.rollout, state, obs, now, measurements.get(cp.name),
                                              _verb(command, cp.name))
    return decisions, observations


def _observation(model: EdgeModel, cp: ClassPlan, observed: Observed, members: list[NodeInfo],
                 mode: Mode | None, state: ClassRollout | None, order: Order) -> ClassObservation | None:
    obs = replace(observe(model, cp, members, observed.workloads, state, order),
                  rolled_back_version=_rolled_back_version(model.status.rollout),
                  # keyed as the step thresholds are: by rank in a site order, else by bucket (windows gate on it)
                  zones=tuple((order.rank(n) if order.by_site else bucket_of(n.name), node_zone(n)) for n in members),
                  site_zones=tuple((order.site(n), node_zone(n)) for n in members) if order.by_site else ())
    if mode is not None and state is not None and state.stable_revision:
        obs = replace(obs, **switch_observation(mode, cp, observed.workloads, members, state))  # type: ignore[arg-type]
    if cp.name in observed.waiting_for_artifact:
        if state is None or state.stable_revision is None:
            return None
        # No artifact for the spec yet: the class wants what it already runs.
        obs = replace(obs, desired_revision=state.canary_revision or state.stable_revision,
                      desired_version=state.canary_version or state.stable_version or "", artifact_pending=True)
    return obs


def _rolled_back_version(old: RolloutStatus | None) -> str:
    """The version of the newest revision that was rolled back or aborted, "" if none is in the history."""
    ended = [h for h in (old.history if old and old.history else []) if h.outcome in ("RolledBack", "Aborted")]
    return ended[-1].version if ended else ""


def _all_or_nothing(model: EdgeModel, old: RolloutStatus, decisions: dict[str, Decision],
                    observations: Mapping[str, ClassObservation], measurements: Mapping[str, AnalysisRecord],
                    command: Command | None, now: dt.datetime) -> None:
    """classPolicy AllOrNothing: a class promotes only when every class with a canary has passed every
    step (a class whose canary waits for the previous one to drain has not started yet), and one class
    failing rolls every other class's canary back."""
    spec = model.spec.rollout
    states = {c.name: c for c in old.classes or []}
    if any(d.state.canary_revision or d.failed or d.waiting_to_start for d in decisions.values()):
        for name, d in list(decisions.items()):
            if d.finished == "Succeeded" and name in observations:
                held = replace(observations[name], hold_promotion=True)
                decisions[name] = next_class_state(spec, states.get(name), held, now, measurements.get(name),
                                                   _verb(command, name))
    failed = next((n for n, d in decisions.items() if d.failed), None)
    if failed:
        current = {n: d.state for n, d in decisions.items()}
        waiting = frozenset(n for n, d in decisions.items() if d.waiting_to_start)
        for name, d in roll_back_all(spec, current, failed, observations, waiting).items():
            decisions[name] = Decision(state=d.state, events=decisions[name].events + d.events, finished=d.finished)


def _node_facts(model: EdgeModel, observed: Observed, members: Sequence[NodeInfo], state: ClassRollout | None,
                now: dt.datetime) -> abort.NodeFacts:
    """What the class's canary nodes did: its canary slot's pods of the canary revision, node by node."""
    if state is None or not state.canary_revision or observed.pods is None:
        return abort.NodeFacts()
    slot = names.other_slot(state.stable_slot)
    uids = {w.uid for w in observed.workloads
            if w.labels.get(names.CLASS_LABEL) == state.name and w.labels.get(names.SLOT_LABEL) == slot}
    pods = [p for p in observed.pods if p.owner_uid in uids and p.revision == state.canary_revision]
    return abort.node_facts(model.spec.rollout, state, members, pods, now)


def _tally(model: EdgeModel, old_states: Mapping[str, ClassRollout], decisions: dict[str, Decision],
           observed: Observed, members: Mapping[str, list[NodeInfo]], now: dt.datetime) -> None:
    """Each class's tally of nodes that tried and failed its canary, kept in its status. A class whose canary
    ended in this reconcile is counted on the state it had (its pods are still there to be seen)."""
    limit = model.spec.rollout.analysis.failure_limit
    for name, d in list(decisions.items()):
        before = old_states.get(name)
        counting = d.state if d.state.canary_revision else before if before and before.canary_revision else None
        if counting is None:
            continue
        facts = _node_facts(model, observed, members.get(name, []), counting, now)
        tally = abort.merge(d.state.tally, counting, facts, d.failed or counting.failures > limit)
        decisions[name] = replace(d, state=d.state.model_copy(update={"tally": tally}))


def _fleet_abort(model: EdgeModel, old: RolloutStatus, decisions: dict[str, Decision],
                 observations: Mapping[str, ClassObservation], command: Command | None, now: dt.datetime
                 ) -> AbortRecord | None:
    """spec.rollout.abort: too many nodes of the fleet failed the spec's version, so every class with a canary
    of it (or about to start one) rolls back, as classPolicy AllOrNothing does. Once fired it stays fired for
    the version (a class that starts it later is rolled back too) until `kubectl edgewise retry`."""
    rule = model.spec.rollout.abort
    assert rule is not None
    version = model.spec.version
    record = old.aborted if old.aborted and old.aborted.version == version else None
    if command is not None and command.verb == "retry":
        record = None
    if record is None:
        # A class decided now has its tally in its new state (a retried class starts a fresh one); a class not
        # decided (its artifact pending) keeps the one it had.
        tallies = {**{c.name: c.tally for c in old.classes or [] if c.tally and c.name not in decisions},
                   **{n: d.state.tally for n, d in decisions.items() if d.state.tally}}
        verdict = abort.judge(rule, version, tallies)
        if not verdict.fired:
            return None
        record = AbortRecord(version=version, at=iso(now), message=verdict.message)
    waiting = frozenset(n for n, d in decisions.items()
                        if d.waiting_to_start and observations[n].desired_version == version)
    targets = {n: d.state for n, d in decisions.items() if d.state.canary_version == version or n in waiting}
    for name, d in roll_back_all(model.spec.rollout, targets, "", observations, waiting,
                                 reason=record.message).items():
        decisions[name] = Decision(state=d.state, events=decisions[name].events + d.events, finished=d.finished)
    return record


def _verb(command: Command | None, class_name: str) -> str | None:
    """The verb of a command not handled yet, for the classes it names."""
    return command.verb if command is not None and command.applies_to(class_name) else None


def _requeue_after(model: EdgeModel, decisions: Mapping[str, Decision], classes: Sequence[ClassRollout]
                   ) -> float | None:
    spec = model.spec.rollout
    requeues = [d.requeue_after for d in decisions.values() if d.requeue_after is not None]
    if any(c.canary_revision and c.percent > 0 for c in classes) and spec.analysis.provider != "none":
        requeues.append(seconds(spec.analysis.interval))
    return min(requeues) if requeues else None


def _stage(cp: ClassPlan, d: Decision, state: ClassRollout, members: list[NodeInfo],
           observed: Observed, order: Order, source_sha256: str) -> StageRequest:
    """The nodes the step stages. `d.stage` and `d.stage_sites` are in the order the spec asks for (`order`):
    a step that waits for its activation window is staged before it is placed, so the state may still
    hold the previous step's placement (or none, before the first step)."""
    lo, hi = d.stage or (0, 0)
    if order.by_site:  # a site order: the nodes the step adds, by rank or at a newly pinned site
        placed = frozenset(state.canary_sites or ()) if placed_order(state) == order else frozenset()
        before, after = placed - d.stage_sites, placed | d.stage_sites
        moving = tuple(n for n in members if in_cohort(order.rank(n), order.site(n), hi, after)
                       and not in_cohort(order.rank(n), order.site(n), lo, before))
    else:
        moving = tuple(n for n in members if lo <= bucket_of(n.name) < hi)
    return StageRequest(class_name=cp.name, uri=cp.artifact.uri, sha256=cp.artifact.sha256, nodes=moving,
                        sites=site_stages(moving, observed.nodes, observed.bandwidth, observed.agent_selector),
                        source_sha256=source_sha256)


def _with_staging(state: ClassRollout, members: list[NodeInfo], observed: Observed, name: str) -> ClassRollout:
    """The class's staging estimate while a canary rolls out (None otherwise: nothing to stage)."""
    if not state.canary_revision:
        update: dict[str, object] = {"staging": None, "staging_seconds": None}
    else:
        sites = estimate(members, observed.artifact_bytes.get(name, 0), observed.bandwidth, observed.nodes,
                         observed.agent_selector)
        update = {"staging": sites or None, "staging_seconds": summary(sites)}
    return state.model_copy(update=update)
