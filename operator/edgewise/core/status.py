"""Status of an EdgeModel, computed from the plan and the observed workloads.

Pure: the time comes in as an argument. Conditions keep their
lastTransitionTime while their status stays the same (the API conventions),
so recomputing an unchanged status yields an identical object and the
operator writes nothing. Transitions a person should see become Events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from edgewise.api.resources import EdgeModel
from edgewise.api.rollout_status import RolloutStatus
from edgewise.api.status import (
    ADDRESS_READY,
    ARTIFACTS_READY,
    DEGRADED,
    NODES_MATCHED,
    PROFILE_RESOLVED,
    PROGRESSING,
    READY,
    SOURCE_TRUSTED,
    WINDOWS_VALID,
    ClassStatus,
    Condition,
    EdgeModelStatus,
    Phase,
)
from edgewise.core import names
from edgewise.core.class_artifact import ArtifactState, ClassArtifact
from edgewise.core.durations import iso, parse_time
from edgewise.core.events import Event
from edgewise.core.observed import Workload
from edgewise.core.plan import ClassPlan, ModelPlan
from edgewise.core.rollout import windows
from edgewise.core.rollout.deadline import progress_deadline
from edgewise.core.selector import class_term
from edgewise.core.trust_gate import Gate


@dataclass(frozen=True)
class StatusResult:
    status: EdgeModelStatus
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None  # seconds until the status may change by time alone


class Wanted(NamedTuple):
    """A condition as this reconcile wants it (`_conditions` adds the times)."""

    status: str  # True | False | Unknown
    reason: str
    message: str


Want = dict[str, Wanted]  # condition type → what it should say


def compute_status(model: EdgeModel, plan: ModelPlan, observed: Mapping[str, Workload], now: datetime,
                   total_nodes: int, rollout: RolloutStatus | None = None,
                   artifacts: Mapping[str, ClassArtifact] | None = None, address: str = "",
                   address_problem: str = "", trust: Gate | None = None) -> StatusResult:
    """The status to write, the Events to emit, and when to look again.

    `address` is the model's node-local Service (core/address.py); `address_problem` why it has none;
    `trust` the source-trust gate's verdict (core/trust_gate.py; None: not evaluated, no condition)."""
    old = model.status
    artifacts = artifacts or {}
    classes = _classes(model, plan, observed, artifacts)
    matched = sum(c.matched_nodes for c in classes)
    ready = sum(min(c.ready_pods, c.matched_nodes) for c in classes)
    want = _profile_conditions(model, plan, classes, total_nodes)
    if plan.profile is not None:
        if rollout and rollout.classes and matched:
            _rollout_conditions(want, rollout, model.spec.version, ready, matched)
        if artifacts:
            _artifact_conditions(want, artifacts)
    want.update(_address_condition(address, address_problem))
    want.update(_windows_condition(model))
    if trust is not None:
        _trust_conditions(want, trust)
    conditions, requeue = _conditions_with_deadline(model, want, rollout, now)
    stable, canary = _versions(model, rollout, conditions)
    status = EdgeModelStatus(
        observed_generation=model.metadata.generation,
        phase=_phase(plan, conditions, matched),
        profile=plan.profile.name if plan.profile else model.spec.profile_ref or "",
        stable_version=stable,
        canary_version=canary,
        ready=f"{ready}/{matched}",
        ready_nodes=ready,
        matched_nodes=matched,
        unmatched_nodes=len(plan.unmatched) if plan.profile else old.unmatched_nodes,
        address=address or None,
        classes=classes,
        rollout=rollout if rollout is not None else old.rollout,
        conditions=conditions,
    )
    return StatusResult(status=status, events=tuple(_events(old.conditions or [], conditions)),
                        requeue_after=requeue)


def _classes(model: EdgeModel, plan: ModelPlan, observed: Mapping[str, Workload],
             artifacts: Mapping[str, ClassArtifact]) -> list[ClassStatus]:
    """Per class: what the plan wants and what runs (without a profile: what the kept workloads serve)."""
    if plan.profile is None:
        classes = _kept_classes(plan, observed)
    else:
        classes = [_class_status(model, c, observed) for c in plan.classes]
    return [_with_artifact(c, artifacts.get(c.name)) for c in classes]


def _profile_conditions(model: EdgeModel, plan: ModelPlan, classes: list[ClassStatus], total_nodes: int) -> Want:
    """ProfileResolved, NodesMatched, Progressing, Ready and Degraded from the plan and the pods alone."""
    if plan.profile is None:
        msg = (f"DeploymentProfile {model.spec.profile_ref or ''} not found in namespace {model.metadata.namespace}; "
               f"{len(plan.keep)} existing workload(s) keep serving and nothing is deleted")
        return {PROFILE_RESOLVED: Wanted("False", "ProfileNotFound", msg),
                NODES_MATCHED: Wanted("Unknown", "ProfileNotFound", "nodes cannot be classified without a profile"),
                PROGRESSING: Wanted("False", "ProfileNotFound", msg),
                READY: Wanted("False", "ProfileNotFound", msg),
                DEGRADED: Wanted("True", "ProfileNotFound", msg)}
    profile = plan.profile
    class_names = ", ".join(c.name for c in profile.spec.classes)
    want: Want = {PROFILE_RESOLVED: Wanted("True", "BuiltIn", f"using the built-in profile ({class_names})")
                  if profile.builtin else
                  Wanted("True", "Found", f"using DeploymentProfile {profile.name} ({class_names})")}
    want.update(_serving_conditions(model, plan, classes, total_nodes))
    want[DEGRADED] = Wanted("False", "AsExpected", "")
    errors = [c for c in plan.classes if c.error]
    if errors:
        reasons = {c.error_reason or "ClassError" for c in errors}
        want[DEGRADED] = Wanted("True", reasons.pop() if len(reasons) == 1 else "ClassError",
                                "; ".join(c.error for c in errors))
    return want


def _serving_conditions(model: EdgeModel, plan: ModelPlan, classes: list[ClassStatus], total_nodes: int) -> Want:
    """NodesMatched, Progressing and Ready: how many nodes the classes match, and whether they all run the spec."""
    assert plan.profile is not None
    version = model.spec.version
    matched = sum(c.matched_nodes for c in classes)
    unmatched = len(plan.unmatched)
    if matched == 0:
        selectors = "; ".join(f"{hc.name} needs {_describe(hc)}" for hc in plan.profile.spec.classes)
        msg = (f"no node matches a class of profile {plan.profile.name} ({total_nodes} nodes checked, "
               f"{unmatched} unmatched): {selectors}")
        return {NODES_MATCHED: Wanted("False", "NoMatchingNodes", msg),
                PROGRESSING: Wanted("False", "NoMatchingNodes", msg), READY: Wanted("False", "NoMatchingNodes", msg)}
    per_class = ", ".join(f"{c.name}={c.matched_nodes}" for c in classes if c.matched_nodes)
    want = {NODES_MATCHED: Wanted("True", "NodesMatched", f"{matched} node(s) matched ({per_class}); "
                                                          f"{unmatched} unmatched")}
    rolling = [c for c in classes if not _class_done(c, version)]
    if rolling:
        detail = ", ".join(f"{c.name} {c.ready_pods}/{c.matched_nodes} ready" for c in rolling)
        want[PROGRESSING] = Wanted("True", "RollingOut", f"rolling out {version}: {detail}")
        want[READY] = Wanted("False", "ClassesNotReady", detail)
    else:
        ready = sum(min(c.ready_pods, c.matched_nodes) for c in classes)
        want[PROGRESSING] = Wanted("False", "RolloutComplete", f"every class runs {version}")
        want[READY] = Wanted("True", "AllClassesReady", f"{ready}/{matched} nodes ready with version {version}")
    return want


def _address_condition(address: str, problem: str) -> Want:
    if problem:
        return {ADDRESS_READY: Wanted("False", "ServiceNameTaken", problem)}
    if address:
        return {ADDRESS_READY: Wanted("True", "ServiceReady", f"applications reach the model on their own node at "
                                                              f"{address}:8000 (HTTP) and :8001 (gRPC)")}
    return {}


def _windows_condition(model: EdgeModel) -> Want:
    """WindowsValid: the apiserver checks the shape of spec.rollout.windows; whether each time zone exists and
    each schedule's ranges run low to high only the operator can tell (its tz database)."""
    spec = model.spec.rollout.windows
    configured = [*(spec.staging or []), *(spec.activation or [])]
    if not configured:
        had = any(c.type == WINDOWS_VALID for c in model.status.conditions or [])
        return {WINDOWS_VALID: Wanted("True", "NoWindows", "no maintenance windows: any time")} if had else {}
    found = windows.problems(configured)
    if found:
        return {WINDOWS_VALID: Wanted("False", "InvalidWindow", "spec.rollout.windows cannot be evaluated, so "
                                      "steps wait (a rollback never does): " + "; ".join(found))}
    return {WINDOWS_VALID: Wanted("True", "WindowsValid", f"{len(configured)} maintenance window(s) evaluated")}


def _conditions_with_deadline(model: EdgeModel, want: Want, rollout: RolloutStatus | None, now: datetime
                              ) -> tuple[list[Condition], float | None]:
    """The conditions, Degraded when the model has been Progressing past spec.rollout.progressDeadline;
    and when that deadline falls, if it is still ahead.

    While a class has a canary, its current step is what is timed (core/rollout/class_machine.py), not
    the model: one clock at a time (core/rollout/deadline.py)."""
    old, generation = model.status, model.metadata.generation
    spec_changed = old.observed_generation != generation
    conditions = _conditions(old.conditions or [], want, now, generation, spec_changed)
    progressing = next(c for c in conditions if c.type == PROGRESSING)
    canary_active = bool(rollout and any(c.canary_revision for c in rollout.classes or []))
    if progressing.status != "True" or want[DEGRADED].status != "False" or canary_active:
        return conditions, None
    since = parse_time(progressing.last_transition_time)
    assert since is not None  # `_conditions` sets every condition's time
    deadline = progress_deadline(model.spec.rollout, since, now)
    if not deadline.exceeded:
        return conditions, deadline.remaining + 1
    want[DEGRADED] = Wanted("True", "ProgressDeadlineExceeded",
                            f"no complete rollout within {model.spec.rollout.progress_deadline}: {progressing.message}")
    return _conditions(old.conditions or [], want, now, generation, spec_changed), None


def _versions(model: EdgeModel, rollout: RolloutStatus | None, conditions: list[Condition]
              ) -> tuple[str | None, str | None]:
    """(stable version, canary version): from the rollout's classes, else from what the pods run."""
    if rollout and rollout.classes:
        stable = ",".join(sorted({c.stable_version for c in rollout.classes if c.stable_version})) or None
        canary = ",".join(sorted({c.canary_version for c in rollout.classes if c.canary_version})) or None
        return stable, canary
    state = {c.type: c.status for c in conditions}
    stable = model.status.stable_version
    if state.get(READY) == "True":
        return model.spec.version, None
    if state.get(PROGRESSING) == "True" and model.spec.version != stable:
        return stable, model.spec.version
    return stable, None


def _with_artifact(c: ClassStatus, a: ClassArtifact | None) -> ClassStatus:
    if a is None:
        return c
    why = a.message if a.state is ArtifactState.IDLE else f"{a.reason}: {a.message}"
    ready = "; ".join(filter(None, [a.summary, a.message]))[:1000]  # the report's line, then its notes
    ready_now = a.state is ArtifactState.READY
    update: dict[str, object] = {"artifact_state": a.state.value, "optimization": ready if ready_now else why}
    if ready_now:
        # What is served: a gate may have chosen a more precise artifact than the class asks for.
        update.update(artifact_size_bytes=a.size_bytes, precision=a.precision or c.precision,
                      attestation=f"key {a.attested_by[:16]}" if a.attested_by else "none")
    return c.model_copy(update=update)


def _artifact_conditions(want: Want, artifacts: Mapping[str, ClassArtifact]) -> None:
    """ArtifactsReady, and Degraded when a class's artifact was refused (it deploys nothing new)."""
    artifacts = {c: a for c, a in artifacts.items() if a.state is not ArtifactState.IDLE}
    if not artifacts:
        return
    waiting = {c: a for c, a in artifacts.items() if a.state is ArtifactState.OPTIMIZING}
    refused = {c: a for c, a in artifacts.items() if a.state in (ArtifactState.REJECTED, ArtifactState.FAILED)}
    if refused:
        detail = "; ".join(f"{c}: {a.reason}: {a.message}" for c, a in sorted(refused.items()))
        reasons = {a.reason for a in refused.values()}
        reason = reasons.pop() if len(reasons) == 1 else "ArtifactsRefused"
        want[ARTIFACTS_READY] = Wanted("False", reason, detail + "; what is serving keeps serving")
        want[DEGRADED] = Wanted("True", reason, detail)
    elif waiting:
        detail = "; ".join(f"{c}: {a.message}" for c, a in sorted(waiting.items()))
        want[ARTIFACTS_READY] = Wanted("False", "Optimizing", detail)
        if PROGRESSING not in want or want[PROGRESSING].status != "True":
            want[PROGRESSING] = Wanted("True", "Optimizing", detail)
    else:
        summaries = "; ".join(f"{c}: {a.summary}" for c, a in sorted(artifacts.items()))
        want[ARTIFACTS_READY] = Wanted("True", "Ready", summaries)


def _trust_conditions(want: Want, trust: Gate) -> None:
    """SourceTrusted; a refused source is Degraded too (it deploys nothing new, what serves keeps serving)."""
    want[SOURCE_TRUSTED] = Wanted(trust.status, trust.reason, trust.message)
    if not trust.allowed:
        want[DEGRADED] = Wanted("True", trust.reason, trust.message)


def _rollout_conditions(want: Want, rollout: RolloutStatus, version: str,
                        ready: int, matched: int) -> None:
    """Conditions while canaries run, and after one was rolled back (the spec is then not what serves)."""
    canaries = [c for c in rollout.classes or [] if c.canary_revision]
    rolled_back = [c for c in rollout.classes or [] if c.state == "RolledBack"]
    degraded = [c for c in rollout.classes or [] if c.state == "Degraded"]
    serving = f"{ready}/{matched} nodes ready"
    if canaries:
        want[PROGRESSING] = Wanted("True", "CanaryRollout", "; ".join(f"{c.name}: {c.message}" for c in canaries))
        want[READY] = Wanted("True", "Serving", f"{serving}; canary of {version} in progress") if ready >= matched \
            else Wanted("False", "PodsNotReady", serving)
    elif rolled_back:
        detail = "; ".join(f"{c.name}: {c.message}" for c in rolled_back)
        reason = "RolledBack"
        if rollout.aborted is not None and rollout.aborted.version == version:
            # spec.rollout.abort fired: which rule, with its numbers, said once for every class.
            reason, detail = "AbortRuleFired", rollout.aborted.message
        want[PROGRESSING] = Wanted("False", reason, detail)
        want[DEGRADED] = Wanted("True", reason, detail)
        stable = ",".join(sorted({c.stable_version for c in rolled_back if c.stable_version}))
        want[READY] = Wanted("True", "ServingStable", f"{serving} with stable {stable}; {version} was rolled back") \
            if ready >= matched else Wanted("False", "PodsNotReady", serving)
    if degraded:
        want[DEGRADED] = Wanted("True", "RolloutDegraded", "; ".join(f"{c.name}: {c.message}" for c in degraded))


def _describe(hc: object) -> str:
    from edgewise.api.profile import HardwareClass

    assert isinstance(hc, HardwareClass)
    parts = []
    for r in sorted(class_term(hc)):
        if r.operator == "In":
            parts.append(f"{r.key}={'|'.join(r.values)}")
        elif r.operator == "Exists":
            parts.append(f"{r.key} set")
        elif r.operator == "DoesNotExist":
            parts.append(f"no {r.key}")
        else:
            parts.append(f"{r.key} {r.operator} {','.join(r.values)}")
    return " and ".join(parts)


def _class_status(model: EdgeModel, plan: ClassPlan, observed: Mapping[str, Workload]) -> ClassStatus:
    seen = [observed[w.name] for w in plan.workloads if w.name in observed]
    current = [w for w in plan.workloads if w.name in observed
               and observed[w.name].annotations.get(names.SPEC_HASH_ANNOTATION) == w.spec_hash]
    done = bool(plan.workloads) and len(current) == len(plan.workloads) and all(
        observed[w.name].rolled_out for w in current)
    versions = sorted({w.labels.get(names.VERSION_LABEL, "") for w in seen} - {""})
    message = "; ".join(filter(None, [plan.error, *plan.notes]))
    if plan.untolerated:
        message = "; ".join(filter(None, [message, f"{len(plan.untolerated)} node(s) skipped for taints the "
                                                   "class does not tolerate"]))
    return ClassStatus(
        name=plan.name,
        runtime=plan.runtime,
        precision=plan.precision,
        image=plan.image,
        matched_nodes=len(plan.nodes) - len(plan.rejected),
        untolerated_nodes=len(plan.untolerated),
        desired_pods=sum(w.desired for w in seen),
        ready_pods=sum(w.ready for w in seen),
        updated_pods=sum(w.updated for w in seen),
        version=model.spec.version if done else ",".join(versions),
        artifact_digest=plan.artifact.sha256,
        compute_capabilities=list(plan.compute_capabilities) or None,
        workloads=[w.name for w in plan.workloads] or None,
        message=message,
    )


def _kept_classes(plan: ModelPlan, observed: Mapping[str, Workload]) -> list[ClassStatus]:
    """Without a profile, report what the kept workloads still serve."""
    by_class: dict[str, list[Workload]] = {}
    for name in plan.keep:
        if name in observed:
            w = observed[name]
            by_class.setdefault(w.labels.get(names.CLASS_LABEL, ""), []).append(w)
    return [ClassStatus(
        name=cls,
        runtime=ws[0].labels.get(names.RUNTIME_LABEL, ""),
        precision=ws[0].annotations.get(names.PRECISION_ANNOTATION, ""),
        matched_nodes=sum(w.desired for w in ws),
        desired_pods=sum(w.desired for w in ws),
        ready_pods=sum(w.ready for w in ws),
        updated_pods=sum(w.updated for w in ws),
        version=",".join(sorted({w.labels.get(names.VERSION_LABEL, "") for w in ws} - {""})),
        artifact_digest=ws[0].annotations.get(names.ARTIFACT_ANNOTATION, ""),
        workloads=sorted(w.name for w in ws),
        message="kept running: the profile is missing",
    ) for cls, ws in sorted(by_class.items())]


def _class_done(c: ClassStatus, version: str) -> bool:
    if c.matched_nodes == 0:
        return True
    return c.version == version and c.desired_pods >= c.matched_nodes and c.ready_pods >= c.matched_nodes


def _conditions(old: list[Condition], want: Mapping[str, Wanted], now: datetime,
                generation: int, spec_changed: bool) -> list[Condition]:
    """New conditions, keeping lastTransitionTime where the status did not change.

    A new spec generation restarts Progressing's clock (a new rollout began).
    Conditions set by other parts of the operator (types not in `want`) are kept.
    """
    previous = {c.type: c for c in old}
    out = []
    for type_, (status, reason, message) in want.items():
        before = previous.get(type_)
        keep_time = before is not None and before.status == status and not (
            type_ == PROGRESSING and status == "True" and spec_changed)
        out.append(Condition(
            type=type_, status=status, reason=reason, message=message,  # type: ignore[arg-type]
            last_transition_time=before.last_transition_time if keep_time and before else iso(now),
            observed_generation=generation,
        ))
    out += [c for c in old if c.type not in want]
    return out


def _phase(plan: ModelPlan, conditions: list[Condition], matched: int) -> Phase:
    state = {c.type: c.status for c in conditions}
    if plan.profile is None:
        return "Degraded" if plan.keep else "Pending"
    if state.get(DEGRADED) == "True":
        return "Degraded"
    if matched == 0:
        return "Pending"
    if state.get(READY) == "True":
        return "Ready"
    return "Progressing"


def _events(old: list[Condition], new: list[Condition]) -> list[Event]:
    """Events for the transitions a person should see."""
    before = {c.type: (c.status, c.reason) for c in old}
    events = []
    for c in new:
        if before.get(c.type) == (c.status, c.reason):
            continue
        was = before.get(c.type, ("", ""))[0]
        if c.type == PROFILE_RESOLVED and c.status == "False":
            events.append(Event("Warning", c.reason, c.message))
        elif c.type == PROFILE_RESOLVED and was == "False":
            events.append(Event("Normal", "ProfileResolved", c.message))
        elif c.type == NODES_MATCHED and c.status == "False":
            events.append(Event("Warning", c.reason, c.message))
        elif c.type == SOURCE_TRUSTED and c.reason == "Unsigned" and c.status != "True" \
                and not _refused(new, c.reason):
            events.append(Event("Warning", c.reason, c.message))  # allowed, but a person should know
        elif c.type == SOURCE_TRUSTED and c.status == "True" and before.get(c.type) is not None:
            events.append(Event("Normal", "SourceTrusted", c.message))
        elif c.type == DEGRADED and c.status == "True":
            events.append(Event("Warning", c.reason, c.message))
        elif c.type == DEGRADED and was == "True":
            events.append(Event("Normal", "Recovered", "no longer degraded"))
        elif c.type == READY and c.status == "True":
            events.append(Event("Normal", "Ready", c.message))
        elif c.type == PROGRESSING and c.status == "True" and was != "True":
            events.append(Event("Normal", "RollingOut", c.message))
    return events


def _refused(conditions: list[Condition], reason: str) -> bool:
    """Degraded for the same reason: its own Warning Event says it, once is enough."""
    return any(c.type == DEGRADED and c.status == "True" and c.reason == reason for c in conditions)
