"""The per-class canary state machine and node buckets, exhaustively, without a cluster."""

from __future__ import annotations

import datetime as dt

import pytest

from edgewise.api.model import Rollout
from edgewise.api.rollout_status import AnalysisRecord, ClassRollout
from edgewise.core.durations import iso
from edgewise.core.rollout.buckets import BUCKETS, bucket_of, threshold
from edgewise.core.rollout.class_machine import ClassObservation, analysis_due, next_class_state, roll_back_all
from edgewise.core.rollout.sites import cohort_size

T0 = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
BUCKETS_10 = (3, 12, 25, 31, 47, 52, 68, 71, 85, 99)  # a class of ten nodes


def spec(**overrides) -> Rollout:
    base = {"steps": [{"percent": 10}, {"pause": {"duration": "1m"}}, {"percent": 50}, {"percent": 100}],
            "analysis": {"interval": "10s", "failureLimit": 1}, "progressDeadline": "5m"}
    base.update(overrides)
    return Rollout.model_validate(base)


def obs(rev: str = "r2", version: str = "2.0", ready: int = 0, not_ready: int = 0, **kw) -> ClassObservation:
    return ClassObservation(name="arm", desired_revision=rev, desired_version=version,
                            buckets=kw.pop("buckets", BUCKETS_10), canary_ready=ready,
                            not_ready_canary_nodes=not_ready, **kw)


def stable(**kw) -> ClassRollout:
    return ClassRollout(name="arm", stable_revision="r1", stable_version="1.0", **kw)


def verdict(outcome: str, at: dt.datetime = T0, message: str = "") -> AnalysisRecord:
    return AnalysisRecord(time=iso(at), outcome=outcome, message=message or outcome)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


# --- buckets -----------------------------------------------------------------------------------


def test_bucket_is_a_stable_hash_in_range() -> None:
    # Pinned: a different hash would move nodes between cohorts on an operator upgrade.
    assert (bucket_of("arm64-cpu-0"), bucket_of("jetson-orin-0")) == (12, 41)
    values = {bucket_of(f"node-{i}") for i in range(2000)}
    assert min(values) >= 0 and max(values) < BUCKETS and len(values) == BUCKETS


@pytest.mark.parametrize("percent, expected_nodes", [(1, 1), (10, 1), (20, 2), (50, 5), (99, 10), (100, 10)])
def test_threshold_selects_at_least_the_percentage_and_one_node(percent: int, expected_nodes: int) -> None:
    t = threshold(percent, BUCKETS_10)
    assert cohort_size(tuple((b, "") for b in BUCKETS_10), t, frozenset()) == expected_nodes


def test_threshold_edges() -> None:
    assert threshold(0, BUCKETS_10) == 0
    assert threshold(100, BUCKETS_10) == BUCKETS
    assert threshold(10, [77, 90, 91]) == 78  # 10% of 3 nodes is one node, even with high buckets
    assert threshold(30, []) == 30


# --- the happy path ----------------------------------------------------------------------------


def test_first_revision_goes_straight_to_every_node() -> None:
    d = next_class_state(spec(), None, obs(rev="r1", version="1.0"), T0)
    assert d.state.stable_revision == "r1" and d.state.state == "Stable" and d.state.canary_revision is None
    assert [e.reason for e in d.events] == ["Deployed"]


def test_a_good_revision_walks_every_step_and_flips_the_slot() -> None:
    s = spec()
    d = next_class_state(s, stable(), obs(), T0)
    assert d.state.canary_revision == "r2" and d.state.percent == 10 and d.state.canary_nodes == 1
    assert d.stage == (0, 4)  # bucket 3 is the one canary node; stage it before switching
    assert [e.reason for e in d.events] == ["RolloutStarted", "StepChanged"]
    # Canary not ready yet: wait.
    d = next_class_state(s, d.state, obs(ready=0), at(5))
    assert d.state.step_index == 0 and "0/1 canary pods ready" in d.state.message and d.requeue_after
    # Ready but not analysed: wait for a passing analysis.
    d = next_class_state(s, d.state, obs(ready=1), at(6))
    assert d.state.step_index == 0 and "a passing analysis" in d.state.message
    d = next_class_state(s, d.state, obs(ready=1), at(16), verdict=verdict("pass", at(16)))
    assert d.state.step_index == 1 and d.state.state == "Paused" and d.requeue_after == pytest.approx(60)
    d = next_class_state(s, d.state, obs(ready=1), at(50))
    assert d.state.state == "Paused" and d.state.step_index == 1
    d = next_class_state(s, d.state, obs(ready=1), at(80))
    assert d.state.step_index == 2 and d.state.percent == 50 and d.state.canary_nodes == 5
    assert d.stage == (4, threshold(50, BUCKETS_10))
    d = next_class_state(s, d.state, obs(ready=5), at(90), verdict=verdict("pass", at(90)))
    assert d.state.percent == 100 and d.state.bucket_threshold == BUCKETS and d.state.stable_nodes == 0
    d = next_class_state(s, d.state, obs(ready=10), at(100), verdict=verdict("pass", at(100)))
    assert d.state.state == "Stable" and d.state.stable_revision == "r2" and d.state.stable_slot == "b"
    assert d.state.canary_revision is None and d.finished == "Succeeded"
    assert d.events[-1].reason == "Promoted"


def test_without_analysis_a_step_needs_only_ready_pods() -> None:
    s = spec(steps=[{"percent": 50}, {"percent": 100}])
    d = next_class_state(s, stable(), obs(analysis_enabled=False), T0)
    d = next_class_state(s, d.state, obs(ready=5, analysis_enabled=False), at(1))
    assert d.state.percent == 100
    d = next_class_state(s, d.state, obs(ready=10, analysis_enabled=False), at(2))
    assert d.state.stable_revision == "r2"


# --- failure and rollback ----------------------------------------------------------------------


def _at_first_step(s: Rollout) -> ClassRollout:
    return next_class_state(s, stable(), obs(), T0).state


def test_failures_beyond_the_limit_roll_back_and_the_revision_is_not_retried() -> None:
    s = spec()
    state = _at_first_step(s)
    d = next_class_state(s, state, obs(ready=1), at(10), verdict=verdict("fail", at(10), "p95 48 ms vs 9 ms"))
    assert d.state.failures == 1 and d.state.canary_revision == "r2"  # limit 1: one failure tolerated
    assert d.events[0].type == "Warning" and "p95 48 ms" in d.events[0].message
    d = next_class_state(s, d.state, obs(ready=1), at(20), verdict=verdict("fail", at(20), "p95 50 ms vs 9 ms"))
    assert d.state.state == "RolledBack" and d.state.canary_revision is None and d.state.percent == 0
    assert d.state.failed_revision == "r2" and d.failed and d.finished == "RolledBack"
    assert "p95 50 ms" in d.state.message and d.state.stable_nodes == 10
    # The same spec again: stays rolled back, no new canary.
    again = next_class_state(s, d.state, obs(), at(30))
    assert again.state.canary_revision is None and again.state.state == "RolledBack" and not again.events
    # A user says retry: a new canary of the same revision starts.
    retried = next_class_state(s, again.state, obs(), at(40), command="retry")
    assert retried.state.canary_revision == "r2" and retried.state.percent == 10
    assert [e.reason for e in retried.events][:2] == ["Retry", "RolloutStarted"]
    # A new spec (r3) is tried without a retry.
    fresh = next_class_state(s, d.state, obs(rev="r3", version="3.0"), at(50))
    assert fresh.state.canary_revision == "r3"


def _rolled_back(s: Rollout) -> ClassRollout:
    state = next_class_state(s, _at_first_step(s), obs(ready=1), at(10), verdict=verdict("fail", at(10))).state
    state = next_class_state(s, state, obs(ready=1), at(20), verdict=verdict("fail", at(20))).state
    assert state.state == "RolledBack" and state.failed_revision == "r2"
    return state


def test_a_revert_to_the_stable_revision_after_a_rollback_makes_the_class_stable() -> None:
    # docs/gitops.md: after a rollback, revert the commit in Git. The spec then asks for exactly what runs.
    s = spec()
    back = next_class_state(s, _rolled_back(s), obs(rev="r1", version="1.0", rolled_back_version="2.0"), at(30))
    assert back.state.state == "Stable" and back.state.canary_revision is None
    assert back.state.stable_revision == "r1" and back.state.stable_nodes == 10
    assert back.state.message == "the spec is back on stable version 1.0 after the rollback of 2.0"
    assert [(e.type, e.reason) for e in back.events] == [("Normal", "BackOnStable")]
    assert "class arm: the spec is back on stable version 1.0" in back.events[0].message
    assert back.finished is None and not back.failed  # no revision ends: the rolled-back one already did
    # Looked at again: nothing changes, no Event.
    again = next_class_state(s, back.state, obs(rev="r1", version="1.0", rolled_back_version="2.0"), at(40))
    assert again.state == back.state and not again.events


def test_after_a_revert_the_failed_revision_is_still_not_retried_without_retry() -> None:
    s = spec()
    back = next_class_state(s, _rolled_back(s), obs(rev="r1", version="1.0"), at(30)).state
    assert back.failed_revision == "r2" and "after a rollback" in back.message
    # The bad version re-applied in Git: refused, and the class says why.
    refused = next_class_state(s, back, obs(), at(40))
    assert refused.state.state == "RolledBack" and refused.state.canary_revision is None and not refused.stage
    assert "2.0 was rolled back on this class and is not retried until `kubectl edgewise retry`" in \
        refused.state.message and "stable 1.0 keeps serving" in refused.state.message
    assert [(e.type, e.reason) for e in refused.events] == [("Warning", "NotRetried")]
    assert not next_class_state(s, refused.state, obs(), at(50)).events  # said once
    retried = next_class_state(s, refused.state, obs(), at(60), command="retry")
    assert retried.state.canary_revision == "r2" and retried.state.failed_revision is None


def test_a_rolled_back_class_waiting_for_the_specs_artifact_is_not_back_on_stable() -> None:
    # The spec moved on to a version whose artifact is still being made: the class keeps what it runs,
    # which is not the spec going back to it.
    s = spec()
    rolled = _rolled_back(s)
    d = next_class_state(s, rolled, obs(rev="r1", version="1.0", artifact_pending=True), at(30))
    assert d.state == rolled and not d.events


def test_all_or_nothing_classes_rolled_back_together_are_stable_after_a_revert() -> None:
    s = spec()
    waiting = next_class_state(s, _at_first_step(s), obs(rev="r3", version="3.0", canary_slot_leftover=LEFTOVER),
                               at(10)).state
    canary = next_class_state(s, stable(), obs(rev="r3", version="3.0"), at(10)).state
    observed = {n: obs(rev="r3", version="3.0") for n in ("arm", "x86")}
    out = roll_back_all(s, {"jetson": stable(), "arm": waiting, "x86": canary}, "jetson", observed,
                        frozenset({"arm"}))
    assert {n: d.state.state for n, d in out.items()} == {"arm": "RolledBack", "x86": "RolledBack"}
    for d in out.values():
        back = next_class_state(s, d.state, obs(rev="r1", version="1.0", rolled_back_version="3.0"), at(20))
        assert back.state.state == "Stable" and back.state.failed_revision == "r3"
        assert [e.reason for e in back.events] == ["BackOnStable"]


def test_inconclusive_measurements_neither_pass_nor_fail() -> None:
    s = spec()
    d = next_class_state(s, _at_first_step(s), obs(ready=1), at(10), verdict=verdict("inconclusive", at(10)))
    assert d.state.failures == 0 and d.state.passes == 0 and d.state.step_index == 0
    assert d.state.last_analysis and d.state.last_analysis.outcome == "inconclusive"


def test_without_auto_rollback_a_failing_canary_is_degraded_and_stays() -> None:
    s = spec(autoRollback=False, analysis={"interval": "10s", "failureLimit": 0})
    d = next_class_state(s, _at_first_step(s), obs(ready=1), at(10), verdict=verdict("fail", at(10)))
    assert d.state.state == "Degraded" and d.state.canary_revision == "r2" and not d.failed
    assert "kubectl edgewise abort" in d.state.message


def test_past_the_progress_deadline_the_class_is_degraded_not_hung() -> None:
    s = spec(progressDeadline="2m")
    state = _at_first_step(s)
    d = next_class_state(s, state, obs(ready=0, not_ready=0), at(150))
    assert d.state.state == "Degraded" and "progressDeadline 2m" in d.state.message
    assert [e.reason for e in d.events] == ["ProgressDeadlineExceeded"]
    assert not next_class_state(s, d.state, obs(ready=0), at(160)).events  # said once
    # It recovers by itself when the pods come.
    d = next_class_state(s, d.state, obs(ready=1), at(170), verdict=verdict("pass", at(170)))
    assert d.state.step_index == 1


def test_not_ready_canary_nodes_are_deferred() -> None:
    s = spec(steps=[{"percent": 50}, {"percent": 100}])
    state = next_class_state(s, stable(), obs(), T0).state
    d = next_class_state(s, state, obs(ready=3, not_ready=2), at(10), verdict=verdict("pass", at(10)))
    assert d.state.percent == 100  # 3 of 5 ready, the 2 NotReady ones don't hold the step
    d2 = next_class_state(s, state, obs(ready=3, not_ready=1), at(10), verdict=verdict("pass", at(10)))
    assert d2.state.percent == 50 and "1 NotReady node(s) deferred" in d2.state.message


def test_spec_back_on_stable_removes_the_canary() -> None:
    s = spec()
    d = next_class_state(s, _at_first_step(s), obs(rev="r1", version="1.0"), at(10))
    assert d.state.canary_revision is None and d.state.state == "Stable" and d.state.percent == 0
    assert d.events[0].reason == "CanaryRemoved"


LEFTOVER = "slot b still has DaemonSet(s) m-arm-b of revision r2"


def test_a_newer_revision_drains_the_canary_in_flight_before_it_starts() -> None:
    # Re-templating the canary's DaemonSet would leave its running (OnDelete) pods on 2.0, measured as 3.0.
    s = spec()
    d = next_class_state(s, _at_first_step(s), obs(rev="r3", version="3.0", canary_slot_leftover=LEFTOVER), at(10))
    assert d.state.canary_revision is None and d.state.percent == 0 and d.state.stable_nodes == 10
    assert d.state.state == "Progressing" and d.waiting_to_start and d.finished == "Superseded"
    assert [e.reason for e in d.events] == ["CanarySuperseded"]
    assert "canary 2.0 superseded by version 3.0" in d.events[0].message
    assert "3.0 starts once the previous canary's nodes are back on stable 1.0" in d.state.message
    assert LEFTOVER in d.state.message and d.requeue_after
    # Its nodes switching back (make-before-break), then its DaemonSet not deleted yet: still waiting.
    d = next_class_state(s, d.state, obs(rev="r3", version="3.0", switch_pending=True, switching="1 node(s) "
                                         "switching"), at(12))
    assert d.state.canary_revision is None and d.waiting_to_start and "1 node(s) switching" in d.state.message
    d = next_class_state(s, d.state, obs(rev="r3", version="3.0", canary_slot_leftover=LEFTOVER), at(14))
    assert d.state.canary_revision is None and d.waiting_to_start and not d.events
    # The slot is empty: 3.0 starts there from its first step.
    d = next_class_state(s, d.state, obs(rev="r3", version="3.0"), at(16))
    assert d.state.canary_revision == "r3" and d.state.step_index == 0 and d.state.percent == 10
    assert [e.reason for e in d.events] == ["RolloutStarted", "StepChanged"] and not d.waiting_to_start


def test_a_superseded_canary_that_never_reached_a_node_is_replaced_at_once() -> None:
    s = spec(steps=[{"pause": {}}, {"percent": 100}])
    state = next_class_state(s, stable(), obs(), T0).state
    assert state.canary_revision == "r2" and state.percent == 0  # no canary DaemonSet yet
    d = next_class_state(s, state, obs(rev="r3", version="3.0"), at(10))
    assert d.state.canary_revision == "r3" and not d.waiting_to_start
    assert [e.reason for e in d.events] == ["CanarySuperseded", "RolloutStarted"]


def test_a_new_revision_waits_for_a_rolled_back_canarys_daemonset_even_without_a_pending_switch() -> None:
    # Replace mode has no make-before-break switch to wait for; a DaemonSet whose deletion failed (or
    # any leftover in the slot) must still not be re-templated over its pods.
    s = spec(analysis={"interval": "10s", "failureLimit": 0})
    rolled = next_class_state(s, _at_first_step(s), obs(ready=1), at(10), verdict=verdict("fail", at(10))).state
    assert rolled.state == "RolledBack"
    d = next_class_state(s, rolled, obs(rev="r3", version="3.0", canary_slot_leftover=LEFTOVER), at(20))
    assert d.state.canary_revision is None and d.state.state == "RolledBack" and d.waiting_to_start
    assert LEFTOVER in d.state.message
    d = next_class_state(s, d.state, obs(rev="r3", version="3.0"), at(22))
    assert d.state.canary_revision == "r3"


def test_all_or_nothing_a_class_waiting_to_start_does_not_start_the_failed_revision() -> None:
    s = spec()
    waiting = next_class_state(s, _at_first_step(s), obs(rev="r3", version="3.0", canary_slot_leftover=LEFTOVER),
                               at(10)).state
    other = obs(rev="r3", version="3.0", canary_slot_leftover=LEFTOVER)
    out = roll_back_all(s, {"jetson": stable(), "arm": waiting}, "jetson", {"arm": other}, frozenset({"arm"}))
    d = out["arm"]
    assert d.state.failed_revision == "r3" and d.state.state == "RolledBack" and not d.waiting_to_start
    assert "3.0 not started: class jetson failed" in d.state.message and d.finished == "RolledBack"
    # Once its slot is empty it stays on stable: the revision is not retried without a new spec or `retry`.
    assert next_class_state(s, d.state, obs(rev="r3", version="3.0"), at(20)).state.canary_revision is None


# --- commands ----------------------------------------------------------------------------------


def test_pause_without_duration_waits_for_promote() -> None:
    s = spec(steps=[{"percent": 10}, {"pause": {}}, {"percent": 100}])
    d = next_class_state(s, _at_first_step(s), obs(ready=1), at(10), verdict=verdict("pass", at(10)))
    assert d.state.state == "Paused" and "kubectl edgewise promote" in d.state.message and not d.requeue_after
    assert next_class_state(s, d.state, obs(ready=1), at(3600)).state.state == "Paused"
    d = next_class_state(s, d.state, obs(ready=1), at(3601), command="promote")
    assert d.state.percent == 100


def test_user_pause_resume_abort_and_promote_full() -> None:
    s = spec()
    state = _at_first_step(s)
    paused = next_class_state(s, state, obs(ready=1), at(10), verdict=verdict("pass", at(10)), command="pause")
    assert paused.state.state == "Paused" and paused.state.step_index == 0
    resumed = next_class_state(s, paused.state, obs(ready=1), at(20), command="resume")
    assert resumed.state.step_index == 1  # the pass recorded while paused still counts
    aborted = next_class_state(s, resumed.state, obs(ready=1), at(30), command="abort")
    assert aborted.state.state == "RolledBack" and aborted.finished == "Aborted" and not aborted.failed
    full = next_class_state(s, state, obs(ready=1), at(40), command="promote-full")
    assert full.state.stable_revision == "r2" and full.state.state == "Stable"


def test_analysis_is_due_only_for_an_active_canary_each_interval() -> None:
    s = spec()
    assert not analysis_due(s, stable(), T0)
    state = _at_first_step(s)
    assert analysis_due(s, state, at(1))
    measured = state.model_copy(update={"last_analysis_at": iso(at(1))})
    assert not analysis_due(s, measured, at(5))
    assert analysis_due(s, measured, at(11))


def test_all_or_nothing_rolls_every_other_canary_back() -> None:
    s = spec()
    states = {"arm": _at_first_step(s), "jetson": _at_first_step(s).model_copy(update={"name": "jetson"}),
              "x86": stable()}
    out = roll_back_all(s, states, "arm", {n: obs() for n in states})
    assert set(out) == {"jetson"}
    assert out["jetson"].state.state == "RolledBack"
    assert "class arm failed and classPolicy is AllOrNothing" in out["jetson"].state.message


def test_all_or_nothing_holds_a_finished_class_until_the_others_pass() -> None:
    s = spec(steps=[{"percent": 100}])
    state = next_class_state(s, stable(), obs(), T0).state
    held = next_class_state(s, state, obs(ready=10, hold_promotion=True), at(5), verdict=verdict("pass", at(5)))
    assert held.state.canary_revision == "r2" and "AllOrNothing" in held.state.message
    done = next_class_state(s, held.state, obs(ready=10), at(10))
    assert done.state.stable_revision == "r2"



# --- make-before-break: the state machine waits for a switch under way ---------------------------


def test_a_step_is_not_done_while_its_nodes_are_still_switching() -> None:
    s = spec(steps=[{"percent": 50}, {"percent": 100}])
    state = next_class_state(s, stable(), obs(make_before_break=True), T0).state
    switching = obs(ready=5, make_before_break=True, switch_pending=True,
                    switching="3 node(s) switching make-before-break: waiting for slot b's pods")
    d = next_class_state(s, state, switching, at(10), verdict=verdict("pass", at(10)))
    assert d.state.percent == 50 and "3 node(s) switching" in d.state.message and d.requeue_after
    d = next_class_state(s, d.state, obs(ready=5, make_before_break=True), at(11))
    assert d.state.percent == 100  # the pass recorded while switching still counts


def test_a_new_canary_waits_until_a_rolled_back_canary_has_left_its_nodes() -> None:
    s = spec()
    rolled_back = next_class_state(s, _at_first_step(s), obs(ready=1), at(10), command="abort").state
    assert rolled_back.canary_revision is None
    draining = obs(rev="r3", version="3.0", make_before_break=True, switch_pending=True,
                   switching="1 node(s) switching make-before-break: waiting for slot a's pods")
    d = next_class_state(s, rolled_back, draining, at(11))
    assert d.state.canary_revision is None and not d.events
    assert "3.0 starts once the previous canary's nodes are back" in d.state.message and d.requeue_after
    d = next_class_state(s, d.state, obs(rev="r3", version="3.0", make_before_break=True), at(12))
    assert d.state.canary_revision == "r3" and d.state.percent == 10


def test_promote_full_switches_every_node_make_before_break_before_flipping_the_slot() -> None:
    s = spec()
    state = _at_first_step(s)
    d = next_class_state(s, state, obs(ready=1, make_before_break=True), at(10), command="promote-full")
    assert d.state.percent == 100 and d.state.canary_revision == "r2" and d.state.stable_slot == "a"
    pending = obs(ready=10, make_before_break=True, switch_pending=True, switching="9 node(s) switching")
    d = next_class_state(s, d.state, pending, at(11))
    assert d.state.canary_revision == "r2" and "9 node(s) switching" in d.state.message
    d = next_class_state(s, d.state, obs(ready=10, make_before_break=True), at(12))
    assert d.state.stable_revision == "r2" and d.state.stable_slot == "b" and d.finished == "Succeeded"
