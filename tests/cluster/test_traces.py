"""The operator's OpenTelemetry spans, in a real Jaeger, for one real rollout.

Jaeger's all-in-one binary (hack/build-jaeger.sh) receives OTLP/HTTP; the operator runs with nothing
but the standard OTEL_* variables pointing at it. One small rollout (1.0 everywhere, then 2.0 through
its canary steps, analysed against the pods the pod runner serves under traffic) must leave, in
Jaeger's query API: reconcile traces whose children are read → plan → rollout → apply → status, and
the canary analysis' measurement spans inside a reconcile.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jaeger_support import Jaeger, Span, running_jaeger
from operator_support import Operator, apply, get, rollout_classes, running_operator
from rollout_support import ARM, MODEL, ORIN, edgemodel, profile

from edgewise.devcluster.cluster import DevCluster
from edgewise.devcluster.podrunner import PodRunner
from edgewise.devcluster.traffic import Traffic, serving
from wait_support import wait_for

SERVICE = "edgewise-operator-under-test"
RECONCILE_CHILDREN = ["read", "plan", "rollout", "apply", "status"]


@dataclass(frozen=True)
class Traced:
    jaeger: Jaeger
    operator: Operator


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
        with running_operator(cluster, root / "operator", extra_env=env) as op, cluster.api_client() as api, \
                PodRunner(api, root / "pods", ns, f"edgewise.io/model={MODEL}").start() as runner, \
                Traffic(runner, MODEL):
            apply(cluster, [profile(ns), edgemodel(ns, "1.0", models["good"], models["golden"])])
            wait_for(lambda: serving(runner, 2), 150, "two pods serving 1.0")
            apply(cluster, [edgemodel(ns, "2.0", models["good"], models["golden"])])
            wait_for(lambda: all(c.get("state") == "Stable" and c.get("stableVersion") == "2.0"
                                 for c in _classes(cluster, ns).values()) or None, 180, "2.0 promoted")
            yield Traced(jaeger, op)


def _children(trace: list[Span], parent: Span) -> list[Span]:
    return [s for s in trace if s.parent == parent.span_id]


def test_the_operator_reports_as_the_service_otel_service_name_says(rolled_out: Traced) -> None:
    wait_for(lambda: SERVICE in rolled_out.jaeger.services(), 30, f"service {SERVICE} in Jaeger", interval=0.5)


def test_each_reconcile_is_a_trace_of_read_plan_rollout_apply_status(rolled_out: Traced) -> None:
    def complete() -> list[list[Span]]:
        return [t for t in rolled_out.jaeger.traces(SERVICE, "reconcile")
                if any(s.name == "status" for s in t)]
    traces = wait_for(complete, 30, "reconcile traces with a status span", interval=0.5)
    for trace in traces:
        roots = [s for s in trace if s.parent is None]
        assert [r.name for r in roots] == ["reconcile"], trace
        root = roots[0]
        assert root.tags["edgewise.model"] == MODEL, root
        # Jaeger lists spans in no set order: the parent–child structure is what is asserted.
        assert sorted(c.name for c in _children(trace, root)) == sorted(RECONCILE_CHILDREN), trace
    phases = {s.tags.get("edgewise.phase") for t in traces for s in t if s.name == "status"}
    assert "Ready" in phases, phases  # the rollout's end is in the traces too


def test_the_canary_analysis_measurements_are_spans_inside_a_reconcile(rolled_out: Traced) -> None:
    def measured() -> list[list[Span]]:
        return rolled_out.jaeger.traces(SERVICE, "analysis.measure")
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
