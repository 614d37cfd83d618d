"""shared/tracing.py: opt-in through OTEL_*, a no-op without OpenTelemetry, real spans with it.

Installing a tracer provider is process-global in OpenTelemetry, so the configured cases run in
a child interpreter with the console exporter and read the spans it prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edgewise.shared import tracing


@pytest.mark.parametrize(("env", "expected"), [
    ({}, False),
    ({"OTEL_SERVICE_NAME": "x"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, False),
])
def test_traces_only_when_otel_variables_ask(env: dict[str, str], expected: bool) -> None:
    assert tracing.wanted(env) is expected


def test_configure_without_otel_variables_installs_nothing() -> None:
    assert tracing.configure("edgewise-test", env={}) is False


def test_span_is_a_no_op_without_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_trace", None)
    assert not tracing.available()
    with tracing.span("reconcile", {"edgewise.model": "m"}) as span:
        span.set_attribute("edgewise.writes", 3)
    tracing.flush()  # nothing to flush, and no error


def test_exceptions_propagate_through_a_no_op_span(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_trace", None)
    with pytest.raises(ValueError, match="boom"), tracing.span("x"):
        raise ValueError("boom")


def test_attributes_keep_only_what_a_span_can_hold() -> None:
    assert tracing.clean({"a": "s", "b": 1, "c": 1.5, "d": True, "e": None, "f": object()}) == {
        "a": "s", "b": 1, "c": 1.5, "d": True}


CHILD = """
from edgewise.shared import tracing
assert tracing.configure("edgewise-test")
with tracing.span("reconcile", {"edgewise.model": "m", "skipped": None}) as outer:
    outer.set_attribute("edgewise.writes", 2)
    with tracing.span("read"):
        pass
try:
    with tracing.span("status"):
        raise RuntimeError("patch failed")
except RuntimeError:
    pass
tracing.flush()
"""


def _console_spans(env: dict[str, str]) -> list[dict]:
    run = subprocess.run([sys.executable, "-c", CHILD], env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=60, check=True)
    decoder, text, spans, i = json.JSONDecoder(), run.stdout, [], 0
    while (start := text.find("{", i)) != -1:
        span, i = decoder.raw_decode(text, start)
        spans.append(span)
    return spans


def test_configured_spans_nest_and_carry_attributes_and_errors() -> None:
    spans = {s["name"]: s for s in _console_spans({"OTEL_TRACES_EXPORTER": "console",
                                                     "OTEL_SERVICE_NAME": "from-env"})}
    assert set(spans) == {"reconcile", "read", "status"}
    reconcile, read, status = spans["reconcile"], spans["read"], spans["status"]
    assert read["parent_id"] == reconcile["context"]["span_id"]
    assert read["context"]["trace_id"] == reconcile["context"]["trace_id"]
    assert reconcile["parent_id"] is None
    assert reconcile["attributes"] == {"edgewise.model": "m", "edgewise.writes": 2}
    assert status["status"]["status_code"] == "ERROR"
    assert reconcile["resource"]["attributes"]["service.name"] == "from-env"  # OTEL_SERVICE_NAME wins


# ---- where the OTEL_* variables go: the node agents and the optimization Jobs ----------------------

def test_the_operators_otel_variables_are_passed_on_but_not_its_service_name() -> None:
    from edgewise.api.settings import OperatorSettings

    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318", "OTEL_SERVICE_NAME": "edgewise-operator",
           "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "PATH": "/usr/bin"}
    assert OperatorSettings.from_env(env).trace_env == {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318",
                                                        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio"}
    # EDGEWISE_TRACE_ENV, when set, is what they get instead.
    assert OperatorSettings.from_env({**env, "EDGEWISE_TRACE_ENV": "OTEL_TRACES_EXPORTER=none"}).trace_env == {
        "OTEL_TRACES_EXPORTER": "none"}
    assert OperatorSettings().trace_env == {}


def test_agents_and_optimization_jobs_get_the_trace_variables() -> None:
    from edgewise.api.profile import HardwareClass
    from edgewise.api.resources import EdgeModel
    from edgewise.api.settings import OperatorSettings
    from edgewise.core.agent import agent_daemonset
    from edgewise.core.optimization import job_manifest, job_spec

    settings = OperatorSettings(trace_env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318"})
    agent = agent_daemonset(settings)["spec"]["template"]["spec"]["containers"][0]
    cpu = HardwareClass.model_validate({"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"},
                                       "runtime": "onnxruntime", "precision": "int8"})
    model = EdgeModel.model_validate({
        "apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel", "metadata": {"name": "m", "namespace": "ns"},
        "spec": {"version": "1", "source": {"uri": "https://models.example/m.onnx", "sha256": "a" * 64},
                 "optimization": {"runIn": "Job"}}})
    spec = job_spec(model, cpu, [])
    assert spec
    job = job_manifest(spec, settings, who="ns/m")["spec"]["template"]["spec"]["containers"][0]
    for container in (agent, job):
        assert {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel:4318"} in container["env"], container
    untraced = agent_daemonset(OperatorSettings())["spec"]["template"]["spec"]["containers"][0]["env"]
    assert not any(e["name"].startswith("OTEL_") for e in untraced)
