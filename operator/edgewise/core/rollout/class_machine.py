"""The canary state machine of one hardware class: a pure function of (spec, state, observation).

Each call takes what the operator observed about a class — which revision the
spec wants, how many canary pods are ready, the verdict of an analysis that just
ran, a user's command — and returns the class's next state, the Events a person
should see, and what the imperative shell must do (stage artifacts, requeue).
Nothing here reads a clock or the API: `now` comes in as an argument.

A class moves Stable → Progressing (step by step, analysed against its own
stable nodes) → Stable on the new revision; or → RolledBack, with the failed
revision remembered so it is not retried (a newer spec is) until a user says
`retry`. A spec that then asks for the stable revision again (a revert in Git)
asks for exactly what runs: the class is Stable again, and the failed revision
stays remembered. The first revision of a class has no stable to protect and
goes straight to every node.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from edgewise.api.model import Rollout, Step
from edgewise.api.rollout_status import AnalysisRecord, ClassRollout, CohortStart, Outcome, RevisionOutcome
from edgewise.core import names
from edgewise.core.durations import iso, parse_time, seconds
from edgewise.core.events import Event
from edgewise.core.rollout import windows
from edgewise.core.rollout.buckets import BUCKET_LABEL, threshold
from edgewise.core.rollout.deadline import progress_deadline
from edgewise.core.rollout.sites import BY_BUCKET, Order, Ranked, cohort_size, site_order, step_threshold


@dataclass(frozen=True)
class ClassObservation:
    """What the shell saw of one class this reconcile."""

    name: str
    desired_revision: str  # pod-template hash the spec asks for
    desired_version: str
    buckets: tuple[int, ...] = ()  # bucket of every node of the class
    canary_ready: int = 0  # ready canary pods
    not_ready_canary_nodes: int = 0  # canary nodes that are NotReady: deferred, neither pass nor fail
    # Ready canary nodes whose canary pod was not Ready within spec.rollout.nodeTimeout (abort.py): the step
    # goes on without them (they count as failures for spec.rollout.abort instead).
    timed_out_canary_nodes: int = 0
    analysis_enabled: bool = True
    hold_promotion: bool = False  # AllOrNothing: another class's canary has not passed every step yet
    # Make-before-break (switch.py): nodes change slot only once the gaining slot's pods are Ready,
    # so a move can still be under way when the state machine looks again.
    make_before_break: bool = False
    switch_pending: bool = False  # the slots are not yet where the current state wants them
    switching: str = ""  # what the pending switch waits for, for messages
    # DaemonSets still in the slot a new canary would take (the previous canary's, being drained or
    # deleted), described for messages; "" when that slot is empty. Under OnDelete a DaemonSet
    # re-templated over running pods leaves them on the old version, so a canary starts only in an empty slot.
    canary_slot_leftover: str = ""
    # The spec's own revision is not known yet (its artifact is being made): desired_* is what the class
    # already runs, which says nothing about whether the spec went back to it.
    artifact_pending: bool = False
    rolled_back_version: str = ""  # the newest rolled-back or aborted version in the history, for messages
    # (bucket, time zone from the node's label or None) of every node of the class: maintenance windows
    # with `timeZone: Site` are evaluated for the zones of the nodes a step moves (core/rollout/windows.py).
    zones: tuple[tuple[int, str | None], ...] = ()
    # (site, time zone) of every node, in a site order: the zones of canary sites a step pins.
    site_zones: tuple[tuple[str, str | None], ...] = ()
    order: Order = BY_BUCKET  # how the spec lines the class's nodes up: by bucket, or site by site
    ranked: Ranked = ()  # (rank, site) of every node of the class under `order`; from `buckets` when empty

    def __post_init__(self) -> None:
        if not self.ranked and self.buckets:
            object.__setattr__(self, "ranked", tuple((b, "") for b in sorted(self.buckets)))


@dataclass(frozen=True)
class Decision:
    state: ClassRollout
    events: tuple[Event, ...] = ()
    stage: tuple[int, int] | None = None  # bucket range [from, to) whose nodes should prefetch the canary
    stage_sites: frozenset[str] = frozenset()  # sites newly pinned on the canary: their nodes prefetch too
    requeue_after: float | None = None  # seconds until something is due (pause end, next analysis)
    failed: bool = False  # the canary was rolled back because it regressed (for AllOrNothing)
    finished: RevisionOutcome | None = None  # how the revision's rollout ended, when it ended now
    waiting_to_start: bool = False  # the spec's revision has no canary yet: the previous one still drains


def analysis_due(spec: Rollout, state: ClassRollout, now: dt.datetime) -> bool:
    """Is it time to measure this class's canary?"""
    if not state.canary_revision or state.percent == 0 or state.state in ("RolledBack", "Stable"):
        return False
    last = parse_time(state.last_analysis_at)
    return last is None or (now - last).total_seconds() >= seconds(spec.analysis.interval)


@dataclass
class _Run:
    """Mutable scratch of one `next_class_state` call; the result is frozen into a Decision."""

    state: ClassRollout
    events: list[Event] = field(default_factory=list)
    stage: tuple[int, int] | None = None
    stage_sites: frozenset[str] = frozenset()
    requeue: list[float] = field(default_factory=list)
    failed: bool = False
    finished: RevisionOutcome | None = None
    waiting_to_start: bool = False

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def update(self, **changes: object) -> None:
        self.state = self.state.model_copy(update=changes)


def next_class_state(spec: Rollout, current: ClassRollout | None, obs: ClassObservation, now: dt.datetime,
         verdict: AnalysisRecord | None = None, command: str | None = None) -> Decision:
    """The next state of one class. `verdict` is an analysis that just ran; `command` a user's verb."""
    run = _Run(current or ClassRollout(name=obs.name))
    s = run.state
    if s.stable_revision is None:  # first revision: nothing serving to protect
        run.update(stable_revision=obs.desired_revision, stable_version=obs.desired_version, state="Stable",
                   message=f"version {obs.desired_version} runs on every node of the class")
        run.event("Normal", "Deployed", f"class {obs.name}: version {obs.desired_version} deployed")
        return _decide(run)
    if obs.desired_revision == s.stable_revision:
        if s.canary_revision:
            _end_canary(run, "Stable", f"the spec is back on stable version {s.stable_version}; "
                                       f"canary {s.canary_version} removed")
            run.event("Normal", "CanaryRemoved", f"class {obs.name}: {run.state.message}")
            run.finished = "Superseded"
        elif s.state == "RolledBack" and not obs.artifact_pending:
            _back_on_stable(run, obs)
        elif s.state != "Stable" and s.state != "RolledBack":
            run.update(state="Stable")
        return _decide(run)
    if command == "retry" and s.failed_revision == obs.desired_revision:
        run.update(failed_revision=None)
        run.event("Normal", "Retry", f"class {obs.name}: retrying version {obs.desired_version}")
    if run.state.failed_revision == obs.desired_revision:
        if s.state != "RolledBack":
            _refuse_failed(run, obs)
        return _decide(run)
    if run.state.canary_revision and run.state.canary_revision != obs.desired_revision:
        _supersede(run, obs)
    if not run.state.canary_revision and (obs.switch_pending or obs.canary_slot_leftover):
        # The previous canary (rolled back, superseded, removed) still drains: its nodes wait for their
        # stable pods to be Ready, then its DaemonSet goes. A new canary starts in that slot only once
        # it is empty, never over the old one's pods (OnDelete would leave them on the old version).
        waits_for = obs.switching if obs.switch_pending else obs.canary_slot_leftover
        run.update(message=f"version {obs.desired_version} starts once the previous canary's nodes are back "
                           f"on stable {run.state.stable_version}: {waits_for}")
        run.requeue.append(2.0)
        run.waiting_to_start = True
        return _decide(run)
    if run.state.canary_revision != obs.desired_revision:
        _start(run, obs, now)
    _apply_command(run, spec, obs, command, now)
    if verdict is not None and run.state.canary_revision:
        _count(run, spec, obs, verdict, now)
    if run.state.state == "RolledBack":
        return _decide(run)
    if run.state.failures > spec.analysis.failure_limit:  # failed, autoRollback off: hold until a user acts
        return _decide(run)
    if run.state.paused_by_user:
        if run.state.state != "Paused":
            run.update(state="Paused", message="paused by a user; `kubectl edgewise resume` continues")
        return _decide(run)
    _walk_steps(run, spec, obs, now)
    return _decide(run)


def _decide(run: _Run) -> Decision:
    requeue = min(run.requeue) if run.requeue else None
    return Decision(state=run.state, events=tuple(run.events), stage=run.stage, stage_sites=run.stage_sites,
                    requeue_after=requeue,
                    failed=run.failed, finished=run.finished, waiting_to_start=run.waiting_to_start)


def _back_on_stable(run: _Run, obs: ClassObservation) -> None:
    """After a rollback the spec asks again for exactly what runs (a revert in Git, as docs/gitops.md
    advises): nothing is rolled back any more, so the class is Stable. No revision ends here (the rolled-
    back one already ended), and failed_revision stays: asking for it again still needs `retry`."""
    # An operator before this rule recorded the revert itself as a rolled-back revision of the stable version.
    known = obs.rolled_back_version not in ("", run.state.stable_version)
    after = f"the rollback of {obs.rolled_back_version}" if known else "a rollback"
    run.update(state="Stable", message=f"the spec is back on stable version {run.state.stable_version} "
                                       f"after {after}")
    run.event("Normal", "BackOnStable", f"class {obs.name}: {run.state.message}")


def _refuse_failed(run: _Run, obs: ClassObservation) -> None:
    """The spec asks again for the revision that failed here: it is not rolled out again until a user
    says `retry`, and the class says so (its message would otherwise describe the previous state)."""
    run.update(state="RolledBack", message=f"version {obs.desired_version} was rolled back on this class and "
                                           f"is not retried until `kubectl edgewise retry`; stable "
                                           f"{run.state.stable_version} keeps serving")
    run.event("Warning", "NotRetried", f"class {obs.name}: {run.state.message}")


def _supersede(run: _Run, obs: ClassObservation) -> None:
    """A newer spec replaces the canary in flight: the canary's nodes go back to stable first (make-before-
    break, as in a rollback), and the newer version starts in the emptied slot."""
    old = run.state.canary_version
    _end_canary(run, "Progressing", f"canary {old} superseded by version {obs.desired_version}: its nodes go "
                                    f"back to stable {run.state.stable_version} first")
    run.update(stable_nodes=len(obs.buckets))
    run.finished = "Superseded"
    run.event("Normal", "CanarySuperseded", f"class {obs.name}: {run.state.message}")


def _start(run: _Run, obs: ClassObservation, now: dt.datetime) -> None:
    run.update(canary_revision=obs.desired_revision, canary_version=obs.desired_version, step_index=0,
               percent=0, bucket_threshold=0, canary_nodes=0, stable_nodes=len(obs.buckets), passes=0,
               order_label=None, site_label=None, canary_sites=None, cohort_step=None, sites=None,
               failures=0, last_analysis=None, last_analysis_at=None, step_started_at=iso(now),
               state="Progressing", paused_by_user=False, soak_until=None, cohorts=None, tally=None,
               staged_threshold=0, staged_sites=None, waiting_for_window=False, window_opens_at=None,
               message=f"rolling out version {obs.desired_version} over stable {run.state.stable_version}")
    run.event("Normal", "RolloutStarted", f"class {obs.name}: canary of version {obs.desired_version} "
                                          f"against stable {run.state.stable_version}")


def _apply_command(run: _Run, spec: Rollout, obs: ClassObservation, command: str | None, now: dt.datetime
                   ) -> None:
    s = run.state
    if command == "pause" and not s.paused_by_user:
        run.update(paused_by_user=True)
        run.event("Normal", "Paused", f"class {obs.name}: paused by a user")
    elif command == "resume" and s.paused_by_user:
        run.update(paused_by_user=False, state="Progressing")
        run.event("Normal", "Resumed", f"class {obs.name}: resumed by a user")
    elif command == "abort":
        _rollback(run, obs, "aborted by a user", outcome="Aborted")
    elif command == "promote-full":
        run.update(paused_by_user=False, step_index=len(spec.steps))
        run.event("Normal", "PromotedByUser", f"class {obs.name}: promoted to every node by a user")
    elif command == "promote":
        # Skip the current step: end a pause, or stop waiting for a passing analysis.
        at_pause = s.step_index < len(spec.steps) and spec.steps[s.step_index].pause is not None
        if at_pause:
            run.update(paused_by_user=False, step_index=s.step_index + 1, passes=0)
        else:  # and skip a minSuccessTime soak: it counts as over from now
            run.update(paused_by_user=False, passes=max(s.passes, 1), soak_until=iso(now))
        run.event("Normal", "StepPromoted", f"class {obs.name}: step {s.step_index + 1} promoted by a user")


def _count(run: _Run, spec: Rollout, obs: ClassObservation, verdict: AnalysisRecord, now: dt.datetime) -> None:
    s = run.state
    run.update(last_analysis=verdict, last_analysis_at=verdict.time)
    if verdict.outcome == Outcome.PASS:
        run.update(passes=s.passes + 1)
        return
    if verdict.outcome == Outcome.INCONCLUSIVE:
        return
    failures = s.failures + 1
    run.update(failures=failures)
    limit = spec.analysis.failure_limit
    run.event("Warning", "AnalysisFailed",
              f"class {obs.name}: canary {s.canary_version} failed analysis ({failures}/{limit + 1}): "
              f"{verdict.message}")
    if failures > limit:
        if spec.auto_rollback:
            _rollback(run, obs, f"analysis failed {failures} times: {verdict.message}")
            run.failed = True
        else:
            run.update(state="Degraded", message=f"canary failed analysis {failures} times and autoRollback is "
                                                 f"off; `kubectl edgewise abort` rolls back: {verdict.message}")


def _rollback(run: _Run, obs: ClassObservation, reason: str, outcome: RevisionOutcome = "RolledBack") -> None:
    failed = run.state.canary_revision
    version = run.state.canary_version
    _end_canary(run, "RolledBack", f"version {version} rolled back to {run.state.stable_version}: {reason}")
    run.update(failed_revision=failed, stable_nodes=len(obs.buckets))
    run.finished = outcome
    run.event("Warning", "RolledBack", f"class {obs.name}: {run.state.message}")


def _end_canary(run: _Run, state: str, message: str) -> None:
    # orderLabel and siteLabel stay: the slots drain in the order they were placed in (make-before-break).
    run.update(canary_revision=None, canary_version=None, step_index=0, percent=0, bucket_threshold=0,
               canary_sites=None, cohort_step=None, sites=None, canary_nodes=0,
               passes=0, failures=0, paused_by_user=False, step_started_at=None,
               soak_until=None, cohorts=None, staged_threshold=0, staged_sites=None, waiting_for_window=False,
               window_opens_at=None, state=state, message=message)


def _walk_steps(run: _Run, spec: Rollout, obs: ClassObservation, now: dt.datetime) -> None:
    """Walk the steps as far as the observation allows."""
    steps = spec.steps
    for _ in range(len(steps) + 1):
        s = run.state
        if s.step_index >= len(steps):
            if obs.hold_promotion:
                run.update(state="Progressing", message="every step passed; waiting for the other classes "
                                                        "before promoting (classPolicy AllOrNothing)")
                run.requeue.append(2.0)
                return
            if obs.make_before_break and s.percent < 100:
                # promote-full: every node switches make-before-break first
                _set_cohort(run, spec, obs, Step(percent=100), now)
                return
            if obs.switch_pending:
                run.update(state="Progressing", message=f"promoting {s.canary_version}: {obs.switching}")
                run.requeue.append(2.0)
                return
            # Every node already runs the canary (the last step moved them, inside its window): the slot
            # flip moves no pod, so it waits for no window.
            _promote(run, obs)
            return
        current: Step = steps[s.step_index]
        started = parse_time(s.step_started_at) or now
        if current.pause is not None:
            if current.pause.duration is None:
                run.update(state="Paused", message=f"step {s.step_index + 1}/{len(steps)}: paused until "
                                                    "`kubectl edgewise promote`")
                return
            remaining = seconds(current.pause.duration) - (now - started).total_seconds()
            if remaining > 0:
                run.update(state="Paused", message=f"step {s.step_index + 1}/{len(steps)}: pause "
                                                    f"{current.pause.duration}, {remaining:.0f}s left")
                run.requeue.append(remaining)
                return
            _next_step(run, now)
            continue
        if _needs_cohort(s, obs, current):
            _set_cohort(run, spec, obs, current, now)
            return
        if not _step_done(run, spec, obs, now) or not _soaked(run, spec, now):
            return
        _next_step(run, now)


def _needs_cohort(s: ClassRollout, obs: ClassObservation, step: Step) -> bool:
    """Has the current step's cohort still to be placed? (A spec that switched between site steps and
    percent-only steps places it again in the new order.)"""
    if (s.order_label or BUCKET_LABEL) != obs.order.label:
        return True
    if obs.order.by_site:
        return s.cohort_step != s.step_index
    return s.percent < (step.percent or 0)


def _set_cohort(run: _Run, spec: Rollout, obs: ClassObservation, step: Step, now: dt.datetime) -> None:
    """Place the cohort a step asks for: never fewer nodes than the steps before it."""
    s = run.state
    same_order = (s.order_label or BUCKET_LABEL) == obs.order.label
    before_t = s.bucket_threshold if same_order else 0
    before_pinned = frozenset(s.canary_sites or ()) if same_order else frozenset()
    total = len(obs.ranked)
    if obs.order.by_site:
        pinned = before_pinned | frozenset(step.canary_sites or ())
        t = max(before_t, step_threshold(step, obs.ranked, pinned, obs.order.end))
        n = cohort_size(obs.ranked, t, pinned)
        percent = 100 if n == total else max(1, min(99, round(100 * n / total)))
        at = {site for rank, site in obs.ranked if rank < t or site in pinned}
        where = (f"{n}/{total} nodes at {len(at)}/{len(site_order(obs.ranked))} site(s)"
                 + (f", canary sites {', '.join(sorted(pinned))}" if pinned else ""))
    else:
        pinned = frozenset()
        percent = step.percent or 100
        t = max(before_t, threshold(percent, obs.buckets))
        n = cohort_size(obs.ranked, t, pinned)
        where = f"{percent}% ({n}/{total} nodes)"
    new_sites = pinned - before_pinned
    if not _activation_open(run, spec, obs, (before_t, t), now, new_sites):
        return  # the step waits for its activation window (the status says until when)
    _stage(run, spec, obs, (before_t, t), now, new_sites)
    # When these nodes were asked to take the canary, for nodeTimeout: one entry per step, so it stays small.
    asked = [*(s.cohorts or []), CohortStart(below_bucket=t, since=iso(now))] if t > before_t else s.cohorts
    run.update(percent=percent, bucket_threshold=t, canary_nodes=n, stable_nodes=total - n,
               order_label=obs.order.label if obs.order.by_site else None, site_label=obs.order.site_label,
               canary_sites=sorted(pinned) or None, cohort_step=s.step_index if obs.order.by_site else None,
               step_started_at=iso(now), passes=0, state="Progressing", soak_until=None, cohorts=asked,
               waiting_for_window=False, window_opens_at=None,
               message=f"step {s.step_index + 1}: {where} on {s.canary_version}")
    run.event("Normal", "StepChanged", f"class {obs.name}: {run.state.message}")


def _zones(obs: ClassObservation, moving: tuple[int, int], sites: frozenset[str] = frozenset()) -> set[str | None]:
    """The time zones of the nodes whose place in the order (bucket or rank) lies in `moving`, and of the
    nodes at the canary `sites` a step pins."""
    lo, hi = moving
    return {z for b, z in obs.zones if lo <= b < hi} | {z for site, z in obs.site_zones if site in sites}


def _activation_open(run: _Run, spec: Rollout, obs: ClassObservation, moving: tuple[int, int],
                     now: dt.datetime, sites: frozenset[str] = frozenset()) -> bool:
    """May the due step, which moves the nodes in the bucket range `moving`, go now?

    Closed, the class waits: its status says until when, the requeue is the window's opening, and the
    nodes the step will move are staged meanwhile if the staging window allows. No step has started, so
    the progress deadline does not run (it times a step from when it moved nodes). Rollbacks never
    come here."""
    gate = windows.gate(spec.windows.activation, _zones(obs, moving, sites), now)
    s = run.state
    if gate.open:
        if s.waiting_for_window:
            run.update(waiting_for_window=False, window_opens_at=None)
        return True
    what = f"step {s.step_index + 1}/{len(spec.steps)}" if s.step_index < len(spec.steps) else "promotion"
    if gate.opens_at is not None:
        # Absolute time only: a countdown would change the status (and write it) on every reconcile.
        when = f"opens at {iso(gate.opens_at)}"
        run.requeue.append((gate.opens_at - now).total_seconds() + 1)
    else:
        when = (f"cannot be evaluated: {gate.problem}" if gate.problem
                else "does not open within 366 days for these nodes")
        run.requeue.append(3600.0)  # nothing opens soon; look again in case the nodes' zones change
    message = f"{what} of {s.canary_version} is waiting for the activation window, which {when}"
    if not s.waiting_for_window:
        run.event("Normal", "WaitingForWindow", f"class {obs.name}: {message}")
    run.update(state="Progressing", waiting_for_window=True,
               window_opens_at=iso(gate.opens_at) if gate.opens_at else None, message=message)
    _stage(run, spec, obs, moving, now, sites)
    return False


def _stage(run: _Run, spec: Rollout, obs: ClassObservation, moving: tuple[int, int], now: dt.datetime,
           sites: frozenset[str] = frozenset()) -> None:
    """Ask the nodes in `moving` not asked yet to prefetch the canary, if the staging window is open for them
    (with it closed, a node whose step comes first fetches when its pod starts). `sites`: canary sites the
    step pins, whose nodes move whatever their rank."""
    lo, hi = max(moving[0], run.state.staged_threshold), moving[1]
    sites = sites - frozenset(run.state.staged_sites or ())  # asked once, not at every reconcile
    if lo >= hi and not sites:
        return
    gate = windows.gate(spec.windows.staging, _zones(obs, (lo, hi), sites), now)
    if gate.open:
        run.stage = (min(lo, hi), hi)
        run.stage_sites = sites  # also while the step waits for its activation window, not placed yet
        run.update(staged_threshold=max(hi, run.state.staged_threshold),
                   staged_sites=sorted({*(run.state.staged_sites or ()), *sites}) or None)
    elif gate.opens_at is not None and run.state.waiting_for_window:
        run.requeue.append((gate.opens_at - now).total_seconds() + 1)  # stage while the step still waits


def _step_done(run: _Run, spec: Rollout, obs: ClassObservation, now: dt.datetime) -> bool:
    s = run.state
    n = cohort_size(obs.ranked, s.bucket_threshold, frozenset(s.canary_sites or ()))
    reachable = n - obs.not_ready_canary_nodes - obs.timed_out_canary_nodes
    ready = obs.canary_ready >= reachable and not obs.switch_pending
    analysed = s.passes >= 1 or not obs.analysis_enabled
    if ready and analysed:
        return True
    deadline = progress_deadline(spec, parse_time(s.step_started_at) or now, now)
    waiting_for = (f"{obs.canary_ready}/{reachable} canary pods ready" if obs.canary_ready < reachable
                   else obs.switching if obs.switch_pending else "a passing analysis")
    deferred = f", {obs.not_ready_canary_nodes} NotReady node(s) deferred" if obs.not_ready_canary_nodes else ""
    if obs.timed_out_canary_nodes:
        deferred += (f", {obs.timed_out_canary_nodes} node(s) timed out (nodeTimeout {spec.node_timeout}) "
                     "and not waited for")
    if deadline.exceeded:
        message = (f"step {s.step_index + 1} made no progress for {deadline.waited:.0f}s (progressDeadline "
                   f"{spec.progress_deadline}): waiting for {waiting_for}{deferred}")
        if s.state != "Degraded":
            run.event("Warning", "ProgressDeadlineExceeded", f"class {obs.name}: {message}")
        run.update(state="Degraded", message=message)
    else:
        run.update(state="Progressing", message=f"step {s.step_index + 1}: {s.percent}% on {s.canary_version}, "
                                                 f"waiting for {waiting_for}{deferred}")
    run.requeue.append(min(seconds(spec.analysis.interval), 5.0))
    return False


def _soaked(run: _Run, spec: Rollout, now: dt.datetime) -> bool:
    """spec.rollout.minSuccessTime: a step that passed soaks this long before the next one (analysis goes on)."""
    soak = seconds(spec.min_success_time)
    if soak <= 0:
        return True
    s = run.state
    until = parse_time(s.soak_until)
    if until is None:
        # Recorded in status (to the second, as every time there), so a restarted operator soaks no longer.
        until = parse_time(iso(now + dt.timedelta(seconds=soak)))
        assert until is not None
        run.update(soak_until=iso(until))
        run.event("Normal", "Soaking", f"class {s.name}: step {s.step_index + 1} passed; soaking until "
                                       f"{iso(until)} (minSuccessTime {spec.min_success_time})")
    remaining = (until - now).total_seconds()
    if remaining <= 0:
        return True
    run.update(state="Progressing", message=f"step {s.step_index + 1}: {s.percent}% on {s.canary_version} passed; "
                                            f"soaking until {iso(until)} (minSuccessTime {spec.min_success_time})")
    run.requeue.append(remaining)
    return False


def _next_step(run: _Run, now: dt.datetime) -> None:
    run.update(step_index=run.state.step_index + 1, step_started_at=iso(now), passes=0, soak_until=None)


def _promote(run: _Run, obs: ClassObservation) -> None:
    s = run.state
    new_slot = names.other_slot(s.stable_slot)
    old = s.stable_version
    run.update(stable_slot=new_slot, stable_revision=s.canary_revision, stable_version=s.canary_version)
    _end_canary(run, "Stable", f"version {run.state.stable_version} promoted on every node (was {old})")
    run.update(stable_nodes=len(obs.buckets))
    run.finished = "Succeeded"
    run.event("Normal", "Promoted", f"class {obs.name}: {run.state.message}")


def roll_back_all(spec: Rollout, states: Mapping[str, ClassRollout], failed_class: str,
                  obs: Mapping[str, ClassObservation], waiting: frozenset[str] = frozenset(),
                  reason: str = "") -> dict[str, Decision]:
    """AllOrNothing: one class failed, so every other class's canary goes too, and a class still
    `waiting` for its previous canary to drain does not start the failed revision at all. The fleet-wide
    abort rule (abort.py) uses it too, with its own `reason` and no `failed_class`."""
    out = {}
    reason = reason or f"class {failed_class} failed and classPolicy is AllOrNothing"
    for name, st in states.items():
        if name == failed_class:
            continue
        run = _Run(st)
        if st.canary_revision:
            _rollback(run, obs[name], reason)
        elif name in waiting:
            o = obs[name]
            run.update(failed_revision=o.desired_revision, state="RolledBack",
                       message=f"version {o.desired_version} not started: {reason}")
            run.finished = "RolledBack"
            run.event("Warning", "RolledBack", f"class {o.name}: {run.state.message}")
        else:
            continue
        out[name] = _decide(run)
    return out
