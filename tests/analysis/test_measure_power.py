"""Analysis asks the agents of a class's canary and stable nodes for power and temperature, only when a
limit wants them, and judges with their readings (the agents themselves: tests/node, tests/cluster)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from edgewise.analysis.measure import CanaryAnalysis
from edgewise.analysis.provider import AnalysisTarget
from edgewise.api.resources import DeploymentProfile, EdgeModel
from edgewise.api.rollout_status import Outcome
from edgewise.api.settings import OperatorSettings
from edgewise.core import names
from edgewise.core.analysis import CohortMetrics, Measurement, NodeReading
from edgewise.core.observed import NodeInfo, Workload
from edgewise.kube.convert import runtime_pod
from edgewise.kube.node_agents import parse_telemetry

CLS = "jetson"
BUSY = CohortMetrics(pods=1, requests=100, request_rate=10, error_rate=0.0, p95_latency_ms=5.0)


def _pod(name: str, node: str, slot: str, revision: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": f"uid-{name}",
                         "labels": {names.CLASS_LABEL: CLS, names.SLOT_LABEL: slot, names.REVISION_LABEL: revision},
                         "ownerReferences": [{"kind": "DaemonSet", "name": f"m-{CLS}-{slot}", "uid": f"ds-{slot}",
                                              "controller": True}]},
            "spec": {"nodeName": node},
            "status": {"podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}}


class _Provider:
    name = "fake"

    async def measure(self, target: AnalysisTarget) -> Measurement:
        return Measurement(canary=BUSY, stable=BUSY)


def _run(analysis_spec: dict[str, Any], readings: dict[str, NodeReading], slo: dict[str, Any] | None = None
         ) -> tuple[str, Outcome, list[list[str]]]:
    model = EdgeModel.model_validate({
        "apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel",
        "metadata": {"name": "m", "namespace": "vision", "uid": "uid-m"},
        "spec": {"version": "3", "source": {"uri": "https://models.example.com/m.onnx", "sha256": "0" * 64},
                 "rollout": {"analysis": analysis_spec}},
        "status": {"rollout": {"classes": [{"name": CLS, "stableSlot": "a", "stableRevision": "r1",
                                            "canaryRevision": "r3", "percent": 50}]}}})
    hardware = {"name": CLS, "nodeSelector": {"a": "b"}, "runtime": "onnxruntime", **({"slo": slo} if slo else {})}
    profile = DeploymentProfile.model_validate({
        "apiVersion": "edgewise.io/v1alpha1", "kind": "DeploymentProfile",
        "metadata": {"name": "p", "namespace": "vision"}, "spec": {"classes": [hardware]}})
    asked: list[list[str]] = []

    def telemetry(nodes: Sequence[NodeInfo]) -> dict[str, NodeReading]:
        asked.append([n.name for n in nodes])
        return {n.name: readings[n.name] for n in nodes if n.name in readings}

    analysis = CanaryAnalysis(OperatorSettings(), telemetry=telemetry)
    analysis._provider = lambda analysis: _Provider()  # type: ignore[method-assign]
    nodes = [NodeInfo(name=n, labels={}, address=f"10.1.0.{i}") for i, n in enumerate(("n1", "n2", "n3"))]
    pods = [_pod("s1", "n1", "a", "r1"), _pod("s2", "n2", "a", "r1"), _pod("c1", "n3", "b", "r3")]
    workloads = [Workload(name=f"m-{CLS}-{s}", uid=f"ds-{s}", labels={names.CLASS_LABEL: CLS, names.SLOT_LABEL: s})
                 for s in "ab"]
    records = analysis.measure(model, SimpleNamespace(profile=profile), nodes, workloads,  # type: ignore[arg-type]
                               [runtime_pod(p) for p in pods], [CLS], dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    return records[CLS].message, records[CLS].outcome, asked


def test_the_canary_and_stable_nodes_agents_are_asked_and_the_verdict_carries_their_watts() -> None:
    readings = {"n1": NodeReading("n1", 9.0, 50.0), "n2": NodeReading("n2", 9.0, 51.0),
                "n3": NodeReading("n3", 12.4, 55.0, sensor="cpu-thermal")}
    message, outcome, asked = _run({"maxPowerIncreasePercent": 20}, readings)
    assert asked == [["n1", "n2", "n3"]]
    assert outcome is Outcome.FAIL
    assert "power +38% (canary 12.4 W vs stable 9.0 W, mean of 1 and 2 node(s)) > maxPowerIncreasePercent 20" \
        in message


def test_no_limit_no_agent_call() -> None:
    message, outcome, asked = _run({}, {})
    assert asked == [] and outcome is Outcome.PASS and "power" not in message


def test_a_node_the_agents_did_not_answer_for_is_named_and_the_rule_inconclusive() -> None:
    message, outcome, _ = _run({"maxTemperatureC": 80}, {"n1": NodeReading("n1", 9.0, 50.0)})
    assert outcome is Outcome.INCONCLUSIVE
    assert "temperature of canary nodes unavailable (no reading from n3: node not found)" in message


def test_the_class_slo_max_power_watts_is_a_limit() -> None:
    readings = {n: NodeReading(n, 14.0) for n in ("n1", "n2", "n3")}
    message, outcome, _ = _run({}, readings, slo={"maxPowerWatts": 10})
    assert outcome is Outcome.FAIL and "power 14.0 W on canary node n3 > slo.maxPowerWatts 10" in message


def test_an_agents_answer_is_parsed_into_a_reading_and_nonsense_is_unavailable() -> None:
    body = {"node": "n1", "power": {"watts": 9.0, "source": "ina3221 VDD_IN", "reason": ""},
            "temperature": {"celsius": None, "sensor": "", "reason": "no thermal zone or hwmon temperature"}}
    r = parse_telemetry("n1", body)
    assert (r.watts, r.celsius, r.temperature_reason) == (9.0, None, "no thermal zone or hwmon temperature")
    for bad in ([], {"power": {"watts": "9"}}, {"power": {"watts": True}}, {"power": {"watts": float("nan")}}):
        assert parse_telemetry("n1", bad).watts is None
    assert len(parse_telemetry("n1", {"power": {"reason": "x" * 1000}}).power_reason) == 160
