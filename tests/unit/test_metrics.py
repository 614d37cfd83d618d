"""The operator's metrics: series computed from a status, and what the recorder exposes."""

from __future__ import annotations

from prometheus_client import generate_latest

from edgewise.api.rollout_status import AnalysisRecord, ClassRollout, Outcome, RolloutStatus, SiteProgress
from edgewise.api.status import ClassStatus, EdgeModelStatus
from edgewise.controller.metrics import OperatorMetrics
from edgewise.controller.series import (
    FAILED,
    RUNNING,
    SUCCEEDED,
    model_series,
    new_analyses,
    new_rollbacks,
    write_labels,
)


def _rollout(*classes: ClassRollout) -> RolloutStatus:
    return RolloutStatus(revision=2, classes=list(classes))


def _canary(name: str = "arm", **kw: object) -> ClassRollout:
    fields: dict = {"name": name, "state": "Progressing", "canary_revision": "r2", "percent": 50,
                    "step_started_at": "2025-01-01T00:00:00Z"} | kw
    return ClassRollout(**fields)


def _status(rollout: RolloutStatus, phase: str = "Progressing") -> EdgeModelStatus:
    return EdgeModelStatus(phase=phase, profile="fleet", rollout=rollout,
                           classes=[ClassStatus(name="arm", matched_nodes=4, ready_pods=3, artifact_state="Ready")])


def test_a_class_with_a_canary_is_running_at_its_percent_since_its_step_began() -> None:
    s = model_series("ns", "m", "2.0", "10m", _status(_rollout(_canary())))
    (arm,) = s.classes
    assert (arm.status, arm.canary_percent, arm.state) == (RUNNING, 50, "Progressing")
    assert arm.step_started == 1735689600.0
    assert (arm.matched_nodes, arm.ready_pods, arm.artifact_state) == (4, 3, "Ready")
    assert (s.phase, s.profile, s.version, s.progress_deadline) == ("Progressing", "fleet", "2.0", 600.0)


def test_stable_is_succeeded_without_a_canary_percent_and_rolled_back_or_degraded_is_failed() -> None:
    stable = ClassRollout(name="a", state="Stable", percent=100)
    rolled = ClassRollout(name="b", state="RolledBack")
    degraded = _canary("c", state="Degraded")
    s = model_series("ns", "m", "1", "10m", EdgeModelStatus(rollout=_rollout(stable, rolled, degraded)))
    by = {c.name: c for c in s.classes}
    assert [(by[n].status, by[n].canary_percent) for n in "abc"] == [(SUCCEEDED, 0), (FAILED, 0), (FAILED, 50)]
    assert by["a"].step_started is None


def test_only_measurements_and_rollbacks_new_in_this_status_are_counted() -> None:
    record = AnalysisRecord(time="t2", outcome=Outcome.FAIL)
    old = _rollout(_canary("arm", last_analysis_at="t1", last_analysis=AnalysisRecord(time="t1", outcome="pass")),
                   _canary("gpu", last_analysis_at="t1", last_analysis=AnalysisRecord(time="t1", outcome="pass")))
    new = _rollout(_canary("arm", state="RolledBack", last_analysis_at="t2", last_analysis=record),
                   _canary("gpu", last_analysis_at="t1", last_analysis=AnalysisRecord(time="t1", outcome="pass")))
    assert new_analyses(old, new) == [("arm", "fail")]
    assert new_rollbacks(old, new) == ["arm"]
    assert new_rollbacks(new, new) == [] and new_analyses(new, new) == []
    assert new_analyses(None, None) == [] and new_rollbacks(None, new) == ["arm"]


def test_every_key_writes_counts_has_a_verb_and_a_kind() -> None:
    assert write_labels("created") == ("create", "DaemonSet")
    assert write_labels("service-updated") == ("update", "Service")
    assert write_labels("job-deleted") == ("delete", "Job")
    assert write_labels("secret-created") == ("create", "Secret")
    assert write_labels("bucket-label") == ("patch", "Node")
    assert write_labels("event") == ("create", "Event")
    assert write_labels("something-new") == ("something-new", "unknown")


def _exposed(m: OperatorMetrics) -> str:
    return generate_latest(m.registry).decode()


def test_a_model_s_series_are_replaced_as_a_whole_and_removed_with_it() -> None:
    m = OperatorMetrics()
    m.model(model_series("ns", "m", "2.0", "10m", _status(_rollout(_canary()))), [("arm", "pass")], [])
    text = _exposed(m)
    assert 'edgewise_rollout_class_info{class="arm",model="m",namespace="ns",state="Progressing"} 1.0' in text
    assert 'edgewise_rollout_canary_percent{class="arm",model="m",namespace="ns"} 50.0' in text
    assert 'edgewise_analysis_total{class="arm",model="m",namespace="ns",outcome="pass"} 1.0' in text
    assert 'edgewise_rollbacks_total{class="arm",model="m",namespace="ns"} 0.0' in text
    rolled = _rollout(ClassRollout(name="arm", state="RolledBack"))
    m.model(model_series("ns", "m", "2.0", "10m", _status(rolled, "Degraded")), [], ["arm"])
    text = _exposed(m)
    assert 'state="Progressing"' not in text and 'phase="Progressing"' not in text
    assert 'edgewise_rollout_status{class="arm",model="m",namespace="ns"} 2.0' in text
    assert 'edgewise_rollbacks_total{class="arm",model="m",namespace="ns"} 1.0' in text
    assert "edgewise_rollout_step_started_timestamp_seconds{" not in text
    m.model_deleted("ns", "m")
    assert "edgewise_edgemodel_info{" not in _exposed(m)


def test_writes_optimizations_and_the_queue_are_exposed() -> None:
    m = OperatorMetrics()
    m.wrote({"created": 2, "status": 1, "event": 0})
    m.optimization("Optimized", 12.0)
    m.watch_queue(lambda: 3, lambda: 4.5)
    text = _exposed(m)
    assert 'edgewise_kube_writes_total{kind="DaemonSet",verb="create"} 2.0' in text
    assert 'kind="Event"' not in text
    assert 'edgewise_optimization_runs_total{result="Optimized"} 1.0' in text
    assert 'edgewise_optimization_runs_total{result="OptimizationFailed"} 0.0' in text
    assert "edgewise_workqueue_depth 3.0" in text and "edgewise_workqueue_oldest_item_age_seconds 4.5" in text


def test_a_canary_placed_by_sites_exposes_per_site_gauges_and_they_go_when_it_ends() -> None:
    sites = [SiteProgress(site="oslo", nodes=4, canary_nodes=4, ready_nodes=3, canary_site=True),
             SiteProgress(site="", nodes=2, canary_nodes=0, ready_nodes=2)]
    metrics = OperatorMetrics()
    metrics.model(model_series("ns", "m", "2.0", "10m", _status(_rollout(_canary(sites=sites)))), [], [])
    text = generate_latest(metrics.registry).decode()
    assert 'edgewise_rollout_site_canary_nodes{class="arm",model="m",namespace="ns",site="oslo"} 4.0' in text
    assert 'edgewise_rollout_site_nodes{class="arm",model="m",namespace="ns",site=""} 2.0' in text
    assert 'edgewise_rollout_site_ready_nodes{class="arm",model="m",namespace="ns",site="oslo"} 3.0' in text
    done = ClassRollout(name="arm", state="Stable", stable_revision="r2")
    metrics.model(model_series("ns", "m", "2.0", "10m", _status(_rollout(done))), [], [])
    assert "edgewise_rollout_site_canary_nodes{" not in generate_latest(metrics.registry).decode()
