"""Rollouts of one EdgeModel: every class's state machine, the class policy, commands and history.

Pure: the shell measures the classes whose analysis is due (see `due_analyses`)
and passes the verdicts in; this module decides the rest and returns the new
rollout status, the placement of workloads, Events and what to stage.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from edgewise.api.commands import Command
from edgewise.api.resources import EdgeModel
from edgewise.api.rollout_status import HISTORY_LIMIT, AnalysisRecord, ClassRollout, RevisionRecord, RolloutStatus
from edgewise.core import names
from edgewise.core.buckets import BUCKETS, bucket_of
from edgewise.core.durations import seconds
from edgewise.core.events import Event
from edgewise.core.observed import NodeInfo, Workload
from edgewise.core.placement import Placement, place, revision, target_bounds
from edgewise.core.plan import ClassPlan, ModelPlan
from edgewise.core.rollout import ClassObservation, Decision, analysis_due, iso, roll_back_all, step
from edgewise.core.switch import MAKE_BEFORE_BREAK, Bounds, Mode, choose_mode, decide, live_bounds, settled


@dataclass(frozen=True)
class StageRequest:
    """Nodes whose agents should prefetch a class's canary artifact before the step moves them."""

    class_name: str
    uri: str
    sha256: str
    nodes: tuple[NodeInfo, ...]


@dataclass(frozen=True)
class ModelRollout:
    status: RolloutStatus
    placement: Placement
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None
    stage: tuple[StageRequest, ...] = field(default=())


def class_nodes(plan: ClassPlan, nodes: Mapping[str, NodeInfo]) -> list[NodeInfo]:
    """The nodes a class's pods may run on (matched, tolerated and not rejected by the runtime)."""
    rejected = set(plan.rejected)
    return [nodes[n] for n in plan.nodes if n in nodes and n not in rejected]


def due_analyses(model: EdgeModel, plan: ModelPlan, now: dt.datetime) -> list[str]:
    """Classes whose canary should be measured now."""
    if model.spec.rollout.analysis.provider == "none":
        return []
    old = model.status.rollout
    states = {c.name: c for c in (old.classes if old and old.classes else [])}
    return [c.name for c in plan.classes
            if c.name in states and analysis_due(model.spec.rollout, states[c.name], now)]


def advance(model: EdgeModel, plan: ModelPlan, nodes: Sequence[NodeInfo], existing: Sequence[Workload],
            now: dt.datetime, verdicts: Mapping[str, AnalysisRecord] | None = None,
            command: Command | None = None, hold: frozenset[str] = frozenset(),
            gpu_resource: str = "nvidia.com/gpu", peak_memory_mib: Mapping[str, float] | None = None
            ) -> ModelRollout:
    """Advance every class. Classes in `hold` have no artifact for the spec yet (being optimized, or
    refused): they keep what they run — a new revision starts only once its artifact exists.

    `peak_memory_mib` (per class, from the optimization report) helps choose the switch mode."""
    spec = model.spec.rollout
    old = model.status.rollout or RolloutStatus()
    states = {c.name: c for c in old.classes or []}
    by_node = {n.name: n for n in nodes}
    fresh = command is not None and command.id != old.last_command
    verdicts = verdicts or {}

    def verb(class_name: str) -> str | None:
        return command.verb if fresh and command and command.applies_to(class_name) else None

    members = {cp.name: class_nodes(cp, by_node) for cp in plan.classes}
    hardware = {hc.name: hc for hc in plan.profile.spec.classes} if plan.profile else {}
    modes = {cp.name: choose_mode(spec.switch, hardware[cp.name], gpu_resource, members[cp.name],
                                  (peak_memory_mib or {}).get(cp.name))
             for cp in plan.classes if cp.name in hardware}
    decisions: dict[str, Decision] = {}
    observations: dict[str, ClassObservation] = {}
    for cp in plan.classes:
        if cp.error:
            continue  # its workloads are kept as they are; nothing moves
        state = states.get(cp.name)
        obs = _observe(model, cp, members[cp.name], existing, state)
        if cp.name in modes and state is not None and state.stable_revision:
            obs = replace(obs, **_switch_observation(modes[cp.name], cp, existing, members[cp.name], state))
        if cp.name in hold:
            if state is None or state.stable_revision is None:
                continue  # nothing deployed yet: wait for the artifact
            obs = replace(obs, desired_revision=state.canary_revision or state.stable_revision,
                          desired_version=state.canary_version or state.stable_version or "")
        observations[cp.name] = obs
        if state and state.stable_revision and state.stable_revision != obs.desired_revision \
                and not _has_slot(model, cp, existing, state.stable_slot) \
                and not _promoting(model, cp, existing, state, obs.desired_revision):
            state = None  # the stable workload is gone: nothing to protect, start from the spec
        decisions[cp.name] = step(spec, state, obs, now, verdicts.get(cp.name), verb(cp.name))

    if spec.class_policy == "AllOrNothing":
        # A class promotes only when every class with a canary has passed every step.
        waiting = [n for n, d in decisions.items() if d.state.canary_revision or d.failed]
        if waiting:
            for name, d in list(decisions.items()):
                if d.finished == "Succeeded" and name in observations:
                    obs = replace(observations[name], hold_promotion=True)
                    decisions[name] = step(spec, states.get(name), obs, now, verdicts.get(name), verb(name))
        failed = next((n for n, d in decisions.items() if d.failed), None)
        if failed:
            current = {n: d.state for n, d in decisions.items()}
            for name, d in roll_back_all(spec, current, failed, observations).items():
                decisions[name] = Decision(state=d.state, events=decisions[name].events + d.events,
                                           finished=d.finished)

    new_states = {**states, **{n: d.state for n, d in decisions.items()}}
    bounds: dict[str, Bounds] = {}
    for name in decisions:
        mode, st = modes.get(name), new_states[name]
        if mode is None:
            continue
        new_states[name] = st.model_copy(update={"switch": mode.name, "switch_reason": mode.reason[:1024]})
        if st.stable_revision:
            cp = next(c for c in plan.classes if c.name == name)
            live, canary_ok, stable_ok = _slots(cp, existing, members[name], st.stable_slot)
            bounds[name] = decide(mode.name, target_bounds(st), live, canary_ok, stable_ok)
    classes = [new_states[c.name] for c in plan.classes if c.name in new_states]
    no_artifact = frozenset(c.name for c in plan.classes if c.name in hold and c.name not in decisions)
    placement = place(model.metadata.name, plan.classes, new_states, existing, skip=no_artifact, bounds=bounds)
    events = [e for d in decisions.values() for e in d.events]
    history = _history(model, old, decisions, classes, now)
    status = RolloutStatus(
        revision=history[-1].revision if history else 0,
        classes=classes or None,
        history=history or None,
        last_command=command.id if fresh and command else old.last_command,
    )
    requeues = [d.requeue_after for d in decisions.values() if d.requeue_after is not None]
    if any(c.canary_revision and c.percent > 0 for c in classes) and spec.analysis.provider != "none":
        requeues.append(seconds(spec.analysis.interval))
    stage = tuple(_stage(cp, decisions[cp.name], members[cp.name]) for cp in plan.classes
                  if cp.name in decisions and decisions[cp.name].stage)
    return ModelRollout(status=status, placement=placement, events=tuple(events),
                        requeue_after=min(requeues) if requeues else None,
                        stage=tuple(s for s in stage if s.nodes))


def _observe(model: EdgeModel, cp: ClassPlan, members: list[NodeInfo], existing: Sequence[Workload],
             state: ClassRollout | None) -> ClassObservation:
    buckets = tuple(sorted(bucket_of(n.name) for n in members))
    canary_slot = None
    if state and state.canary_revision:
        canary_slot = names.other_slot(state.stable_slot)
    canary = [w for w in existing if w.labels.get(names.CLASS_LABEL) == cp.name
              and w.labels.get(names.SLOT_LABEL) == canary_slot]
    threshold = state.bucket_threshold if state else 0
    not_ready = sum(1 for n in members if bucket_of(n.name) < threshold and not n.ready) if canary_slot else 0
    return ClassObservation(
        name=cp.name, desired_revision=revision(cp), desired_version=model.spec.version, buckets=buckets,
        canary_ready=sum(w.ready for w in canary), not_ready_canary_nodes=not_ready,
        analysis_enabled=model.spec.rollout.analysis.provider != "none")


def _slots(cp: ClassPlan, existing: Sequence[Workload], members: Sequence[NodeInfo], stable_slot: str
           ) -> tuple[Bounds, bool, bool]:
    """Where the class's two slots are now, and whether each has Ready pods on every node it covers."""
    mine = [w for w in existing if w.labels.get(names.CLASS_LABEL) == cp.name]
    stable = [w for w in mine if w.labels.get(names.SLOT_LABEL) == stable_slot]
    canary = [w for w in mine if w.labels.get(names.SLOT_LABEL) == names.other_slot(stable_slot)]
    live = live_bounds(canary, stable)
    return (live, settled(canary, 0, live.canary, members), settled(stable, live.stable, BUCKETS, members))


def _switch_observation(mode: Mode, cp: ClassPlan, existing: Sequence[Workload], members: Sequence[NodeInfo],
                        state: ClassRollout) -> dict[str, object]:
    """Is a make-before-break switch of this class still under way, and what does it wait for?"""
    if mode.name != MAKE_BEFORE_BREAK:
        return {}
    live, _, _ = _slots(cp, existing, members, state.stable_slot)
    target = target_bounds(state)
    if live == target:
        return {"make_before_break": True}
    canary_slot = names.other_slot(state.stable_slot)
    # Nodes in both ranges run two pods, nodes in neither none yet: those are the ones switching.
    lo, hi = sorted((live.stable, live.canary))
    moving = sum(1 for n in members if lo <= bucket_of(n.name) < hi)
    gaining = canary_slot if live.stable < target.stable else state.stable_slot
    return {"make_before_break": True, "switch_pending": True,
            "switching": f"{moving} node(s) switching make-before-break: waiting for slot {gaining}'s pods "
                         "there to be Ready before the old ones leave"}


def _has_slot(model: EdgeModel, cp: ClassPlan, existing: Sequence[Workload], slot: str) -> bool:
    wanted = {names.workload_name(model.metadata.name, cp.name, slot, w.variant) for w in cp.workloads}
    live = {w.name for w in existing if w.template is not None}
    return bool(wanted) and wanted <= live


def _promoting(model: EdgeModel, cp: ClassPlan, existing: Sequence[Workload], state: ClassRollout,
               desired_revision: str) -> bool:
    """The old stable workloads are gone because a promotion deleted them, and the operator stopped before
    its status said so: the canary slot holds the desired revision, and the promotion is to be finished."""
    return state.canary_revision == desired_revision and \
        _has_slot(model, cp, existing, names.other_slot(state.stable_slot))


def _stage(cp: ClassPlan, d: Decision, members: list[NodeInfo]) -> StageRequest:
    lo, hi = d.stage or (0, 0)
    moving = tuple(n for n in members if lo <= bucket_of(n.name) < hi)
    return StageRequest(class_name=cp.name, uri=cp.artifact.uri, sha256=cp.artifact.sha256, nodes=moving)


def _history(model: EdgeModel, old: RolloutStatus, decisions: Mapping[str, Decision],
             classes: list[ClassRollout], now: dt.datetime) -> list[RevisionRecord]:
    history = list(old.history or [])
    spec = model.spec
    digest = spec.source.digest()
    last = history[-1] if history else None
    if last is None or (last.version, last.source_sha256, last.source_uri) != (spec.version, digest,
                                                                                   spec.source.uri):
        if last is not None and last.outcome == "Progressing":
            history[-1] = last.model_copy(update={"outcome": "Superseded", "finished_at": iso(now)})
        history.append(RevisionRecord(revision=(last.revision + 1) if last else 1, version=spec.version,
                                      source_uri=spec.source.uri, source_sha256=digest, outcome="Progressing",
                                      started_at=iso(now)))
    current = history[-1]
    if current.outcome == "Progressing" and not any(c.canary_revision for c in classes):
        finished = {d.finished for d in decisions.values() if d.finished}
        rolled_back = [c for c in classes if c.state == "RolledBack"]
        if "Aborted" in finished:
            outcome, reason = "Aborted", "aborted by a user"
        elif rolled_back:
            outcome, reason = "RolledBack", "; ".join(f"{c.name}: {c.message}" for c in rolled_back)
        else:
            outcome, reason = "Succeeded", "every class runs this version"
        history[-1] = current.model_copy(update={"outcome": outcome, "finished_at": iso(now),
                                                 "reason": reason[:4096]})
    return history[-HISTORY_LIMIT:]
