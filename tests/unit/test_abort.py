"""spec.rollout.abort, nodeTimeout and minSuccessTime: the per-node counts, the fleet rule, and advance()."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest
from planning_support import fleet, model, profile_of

from edgewise.api.commands import COMMAND_ANNOTATION, Command
from edgewise.api.model import AbortRule, Rollout
from edgewise.api.rollout_status import AnalysisRecord, ClassRollout, CohortStart, NodeTally, RolloutStatus
from edgewise.api.settings import OperatorSettings
from edgewise.core.durations import iso
from edgewise.core.observed import NodeInfo, RuntimePod, Workload
from edgewise.core.plan import plan_model
from edgewise.core.rollout import Observed, RolloutResult, advance, needs_pods
from edgewise.core.rollout.abort import NodeFacts, asked_at, judge, merge, node_facts
from edgewise.core.rollout.buckets import bucket_of
from edgewise.core.rollout.class_machine import ClassObservation, next_class_state
from edgewise.core.status import compute_status

T0 = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


# --- the fleet rule ----------------------------------------------------------------------------


def tally(version: str = "2.0", **counts: int) -> NodeTally:
    return NodeTally(version=version, revision="r", **counts)


def test_the_message_says_which_rule_fired_with_its_numbers() -> None:
    v = judge(AbortRule(max_failed_percent=25, min_nodes=5),
              "2.0", {"jetson": tally(tried=2, failed_analysis=2), "arm": tally(tried=6, timed_out=1)})
    assert v.fired and (v.failed, v.tried) == (3, 8)
    assert v.message == ("abort: 3 of 8 nodes that tried 2.0 failed (37.5% > maxFailedPercent 25, minNodes 5): "
                         "arm 1 timed out; jetson 2 failed analysis")


@pytest.mark.parametrize("failed, tried, min_nodes, fired", [
    (2, 8, 1, False),   # 25% is not more than 25%
    (3, 8, 1, True),    # 37.5%
    (3, 8, 9, False),   # fewer nodes tried than minNodes: not judged yet
    (3, 8, 8, True),    # exactly minNodes
    (0, 8, 1, False),
])
def test_percent_and_min_nodes_boundaries(failed: int, tried: int, min_nodes: int, fired: bool) -> None:
    v = judge(AbortRule(max_failed_percent=25, min_nodes=min_nodes), "2.0", {"arm": tally(tried=tried,
                                                                                           crash_looped=failed)})
    assert v.fired is fired and v.failed == failed


def test_max_failed_percent_zero_aborts_on_the_first_failure_and_other_versions_do_not_count() -> None:
    rule = AbortRule(max_failed_percent=0)
    assert judge(rule, "2.0", {"arm": tally(tried=50, failed_pods=1)}).fired
    assert not judge(rule, "2.0", {"arm": tally(version="1.9", tried=50, failed_pods=50)}).fired


def test_a_node_is_counted_once_and_counts_never_go_down() -> None:
    state = ClassRollout(name="arm", canary_revision="r", canary_version="2.0")
    t = merge(None, state, NodeFacts(tried=4, crash_looped=2, timed_out=1), analysis_failed=False)
    assert (t.tried, t.failed) == (4, 3)
    # The crash-looping pods were replaced and look healthy now: still failed.
    t = merge(t, state, NodeFacts(tried=4), analysis_failed=False)
    assert (t.crash_looped, t.timed_out, t.failed) == (2, 1, 3)
    # The class failed analysis: its remaining tried nodes count, the others are not counted twice.
    t = merge(t, state, NodeFacts(tried=4), analysis_failed=True)
    assert (t.failed_analysis, t.failed) == (1, 4)
    # A new revision starts its own tally.
    t = merge(t, state.model_copy(update={"canary_revision": "r3", "canary_version": "3.0"}), NodeFacts(tried=1),
              analysis_failed=False)
    assert (t.version, t.tried, t.failed) == ("3.0", 1, 0)


# --- per-node facts ----------------------------------------------------------------------------


def _nodes(n: int) -> list[NodeInfo]:
    return [NodeInfo(name=f"edge-{i}") for i in range(n)]


def _pod(node: str, **kw: Any) -> RuntimePod:
    return RuntimePod(name=f"p-{node}", uid=f"u-{node}", node=node, revision="r2", **kw)


def test_asked_at_is_the_start_of_the_step_that_moved_the_bucket() -> None:
    cohorts = [CohortStart(below_bucket=10, since=iso(T0)), CohortStart(below_bucket=50, since=iso(at(60)))]
    assert (asked_at(cohorts, 3), asked_at(cohorts, 10), asked_at(cohorts, 49), asked_at(cohorts, 50)) == \
        (T0, at(60), at(60), None)


def test_node_facts_count_failed_crash_looped_and_timed_out_nodes_of_the_cohort_only() -> None:
    nodes = _nodes(40)
    members = sorted(nodes, key=lambda n: bucket_of(n.name))
    cohort, outside = members[:6], members[6:]
    threshold = bucket_of(outside[0].name)
    assert bucket_of(cohort[-1].name) < threshold  # six nodes in the cohort, none beyond
    state = ClassRollout(name="arm", canary_revision="r2", canary_version="2.0", bucket_threshold=threshold,
                         cohorts=[CohortStart(below_bucket=threshold, since=iso(T0))])
    spec = Rollout.model_validate({"nodeTimeout": "1m", "analysis": {"maxRestarts": 1}})
    offline = replace(cohort[4], ready=False)
    members = [*cohort[:4], offline, *cohort[5:], *outside]
    pods = [_pod(cohort[0].name, phase="Failed"), _pod(cohort[1].name, restarts=2, ready=True),
            _pod(cohort[2].name, restarts=1, ready=True), _pod(cohort[3].name, ready=False),
            # cohort[4] is NotReady with no pod yet; cohort[5] has no pod; a pod outside the cohort is ignored
            _pod(outside[0].name, phase="Failed")]
    before = node_facts(spec, state, members, pods, at(30))
    assert before == NodeFacts(tried=4, failed_pods=1, crash_looped=1, next_timeout_in=30)
    after = node_facts(spec, state, members, pods, at(60))
    # cohort[3] (pod never Ready), [4] (NotReady) and [5] (no pod) timed out; [4] is NotReady, so only
    # two Ready nodes stop holding the step (a NotReady node never did).
    assert after == NodeFacts(tried=6, failed_pods=1, crash_looped=1, timed_out=3, timed_out_ready=2)
    without_timeout = node_facts(Rollout(), state, members, pods, at(3600))
    assert (without_timeout.tried, without_timeout.timed_out) == (4, 0)


# --- minSuccessTime and nodeTimeout in the class machine ---------------------------------------

BUCKETS_10 = (3, 12, 25, 31, 47, 52, 68, 71, 85, 99)


def _obs(ready: int = 0, **kw: Any) -> ClassObservation:
    return ClassObservation(name="arm", desired_revision="r2", desired_version="2.0", buckets=BUCKETS_10,
                            canary_ready=ready, **kw)


def _spec(**overrides: Any) -> Rollout:
    base = {"steps": [{"percent": 10}, {"percent": 50}, {"percent": 100}],
            "analysis": {"interval": "10s", "failureLimit": 1}, "progressDeadline": "5m"}
    return Rollout.model_validate({**base, **overrides})


def _verdict(outcome: str, t: dt.datetime) -> AnalysisRecord:
    return AnalysisRecord(time=iso(t), outcome=outcome, message=f"{outcome} at {iso(t)}")


STABLE = ClassRollout(name="arm", stable_revision="r1", stable_version="1.0")


def test_a_passed_step_soaks_for_min_success_time_before_the_next_one() -> None:
    s = _spec(minSuccessTime="1m")
    d = next_class_state(s, STABLE, _obs(), T0)
    assert d.state.cohorts == [CohortStart(below_bucket=4, since=iso(T0))]
    d = next_class_state(s, d.state, _obs(ready=1), at(16), verdict=_verdict("pass", at(16)))
    assert d.state.step_index == 0 and d.state.soak_until == iso(at(76))
    assert "passed; soaking until 2026-11-22T12:01:16Z (minSuccessTime 1m)" in d.state.message
    assert d.requeue_after == pytest.approx(60) and [e.reason for e in d.events] == ["Soaking"]
    # Still soaking; analysis goes on meanwhile.
    d = next_class_state(s, d.state, _obs(ready=1), at(50), verdict=_verdict("pass", at(50)))
    assert d.state.step_index == 0 and d.state.percent == 10 and not d.events
    # The soak is over: the next step starts, and records when it asked its nodes.
    d = next_class_state(s, d.state, _obs(ready=1), at(76))
    assert d.state.step_index == 1 and d.state.percent == 50 and d.state.soak_until is None
    assert [c.since for c in d.state.cohorts or []] == [iso(T0), iso(at(76))]


def test_a_failure_during_the_soak_still_rolls_back() -> None:
    s = _spec(minSuccessTime="10m")
    d = next_class_state(s, STABLE, _obs(), T0)
    d = next_class_state(s, d.state, _obs(ready=1), at(16), verdict=_verdict("pass", at(16)))
    d = next_class_state(s, d.state, _obs(ready=1), at(30), verdict=_verdict("fail", at(30)))
    d = next_class_state(s, d.state, _obs(ready=1), at(40), verdict=_verdict("fail", at(40)))
    assert d.state.state == "RolledBack" and d.failed and d.state.soak_until is None and d.state.cohorts is None


def test_timed_out_nodes_do_not_hold_the_step() -> None:
    s = _spec(steps=[{"percent": 50}, {"percent": 100}], nodeTimeout="1m")
    d = next_class_state(s, STABLE, _obs(), T0, verdict=None)
    d = next_class_state(s, d.state, _obs(ready=4), at(20), verdict=_verdict("pass", at(20)))
    assert d.state.percent == 50 and "4/5 canary pods ready" in d.state.message
    d = next_class_state(s, d.state, _obs(ready=4, timed_out_canary_nodes=1), at(61))
    assert d.state.percent == 100


# --- advance(): the fleet-wide rollback --------------------------------------------------------

SETTINGS = OperatorSettings()
PROFILE = profile_of({"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"}, "runtime": "onnxruntime",
                      "precision": "fp32"},
                     {"name": "x86", "nodeSelector": {"kubernetes.io/arch": "amd64"}, "runtime": "onnxruntime",
                      "precision": "fp32"})
NODES = fleet(arm64_cpu=4, amd64_cpu=4)
ROLLOUT = {"steps": [{"percent": 50}, {"percent": 100}], "analysis": {"interval": "5s", "failureLimit": 0},
           "switch": "Replace", "abort": {"maxFailedPercent": 25, "minNodes": 3}}


def _live(result: RolloutResult) -> list[Workload]:
    return [Workload(name=w.name, labels=dict(w.manifest["metadata"]["labels"]),
                     annotations=dict(w.manifest["metadata"]["annotations"]), uid=f"uid-{w.name}", generation=1,
                     observed_generation=1, desired=len(w.nodes), ready=len(w.nodes),
                     template=w.manifest["spec"]["template"]) for w in result.apply]


def _run(version: str, status: RolloutStatus | None, existing: list[Workload], seconds: float = 0,
         pods: list[RuntimePod] | None = None, verdicts: dict[str, AnalysisRecord] | None = None,
         command: Command | None = None, **rollout: Any) -> RolloutResult:
    m = model(version=version, profile_ref="p", rollout={**ROLLOUT, **rollout})
    if command is not None:
        m = m.model_copy(update={"metadata": m.metadata.model_copy(
            update={"annotations": {COMMAND_ANNOTATION: command.to_annotation()}})})
    if status is not None:  # through the wire format, as an operator restart would read it
        status = RolloutStatus.model_validate(status.to_api())
        m = m.model_copy(update={"status": m.status.model_copy(update={"rollout": status})})
    plan = plan_model(m, PROFILE, NODES, existing, SETTINGS)
    return advance(m, plan, Observed(NODES, existing, pods=pods), verdicts, at(seconds))


def _canary_pods(result: RolloutResult, cls: str, **kw: Any) -> list[RuntimePod]:
    """A pod of the class's canary on every node of its cohort."""
    state = result.status.class_state(cls)  # type: ignore[union-attr]
    assert state and state.canary_revision
    slot = "b" if state.stable_slot == "a" else "a"
    name = f"defect-detector-{cls}-{slot}"
    arch = "arm64" if cls == "arm" else "amd64"
    return [RuntimePod(name=f"{name}-{n.name}", uid=f"u-{n.name}", node=n.name, owner_uid=f"uid-{name}",
                       revision=state.canary_revision, **kw)
            for n in NODES if n.labels["kubernetes.io/arch"] == arch and bucket_of(n.name) < state.bucket_threshold]


def _canaries(**rollout: Any) -> tuple[RolloutResult, list[Workload]]:
    first = _run("1", None, [], **rollout)
    second = _run("2", first.status, _live(first), **rollout)
    return second, _live(second)


def test_crash_loops_on_enough_nodes_roll_every_class_back_with_the_numbers() -> None:
    second, existing = _canaries()
    arm_pods = _canary_pods(second, "arm", restarts=3)
    x86_pods = _canary_pods(second, "x86", ready=True)
    tried = len(arm_pods) + len(x86_pods)
    assert len(arm_pods) >= 2 and tried >= 3
    third = _run("2", second.status, existing, 10, pods=arm_pods + x86_pods)
    status = third.status
    assert status is not None and status.aborted is not None
    message = (f"abort: {len(arm_pods)} of {tried} nodes that tried 2 failed "
               f"({100 * len(arm_pods) / tried:.1f}".removesuffix(".0")
               + f"% > maxFailedPercent 25, minNodes 3): arm {len(arm_pods)} crash-looped")
    assert status.aborted.message == message and status.aborted.version == "2"
    for cls in ("arm", "x86"):
        state = status.class_state(cls)
        assert state and state.state == "RolledBack" and state.canary_revision is None
        assert state.failed_revision and message in state.message
    assert status.history and (status.history[-1].outcome, status.history[-1].reason) == ("RolledBack", message)
    assert sorted(e.message.split(":")[0] for e in third.events if e.reason == "RolledBack") == \
        ["class arm", "class x86"]
    # Each class's stable DaemonSet widens back to every node.
    assert {w.name for w in third.apply} >= {"defect-detector-arm-a", "defect-detector-x86-a"}
    # The Degraded condition says which rule fired, with its numbers, and so does its Event.
    m = model(version="2", profile_ref="p", rollout=ROLLOUT)
    st = compute_status(m, third.plan, {w.name: w for w in existing}, at(10), total_nodes=len(NODES),
                        rollout=status)
    degraded = next(c for c in st.status.conditions or [] if c.type == "Degraded")
    assert (degraded.status, degraded.reason, degraded.message) == ("True", "AbortRuleFired", message)
    assert ("Warning", "AbortRuleFired", message) in [(e.type, e.reason, e.message) for e in st.events]
    # The next reconcile (a restarted operator: everything comes from status) changes nothing and says nothing.
    after = [w for w in _live(third) if w.name not in third.delete]
    fourth = _run("2", status, after, 20, pods=arm_pods + x86_pods)
    assert fourth.status == status and not fourth.events
    # `kubectl edgewise retry` lifts it: the version starts again, with fresh counts.
    retried = _run("2", fourth.status, after, 30, command=Command(verb="retry", id="r1"))
    assert retried.status is not None and retried.status.aborted is None
    for cls in ("arm", "x86"):
        state = retried.status.class_state(cls)
        assert state and state.canary_version == "2" and state.tally is not None and state.tally.tried == 0


def test_below_min_nodes_the_rule_waits_and_the_tally_is_in_status() -> None:
    second, existing = _canaries(abort={"maxFailedPercent": 25, "minNodes": 50})
    arm_pods = _canary_pods(second, "arm", restarts=3)
    third = _run("2", second.status, existing, 10, pods=arm_pods, abort={"maxFailedPercent": 25, "minNodes": 50})
    assert third.status is not None and third.status.aborted is None
    arm = third.status.class_state("arm")
    assert arm and arm.canary_revision and arm.tally and arm.tally.crash_looped == arm.tally.tried == len(arm_pods)


def test_a_class_rolled_back_by_its_own_analysis_counts_for_the_fleet() -> None:
    """Independent classes: arm fails analysis and rolls back on its own; its nodes still count, and once
    enough nodes tried the rule takes x86 back too."""
    rule = {"maxFailedPercent": 40, "minNodes": 3}
    second, existing = _canaries(abort=rule)
    arm_pods = _canary_pods(second, "arm", ready=True)
    x86_pods = _canary_pods(second, "x86", ready=True)
    fail = AnalysisRecord(time=iso(at(10)), outcome="fail", message="p95 99 ms")
    third = _run("2", second.status, existing, 10, pods=arm_pods + x86_pods, verdicts={"arm": fail}, abort=rule)
    assert third.status is not None
    arm, x86 = third.status.class_state("arm"), third.status.class_state("x86")
    assert arm and arm.state == "RolledBack" and arm.tally and arm.tally.failed_analysis == len(arm_pods)
    assert (len(arm_pods), len(x86_pods)) == (3, 2)  # the fleet's buckets at 50%: 3 of 5 failed, 60% > 40%
    assert x86 and x86.state == "RolledBack" and third.status.aborted is not None
    assert third.status.aborted.message.endswith(": arm 3 failed analysis")
    assert "analysis failed 1 times" in arm.message  # arm keeps its own reason; x86 gets the rule's
    assert x86.message.endswith(third.status.aborted.message)


def test_a_node_that_stays_offline_times_out_the_step_goes_on_and_it_counts_as_failed() -> None:
    rule = {"abort": {"maxFailedPercent": 60, "minNodes": 1}, "nodeTimeout": "1m", "analysis": {
        "interval": "5s", "failureLimit": 0, "provider": "none"}}
    second, existing = _canaries(**rule)
    x86_pods = _canary_pods(second, "x86", ready=True)
    stuck = replace(x86_pods[0], ready=False)  # its pod never gets Ready on a Ready node
    x86_pods[0] = stuck
    ready = len(x86_pods) - 1  # what the canary DaemonSet's status says
    existing = [replace(w, desired=len(x86_pods), ready=ready) if w.name == "defect-detector-x86-b" else w
                for w in existing]
    pods = _canary_pods(second, "arm", ready=True) + x86_pods
    waiting = _run("2", second.status, existing, 30, pods=pods, **rule)
    x86 = waiting.status.class_state("x86")  # type: ignore[union-attr]
    assert x86 and x86.percent == 50 and "canary pods ready" in x86.message
    assert waiting.requeue_after is not None and waiting.requeue_after <= 30
    later = _run("2", waiting.status, existing, 61, pods=pods, **rule)
    x86 = later.status.class_state("x86")  # type: ignore[union-attr]
    assert x86 and x86.percent == 100 and x86.tally and x86.tally.timed_out == 1
    assert later.status.aborted is None  # type: ignore[union-attr]


def test_pods_are_needed_only_with_a_rule_and_a_canary() -> None:
    second, _ = _canaries()
    m = model(version="2", profile_ref="p", rollout=ROLLOUT)
    with_canary = m.model_copy(update={"status": m.status.model_copy(update={"rollout": second.status})})
    assert needs_pods(with_canary) and not needs_pods(m)
    plain = model(version="2", profile_ref="p", rollout={"steps": [{"percent": 100}]})
    assert not needs_pods(plain.model_copy(update={"status": with_canary.status}))


def test_kubectl_edgewise_status_shows_the_counts_and_the_rule() -> None:
    from edgewise.cli.kubectl_plugin import render_status

    second, existing = _canaries()
    third = _run("2", second.status, existing, 10, pods=_canary_pods(second, "arm", restarts=3)
                 + _canary_pods(second, "x86", ready=True))
    m = model(version="2", profile_ref="p", rollout=ROLLOUT)
    st = compute_status(m, third.plan, {w.name: w for w in existing}, at(10), total_nodes=len(NODES),
                        rollout=third.status)
    text = render_status({**m.to_api(), "status": st.status.to_api()})
    assert "nodes that tried 2: 3 (3 crash-looped)" in text and "nodes that tried 2: 2, none failed" in text
    assert "Degraded=True AbortRuleFired: abort: 3 of 5 nodes that tried 2 failed" in text


def test_promote_skips_the_soak() -> None:
    s = _spec(minSuccessTime="1h")
    d = next_class_state(s, STABLE, _obs(), T0)
    d = next_class_state(s, d.state, _obs(ready=1), at(16), verdict=_verdict("pass", at(16)))
    assert d.state.soak_until == iso(at(3616))
    d = next_class_state(s, d.state, _obs(ready=1), at(20), command="promote")
    assert d.state.step_index == 1 and d.state.percent == 50
