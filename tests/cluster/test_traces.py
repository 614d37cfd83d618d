"""The operator's OpenTelemetry spans, in a real Jaeger, for one real rollout.

Jaeger's all-in-one binary (hack/build-jaeger.sh) receives OTLP/HTTP; the operator runs with nothing
but the standard OTEL_* variables pointing at it. One small rollout (1.0 everywhere, then 2.0 through
its canary steps, analysed against the pods the pod runner serves under traffic) must leave, in
Jaeger's query API: reconcile traces whose children are read → plan → rollout → apply → status, and
the canary analysis' measurement spans inside a reconcile. A second model, optimized to int8 by the
operator's worker process (which gets the operator's OTEL_* variables, as a Job would), must leave
its optimization attempts as spans with the gates' numbers. (The agent's download spans:
tests/node/test_agent_traces.py.)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from operator_support import Operator, apply, get, rollout_classes, running_operator
from rollout_support import ARM, MODEL, ORIN, edgemodel, profile

from edgewise.devcluster import demo_models, processes
from edgewise.devcluster.cluster import DevCluster
from edgewise.devcluster.podrunner import PodRunner
from edgewise.devcluster.traffic import Traffic, serving
from jaeger_support import Jaeger, Span, running_jaeger
from wait_support import wait_for

SERVICE = "edgewise-operator-under-test"
OPTIMIZER = "edgewise-optimize"  # the worker's own service name: the operator's OTEL_SERVICE_NAME is not passed on
RECONCILE_CHILDREN = ["read", "plan", "rollout", "apply", "status"]
OPTIMIZED = "optimized"


def optimized_model(ns: str, src: Path) -> list[dict[str, Any]]:
    """A model the operator optimizes to int8 for one arm class (its pods are never served)."""
    profile = {"apiVersion": "edgewise.io/v1alpha1", "kind": "DeploymentProfile",
               "metadata": {"name": OPTIMIZED, "namespace": ns},
               "spec": {"classes": [{"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"},
                                     "runtime": "onnxruntime", "precision": "int8", "threads": 1}]}}
    model = {"apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel",
             "metadata": {"name": OPTIMIZED, "namespace": ns},
             "spec": {"profileRef": OPTIMIZED, "version": "1.0",
                      "source": {"uri": src.as_uri(), "sha256": demo_models.sha256(src)},
                      "optimization": {"quantization": "auto", "accuracyGate": {"minCosine": 0.9}}}}
    return [profile, model]


@dataclass(frozen=True)
class Traced:
    jaeger: Jaeger
    operator: Operator
    namespace: str

    def traces(self, operation: str) -> list[list[Span]]:
        """The operator's traces with a span `operation`, of this module's namespace only: the operator
        watches every namespace, and models other test modules left behind may still be deleting."""
        return [t for t in self.jaeger.traces(SERVICE, operation)
                if any(s.tags.get("edgewise.namespace") == self.namespace for s in t if s.parent is None)]


def _classes(cluster: DevCluster, ns: str) -> dict[str, dict[str, Any]]:
    return rollout_classes(get(cluster, "edgemodel", MODEL, "-n", ns))


@pytest.fixture(scope="module")
def rolled_out(cluster: DevCluster, module_namespace: str, module_fleet, models: dict[str, Path],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    ns, root = module_namespace, tmp_path_factory.mktemp("traces")
    module_fleet({ORIN: 1, ARM: 1})
    with running_jaeger(root / "jaeger") as jaeger:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint, "OTEL_SERVICE_NAME": SERVICE,
               "OTEL_BSP_SCHEDULE_DELAY": "200"}  # export every 200 ms rather than every 5 s
        (root / "operator").mkdir()
        store = processes.free_port()
        args = ["--artifact-dir", str(root / "artifacts"), "--artifact-listen", f"127.0.0.1:{store}",
                "--artifact-url", f"http://127.0.0.1:{store}"]
        with running_operator(cluster, root / "operator", args, extra_env=env) as op, cluster.api_client() as api, \
                PodRunner(api, root / "pods", ns, f"edgewise.io/model={MODEL}").start() as runner, \
                Traffic(runner, MODEL):
            apply(cluster, [profile(ns), edgemodel(ns, "1.0", models["good"], models["golden"]),
                            *optimized_model(ns, demo_models.good(root / "optimized.onnx"))])
            wait_for(lambda: serving(runner, 2), 150, "two pods serving 1.0")
            apply(cluster, [edgemodel(ns, "2.0", models["good"], models["golden"])])
            wait_for(lambda: all(c.get("state") == "Stable" and c.get("stableVersion") == "2.0"
                                 for c in _classes(cluster, ns).values()) or None, 180, "2.0 promoted")
            yield Traced(jaeger, op, ns)


def _children(trace: list[Span], parent: Span) -> list[Span]:
    return [s for s in trace if s.parent == parent.span_id]


def test_the_operator_reports_as_the_service_otel_service_name_says(rolled_out: Traced) -> None:
    wait_for(lambda: SERVICE in rolled_out.jaeger.services(), 30, f"service {SERVICE} in Jaeger", interval=0.5)


def test_each_reconcile_is_a_trace_of_read_plan_rollout_apply_status(rolled_out: Traced) -> None:
    def complete() -> list[list[Span]]:
        return [t for t in rolled_out.traces("reconcile") if any(s.name == "status" for s in t)]
    traces = wait_for(complete, 30, "reconcile traces with a status span", interval=0.5)
    for trace in traces:
        roots = [s for s in trace if s.parent is None]
        assert [r.name for r in roots] == ["reconcile"], trace
        root = roots[0]
        assert root.tags["edgewise.model"] in (MODEL, OPTIMIZED), root
        # Jaeger lists spans in no set order: the parent–child structure is what is asserted.
        assert sorted(c.name for c in _children(trace, root)) == sorted(RECONCILE_CHILDREN), trace
    phases = {s.tags.get("edgewise.phase") for t in traces for s in t if s.name == "status"}
    assert "Ready" in phases, phases  # the rollout's end is in the traces too


def test_the_canary_analysis_measurements_are_spans_inside_a_reconcile(rolled_out: Traced) -> None:
    def measured() -> list[list[Span]]:
        return rolled_out.traces("analysis.measure")
    traces = wait_for(measured, 30, "traces with analysis.measure spans", interval=0.5)
    classes = set()
    for trace in traces:
        by_id = {s.span_id: s for s in trace}
        for measure in (s for s in trace if s.name == "analysis.measure"):
            parent = by_id[measure.parent]  # type: ignore[index]
            assert parent.name == "rollout", (measure, parent)
            assert by_id[parent.parent].name == "reconcile", parent  # type: ignore[index]
            assert measure.tags["edgewise.model"] == MODEL and measure.tags["edgewise.canary_pods"] >= 1, measure
            classes.add(measure.tags["edgewise.class"])
    assert classes == {"jetson", "arm"}, classes


def test_each_optimization_attempt_is_a_span_with_the_gates_numbers(rolled_out: Traced) -> None:
    def attempts() -> list[Span]:
        return [s for t in rolled_out.jaeger.traces(OPTIMIZER, "optimize.attempt") for s in t
                if s.name == "optimize.attempt"]
    spans: Any = wait_for(lambda: [s for s in attempts() if s.tags.get("edgewise.status") == "accepted"] and attempts(),
                          120, "an accepted optimize.attempt span in Jaeger", interval=1)
    assert {s.tags["edgewise.status"] for s in spans} <= {"accepted", "rejected", "failed"}, spans
    accepted = next(s for s in spans if s.tags["edgewise.status"] == "accepted")
    assert accepted.tags["edgewise.precision"] and accepted.tags["edgewise.technique"], accepted
    # The accuracy gate's numbers, and the gate itself, as attributes: a trace shows why a technique won.
    assert accepted.tags["edgewise.gate.gateMinCosine"] == 0.9, accepted
    assert 0.9 <= accepted.tags["edgewise.gate.minCosine"] <= 1.0, accepted
