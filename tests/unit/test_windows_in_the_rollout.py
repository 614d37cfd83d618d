"""Maintenance windows in the class machine: a due step waits for its activation window and says until
when, resumes when it opens, stages ahead inside the staging window, never holds a rollback, and the
progress deadline does not run meanwhile. Plus the WindowsValid condition."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

from planning_support import example, fleet, model, profile_of

from edgewise.api.model import Rollout
from edgewise.api.resources import EdgeModel
from edgewise.api.rollout_status import AnalysisRecord, ClassRollout
from edgewise.api.settings import OperatorSettings
from edgewise.core.durations import iso
from edgewise.core.observed import Workload
from edgewise.core.plan import ModelPlan, plan_model
from edgewise.core.rollout import Observed, advance, windows
from edgewise.core.rollout.buckets import bucket_of, threshold
from edgewise.core.rollout.class_machine import ClassObservation, next_class_state
from edgewise.core.status import compute_status

T0 = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)  # a Sunday, noon UTC
BUCKETS_10 = (3, 12, 25, 31, 47, 52, 68, 71, 85, 99)
FIRST = threshold(10, BUCKETS_10)  # the first step moves bucket 3 only
HALF = threshold(50, BUCKETS_10)


def spec(activation: list[dict[str, str]] | None = None, staging: list[dict[str, str]] | None = None,
         **overrides: Any) -> Rollout:
    base: dict[str, Any] = {"steps": [{"percent": 10}, {"percent": 50}, {"percent": 100}],
                            "analysis": {"interval": "10s", "failureLimit": 0}, "progressDeadline": "5m",
                            "windows": {"activation": activation, "staging": staging}}
    base.update(overrides)
    return Rollout.model_validate(base)


def nightly(start: str = "0 22 * * *", duration: str = "2h", zone: str = "UTC", kind: str = "Allow") -> dict[str, str]:
    return {"kind": kind, "schedule": start, "duration": duration, "timeZone": zone}


def obs(ready: int = 0, zones: tuple[str | None, ...] = ()) -> ClassObservation:
    return ClassObservation(name="arm", desired_revision="r2", desired_version="2.0", buckets=BUCKETS_10,
                            canary_ready=ready, zones=tuple(zip(BUCKETS_10, zones, strict=True)) if zones else ())


def stable() -> ClassRollout:
    return ClassRollout(name="arm", stable_revision="r1", stable_version="1.0")


def passed(at: dt.datetime) -> AnalysisRecord:
    return AnalysisRecord(time=iso(at), outcome="pass", message="pass")


def hours(h: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=h)


def test_a_due_first_step_waits_for_the_activation_window_and_says_until_when() -> None:
    s = spec(activation=[nightly()])
    d = next_class_state(s, stable(), obs(), T0)
    st = d.state
    assert st.canary_revision == "r2" and st.percent == 0 and st.canary_nodes == 0  # no node moved
    assert st.waiting_for_window and st.window_opens_at == "2026-11-22T22:00:00Z"
    assert st.state == "Progressing"
    assert st.message == ("step 1/3 of 2.0 is waiting for the activation window, which opens at "
                          "2026-11-22T22:00:00Z")
    assert [e.reason for e in d.events] == ["RolloutStarted", "WaitingForWindow"]
    assert d.requeue_after == 10 * 3600 + 1  # the window's opening, not a poll
    assert d.stage == (0, FIRST) and st.staged_threshold == FIRST  # no staging window: staged ahead at once
    # Five hours later (past progressDeadline 5m): still waiting, not Degraded, no second Event, no re-staging.
    d = next_class_state(s, st, obs(), hours(5))
    assert d.state.state == "Progressing" and d.state.waiting_for_window and d.events == ()
    assert d.state.message == st.message and d.stage is None  # the same status: nothing to write
    # The window opens: the step moves its nodes and the wait is over.
    d = next_class_state(s, d.state, obs(), hours(10))
    assert d.state.percent == 10 and d.state.canary_nodes == 1 and not d.state.waiting_for_window
    assert d.state.window_opens_at is None and d.state.step_started_at == iso(hours(10))
    assert [e.reason for e in d.events] == ["StepChanged"] and d.stage is None  # already staged


def test_each_next_step_waits_for_the_window_and_the_slot_flip_after_the_last_step_does_not() -> None:
    s = spec(activation=[nightly(duration="10m")])
    st = next_class_state(s, stable(), obs(), hours(10)).state  # 22:00: inside the window
    assert st.percent == 10
    d = next_class_state(s, st, obs(ready=1), hours(10.5), verdict=passed(hours(10.5)))  # 22:30: closed
    assert d.state.step_index == 1 and d.state.percent == 10 and d.state.waiting_for_window
    assert d.state.message.startswith("step 2/3 of 2.0 is waiting") and "2026-11-23T22:00:00Z" in d.state.message
    st = next_class_state(s, d.state, obs(ready=1), hours(34)).state  # the next night
    assert st.percent == 50 and not st.waiting_for_window
    d = next_class_state(s, st, obs(ready=5), hours(35), verdict=passed(hours(35)))  # 23:00: closed
    assert d.state.step_index == 2 and d.state.percent == 50 and d.state.waiting_for_window
    assert d.state.message.startswith("step 3/3 of 2.0 is waiting")  # the last step: the rest of the nodes
    st = next_class_state(s, d.state, obs(ready=5), hours(58)).state
    assert st.percent == 100
    # Every node runs 2.0: promoting (the slot flip) moves no pod, so it does not wait for the next night.
    d = next_class_state(s, st, obs(ready=10), hours(58.5), verdict=passed(hours(58.5)))
    assert d.state.state == "Stable" and d.state.stable_revision == "r2" and d.finished == "Succeeded"
    assert not d.state.waiting_for_window


def test_a_rollback_never_waits_for_a_window() -> None:
    s = spec(activation=[nightly(duration="10m")])
    st = next_class_state(s, stable(), obs(), hours(10)).state
    failed = AnalysisRecord(time=iso(hours(11)), outcome="fail", message="p95 latency 80ms > 50ms")
    d = next_class_state(s, st, obs(ready=1), hours(11), verdict=failed)  # 23:00: the window is closed
    assert d.state.state == "RolledBack" and d.failed and d.state.canary_revision is None
    assert not d.state.waiting_for_window


def test_deny_windows_hold_a_step_that_falls_inside_them() -> None:
    s = spec(activation=[nightly("0 9 * * MON-FRI", "8h", "Europe/Berlin", kind="Deny")])
    monday_10_berlin = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
    d = next_class_state(s, stable(), obs(), monday_10_berlin)
    assert d.state.window_opens_at == "2026-11-23T16:00:00Z"  # 17:00 CET
    d = next_class_state(s, stable(), obs(), T0)  # Sunday: no deny window
    assert d.state.percent == 10


def test_staging_runs_ahead_inside_its_window_and_activation_follows_at_its_own() -> None:
    # Download at night (01:00-05:00 UTC), switch at the shift change (06:00 UTC).
    s = spec(activation=[nightly("0 6 * * *", "1h")], staging=[nightly("0 1 * * *", "4h")])
    d = next_class_state(s, stable(), obs(), T0)
    assert d.stage is None and d.state.staged_threshold == 0  # staging window closed at noon
    assert d.requeue_after == 13 * 3600 + 1  # wake up when staging opens (before activation at 18h)
    d = next_class_state(s, d.state, obs(), hours(13.5))  # 01:30: staging open, activation not yet
    assert d.stage == (0, FIRST) and d.state.staged_threshold == FIRST and d.state.percent == 0
    assert d.requeue_after == 4.5 * 3600 + 1
    d = next_class_state(s, d.state, obs(), hours(18))  # 06:00: the step moves, nothing left to stage
    assert d.state.percent == 10 and d.stage is None


def test_a_step_due_outside_the_staging_window_does_not_prefetch() -> None:
    s = spec(staging=[nightly("0 1 * * *", "4h")])
    d = next_class_state(s, stable(), obs(), T0)
    assert d.state.percent == 10 and d.stage is None  # the pod's fetch init container downloads instead
    d = next_class_state(s, stable(), obs(), hours(14))  # 02:00: inside
    assert d.stage == (0, FIRST)


def test_site_windows_open_for_the_zones_of_the_nodes_the_step_moves() -> None:
    # The first five buckets (10% and 50%) are nodes in Berlin, the other five in New York.
    zones = ("Europe.Berlin",) * 5 + ("America.New_York",) * 5
    labelled = tuple(z.replace(".", "/") for z in zones)
    s = spec(activation=[nightly("0 2 * * *", "3h", "Site")])
    d = next_class_state(s, stable(), obs(zones=labelled), T0)
    assert d.state.window_opens_at == "2026-11-23T01:00:00Z"  # 02:00 in Berlin: only a Berlin node moves
    st = next_class_state(s, d.state, obs(zones=labelled), hours(13)).state
    assert st.percent == 10
    st = next_class_state(s, st, obs(ready=1, zones=labelled), hours(13.1), verdict=passed(hours(13.1))).state
    assert st.percent == 50 and HALF == 48  # Berlin nodes again, Berlin's night
    d = next_class_state(s, st, obs(ready=5, zones=labelled), hours(13.2), verdict=passed(hours(13.2)))
    assert d.state.waiting_for_window and d.state.window_opens_at == "2026-11-23T07:00:00Z"  # 02:00 EST
    st = next_class_state(s, d.state, obs(ready=5, zones=labelled), hours(19)).state
    assert st.percent == 100 and not st.waiting_for_window


def test_a_step_moving_nodes_of_zones_whose_windows_never_overlap_says_so() -> None:
    zones = ("Europe/Berlin", "America/New_York") * 5
    s = spec(activation=[nightly("0 2 * * *", "2h", "Site")], steps=[{"percent": 100}])
    d = next_class_state(s, stable(), obs(zones=zones), T0)
    assert d.state.waiting_for_window and d.state.window_opens_at is None
    assert d.state.message.endswith("which does not open within 366 days for these nodes")
    assert d.requeue_after == 3600


def test_a_site_window_with_an_unlabelled_node_waits_and_says_why() -> None:
    s = spec(activation=[nightly(zone="Site")])
    d = next_class_state(s, stable(), obs(zones=(None,) * 10), T0)
    assert d.state.waiting_for_window and "cannot be evaluated" in d.state.message
    assert "edgewise.io/time-zone" in d.state.message and d.requeue_after == 3600


def test_windows_valid_condition_reports_an_unknown_zone() -> None:
    m = model(rollout={"windows": {"activation": [nightly(zone="Europe/Atlantis")]}})
    result = compute_status(m, ModelPlan(profile=None), {}, T0, total_nodes=0)
    cond = next(c for c in result.status.conditions or [] if c.type == "WindowsValid")
    assert (cond.status, cond.reason) == ("False", "InvalidWindow")
    assert "unknown time zone 'Europe/Atlantis': use an IANA name such as Europe/Berlin" in cond.message
    ok = model(rollout={"windows": {"activation": [nightly(zone="Europe/Berlin")]}})
    result = compute_status(ok, ModelPlan(profile=None), {}, T0, total_nodes=0)
    assert [c.status for c in result.status.conditions or [] if c.type == "WindowsValid"] == ["True"]
    plain = model()
    result = compute_status(plain, ModelPlan(profile=None), {}, T0, total_nodes=0)
    assert not [c for c in result.status.conditions or [] if c.type == "WindowsValid"]


def test_the_example_parses_and_its_windows_evaluate() -> None:
    m = EdgeModel.model_validate(example("defect-detector-windows.yaml"))
    w = m.spec.rollout.windows
    assert w.staging and w.activation and windows.problems([*w.staging, *w.activation]) == []
    monday_0600_berlin = dt.datetime(2026, 11, 23, 5, 0, tzinfo=dt.UTC)
    assert windows.next_open(w.activation, T0) == monday_0600_berlin
    stock_take = dt.datetime(2026, 12, 15, 5, 0, tzinfo=dt.UTC)  # a Tuesday, 06:00 CET
    assert windows.next_open(w.activation, stock_take) == dt.datetime(2026, 12, 18, 5, 0, tzinfo=dt.UTC)


def test_advance_reads_each_nodes_zone_from_its_label_and_stages_the_waiting_steps_nodes() -> None:
    zones = ["Europe.Berlin", "America.New_York"]
    nodes = [replace(n, labels={**n.labels, "edgewise.io/time-zone": zones[i % 2]})
             for i, n in enumerate(fleet(arm64_cpu=4))]
    first_node = min(nodes, key=lambda n: bucket_of(n.name))  # 50% of 4 nodes starts with the lowest buckets
    zone_of_first = first_node.labels["edgewise.io/time-zone"].replace(".", "/")
    rollout = {"steps": [{"percent": 25}, {"percent": 100}], "analysis": {"provider": "none"},
               "windows": {"activation": [nightly("0 2 * * *", "2h", "Site")]}}
    profile = profile_of({"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"},
                          "runtime": "onnxruntime", "precision": "fp32"})
    m1 = model(version="1", profile_ref="p", rollout=rollout)
    first = advance(m1, plan_model(m1, profile, nodes, [], OperatorSettings()), Observed(nodes, []), None, T0)
    assert first.status is not None
    m2 = model(version="2", profile_ref="p", rollout=rollout)
    m2 = m2.model_copy(update={"status": m2.status.model_copy(update={"rollout": first.status})})
    existing = [Workload(name=w.name, labels=dict(w.manifest["metadata"]["labels"]),
                         annotations=dict(w.manifest["metadata"]["annotations"]), generation=1,
                         observed_generation=1, desired=4, ready=4, template=w.manifest["spec"]["template"])
                for w in first.apply]
    out = advance(m2, plan_model(m2, profile, nodes, existing, OperatorSettings()), Observed(nodes, existing),
                  None, T0)
    assert out.status is not None and out.status.classes
    arm = out.status.classes[0]
    opens = {"Europe/Berlin": "2026-11-23T01:00:00Z", "America/New_York": "2026-11-23T07:00:00Z"}[zone_of_first]
    assert arm.waiting_for_window and arm.window_opens_at == opens and arm.canary_nodes == 0
    assert out.requeue_after == (dt.datetime.fromisoformat(opens) - T0).total_seconds() + 1
    assert [n.name for s in out.stage for n in s.nodes] == [first_node.name]  # staged ahead, only the mover
