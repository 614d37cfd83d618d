"""Status: conditions per the API conventions, stable when nothing changes, Events on transitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from planning_support import factory_floor, fleet, model, observed_from

from edgewise.api.model import Rollout
from edgewise.api.resources import EdgeModel
from edgewise.api.rollout_status import ClassRollout, RolloutStatus
from edgewise.api.settings import OperatorSettings
from edgewise.api.status import Condition, EdgeModelStatus
from edgewise.core.plan import ModelPlan, plan_model
from edgewise.core.rollout.class_machine import ClassObservation, next_class_state
from edgewise.core.status import StatusResult, compute_status

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
NODES = fleet(jetson_orin=2, arm64_cpu=3, amd64_cpu=1)


def _plan(m: EdgeModel, nodes=NODES, existing=(), profile="ff") -> ModelPlan:
    return plan_model(
        m, factory_floor() if profile == "ff" else None, nodes, list(existing), OperatorSettings()
    )


def _with_status(m: EdgeModel, status: EdgeModelStatus) -> EdgeModel:
    return m.model_copy(update={"status": status})


def _rolled_out(plan: ModelPlan) -> dict:
    return {
        w.name: observed_from(w.manifest, desired=len(w.nodes), ready=len(w.nodes)) for w in plan.workloads
    }


def _conds(result: StatusResult) -> dict[str, Condition]:
    return {c.type: c for c in result.status.conditions or []}


def test_a_fresh_model_is_progressing_with_all_conditions_set() -> None:
    m = model()
    plan = _plan(m)
    just_created = {w.name: observed_from(w.manifest, observed_generation=0) for w in plan.workloads}
    result = compute_status(m, plan, just_created, T0, total_nodes=len(NODES))
    c = _conds(result)
    assert result.status.phase == "Progressing" and result.status.observed_generation == 1
    assert (c["ProfileResolved"].status, c["ProfileResolved"].reason) == ("True", "Found")
    assert (c["NodesMatched"].status, c["Progressing"].status, c["Ready"].status) == ("True", "True", "False")
    assert (c["Degraded"].status, c["Degraded"].reason) == ("False", "AsExpected")
    assert all(
        x.last_transition_time == "2026-01-01T12:00:00Z" and x.observed_generation == 1 for x in c.values()
    )
    assert result.status.ready == "0/6" and result.status.canary_version == "2.1.0"
    assert result.status.stable_version is None
    assert [e.reason for e in result.events] == ["RollingOut"]


def test_per_class_summary_has_counts_runtime_precision_and_digest() -> None:
    m = model()
    plan = _plan(m)
    result = compute_status(m, plan, _rolled_out(plan), T0, total_nodes=6)
    classes = {c.name: c for c in result.status.classes or []}
    orin = classes["jetson-orin"]
    assert (orin.runtime, orin.precision, orin.matched_nodes, orin.ready_pods) == (
        "triton-tensorrt",
        "fp16",
        2,
        2,
    )
    assert orin.workloads == ["defect-detector-jetson-orin-sm87-a"] and orin.compute_capabilities == ["8.7"]
    assert orin.artifact_digest == "a" * 64 and orin.version == "2.1.0"
    assert classes["arm-cpu"].matched_nodes == 3 and classes["x86-vnni"].image == "edgewise/onnxruntime:0.1.0"


def test_rolled_out_model_is_ready_and_stable() -> None:
    m = model()
    plan = _plan(m)
    first = compute_status(m, plan, {}, T0, total_nodes=6)
    result = compute_status(
        _with_status(m, first.status), plan, _rolled_out(plan), T0 + timedelta(minutes=1), 6
    )
    c = _conds(result)
    assert result.status.phase == "Ready" and result.status.ready == "6/6"
    assert (c["Ready"].status, c["Ready"].reason, c["Progressing"].reason) == (
        "True",
        "AllClassesReady",
        "RolloutComplete",
    )
    assert result.status.stable_version == "2.1.0" and result.status.canary_version is None
    assert c["Ready"].last_transition_time == "2026-01-01T12:01:00Z"
    assert (
        c["ProfileResolved"].last_transition_time == "2026-01-01T12:00:00Z"
    )  # unchanged status keeps its time
    assert [e.reason for e in result.events] == ["Ready"]


def test_recomputing_an_unchanged_state_yields_the_same_status_and_no_events() -> None:
    m = model()
    plan = _plan(m)
    done = compute_status(m, plan, _rolled_out(plan), T0, 6)
    again = compute_status(_with_status(m, done.status), plan, _rolled_out(plan), T0 + timedelta(hours=5), 6)
    assert again.status == done.status and again.events == () and again.requeue_after is None


def test_a_new_version_shows_as_canary_and_restarts_the_progress_clock() -> None:
    m = model()
    plan = _plan(m)
    ready = compute_status(m, plan, _rolled_out(plan), T0, 6).status
    m2 = _with_status(model(version="2.2.0", generation=2), ready)
    plan2 = _plan(m2)
    old_pods = {
        w.name: observed_from(w.manifest, desired=len(w.nodes), ready=len(w.nodes)) for w in plan.workloads
    }
    result = compute_status(m2, plan2, old_pods, T0 + timedelta(minutes=30), 6)
    c = _conds(result)
    assert result.status.stable_version == "2.1.0" and result.status.canary_version == "2.2.0"
    assert (
        c["Progressing"].status == "True" and c["Progressing"].last_transition_time == "2026-01-01T12:30:00Z"
    )
    assert result.status.phase == "Progressing" and result.status.observed_generation == 2


def test_missing_profile_keeps_workloads_and_says_so() -> None:
    m = model()
    before = _plan(m)
    existing = [observed_from(w.manifest, desired=len(w.nodes), ready=len(w.nodes)) for w in before.workloads]
    ready = compute_status(m, before, {w.name: w for w in existing}, T0, 6).status
    orphan = _plan(_with_status(m, ready), existing=existing, profile=None)
    result = compute_status(_with_status(m, ready), orphan, {w.name: w for w in existing}, T0, 6)
    c = _conds(result)
    assert (c["ProfileResolved"].status, c["ProfileResolved"].reason) == ("False", "ProfileNotFound")
    assert (
        "factory-floor not found" in c["ProfileResolved"].message
        and "nothing is deleted" in c["ProfileResolved"].message
    )
    assert (c["Degraded"].status, result.status.phase) == ("True", "Degraded")
    assert result.status.ready == "6/6" and result.status.stable_version == "2.1.0"
    assert {x.name for x in result.status.classes or []} == {"jetson-orin", "arm-cpu", "x86-vnni"}
    assert ("Warning", "ProfileNotFound") in [(e.type, e.reason) for e in result.events]


def test_missing_profile_with_nothing_running_is_pending() -> None:
    m = model()
    result = compute_status(m, _plan(m, profile=None), {}, T0, 6)
    assert result.status.phase == "Pending" and _conds(result)["ProfileResolved"].status == "False"


def test_profile_matching_no_nodes_reports_zero_counts_and_what_it_looks_for() -> None:
    m = model()
    riscv = fleet(amd64_cpu=1)
    riscv[0].labels["kubernetes.io/arch"] = "riscv64"
    plan = _plan(m, nodes=riscv)
    result = compute_status(m, plan, {}, T0, total_nodes=1)
    c = _conds(result)
    assert (c["NodesMatched"].status, c["NodesMatched"].reason) == ("False", "NoMatchingNodes")
    assert "1 nodes checked, 1 unmatched" in c["NodesMatched"].message
    assert "arm-cpu needs kubernetes.io/arch=arm64 and no nvidia.com/gpu.present" in c["NodesMatched"].message
    assert result.status.phase == "Pending" and result.status.ready == "0/0"
    assert result.status.matched_nodes == 0 and result.status.unmatched_nodes == 1
    assert all(x.matched_nodes == 0 for x in result.status.classes or [])
    assert ("Warning", "NoMatchingNodes") in [(e.type, e.reason) for e in result.events]


def test_progress_deadline_turns_a_stuck_rollout_degraded() -> None:
    m = model()
    plan = _plan(m)
    stuck = {w.name: observed_from(w.manifest, desired=len(w.nodes), ready=0) for w in plan.workloads}
    first = compute_status(m, plan, stuck, T0, 6)
    assert first.requeue_after == 10 * 60 + 1
    later = compute_status(_with_status(m, first.status), plan, stuck, T0 + timedelta(minutes=4), 6)
    assert later.requeue_after == 6 * 60 + 1 and later.status.phase == "Progressing"
    late = compute_status(_with_status(m, later.status), plan, stuck, T0 + timedelta(minutes=11), 6)
    c = _conds(late)
    assert (c["Degraded"].status, c["Degraded"].reason) == ("True", "ProgressDeadlineExceeded")
    assert late.status.phase == "Degraded" and "10m" in c["Degraded"].message
    assert ("Warning", "ProgressDeadlineExceeded") in [(e.type, e.reason) for e in late.events]


def test_conditions_owned_by_other_parts_of_the_operator_are_kept() -> None:
    m = model()
    foreign = Condition(
        type="OptimizationRejected",
        status="True",
        reason="GateFailed",
        message="x",
        last_transition_time="2025-01-01T00:00:00Z",
    )
    result = compute_status(_with_status(m, EdgeModelStatus(conditions=[foreign])), _plan(m), {}, T0, 6)
    assert _conds(result)["OptimizationRejected"] == foreign


def test_recovery_from_degraded_is_an_event() -> None:
    m = model()
    plan = _plan(m)
    missing = compute_status(m, _plan(m, profile=None), {}, T0, 6).status
    back = compute_status(_with_status(m, missing), plan, _rolled_out(plan), T0, 6)
    reasons = [e.reason for e in back.events]
    assert "Recovered" in reasons and "ProfileResolved" in reasons and "Ready" in reasons


def test_a_class_shows_the_precision_of_the_artifact_it_serves() -> None:
    from edgewise.core.class_artifact import ArtifactState, ClassArtifact
    from edgewise.core.runtimes import Artifact

    m = model()
    plan = _plan(m)
    arm = next(c for c in plan.classes if c.name == "arm-cpu")
    assert arm.precision == "int8"  # what the class asks for
    gated = ClassArtifact(ArtifactState.READY, size_bytes=123,
                          artifact=Artifact(uri="http://store/artifacts/sha256/" + "e" * 64, sha256="e" * 64,
                                            precision="fp32"),
                           summary="Optimized: fp32; int8 static QDQ rejected: latency 1.62x the original > 1.0x",
                           message="speed gate 1.0x: this machine has every CPU feature of the class")
    result = compute_status(m, plan, _rolled_out(plan), T0, total_nodes=6, artifacts={"arm-cpu": gated})
    cls = next(c for c in result.status.classes or [] if c.name == "arm-cpu")
    assert cls.precision == "fp32" and cls.artifact_size_bytes == 123
    assert cls.optimization and "rejected: latency 1.62x" in cls.optimization and "speed gate" in cls.optimization
    assert cls.attestation == "none"  # made without a signing key


def test_a_class_names_the_key_that_attested_its_artifact() -> None:
    from edgewise.core.class_artifact import ArtifactState, ClassArtifact
    from edgewise.core.runtimes import Artifact

    m = model()
    plan = _plan(m)
    attested = ClassArtifact(ArtifactState.READY, attested_by="0123456789abcdef" * 4,
                             artifact=Artifact(uri="http://store/artifacts/sha256/" + "e" * 64, sha256="e" * 64,
                                               precision="int8"))
    result = compute_status(m, plan, _rolled_out(plan), T0, total_nodes=6, artifacts={"arm-cpu": attested})
    classes = {c.name: c for c in result.status.classes or []}
    assert classes["arm-cpu"].attestation == "key 0123456789abcdef"
    assert classes["jetson-orin"].attestation is None  # no artifact reported for it


def test_a_revert_in_git_after_a_rollback_clears_degraded_and_the_model_is_ready() -> None:
    """docs/gitops.md: after a rollback, revert the commit in Git. Once the spec asks for what runs, the
    model is Ready and no longer Degraded (an Argo CD Application turns Healthy)."""
    served = model()  # 2.1.0 runs on every node
    plan = _plan(served)
    observed = _rolled_out(plan)
    names = [c.name for c in plan.classes]
    rolled_back = [ClassRollout(name=n, state="RolledBack", stable_revision=f"{n}-r1", stable_version="2.1.0",
                                failed_revision=f"{n}-r2", message="version 2.2.0 rolled back to 2.1.0: p95 up")
                   for n in names]
    bad = model(version="2.2.0", generation=2)
    after_rollback = compute_status(bad, plan, observed, T0, 6, rollout=RolloutStatus(classes=rolled_back))
    c = _conds(after_rollback)
    assert (c["Degraded"].status, c["Degraded"].reason, after_rollback.status.phase) == ("True", "RolledBack",
                                                                                         "Degraded")
    reverted = model(generation=3)
    spec = Rollout()
    back = [next_class_state(spec, cr, ClassObservation(name=cr.name, desired_revision=f"{cr.name}-r1",
                                                        desired_version="2.1.0", rolled_back_version="2.2.0"), T0)
            .state for cr in rolled_back]
    result = compute_status(_with_status(reverted, after_rollback.status), plan, observed,
                            T0 + timedelta(minutes=1), 6, rollout=RolloutStatus(classes=back))
    c = _conds(result)
    assert (c["Degraded"].status, c["Degraded"].reason) == ("False", "AsExpected")
    assert (c["Ready"].status, c["Ready"].reason, c["Progressing"].reason) == ("True", "AllClassesReady",
                                                                               "RolloutComplete")
    assert result.status.phase == "Ready" and result.status.stable_version == "2.1.0"
    assert "Recovered" in [e.reason for e in result.events]
