"""The typed API: examples parse, defaults match the CRD's, helpers behave."""

from __future__ import annotations

import pytest
from planning_support import example
from pydantic import ValidationError

from edgewise.api.builtin import BUILTIN_PROFILE
from edgewise.api.model import Rollout, Source
from edgewise.api.profile import HardwareClass
from edgewise.api.resources import DeploymentProfile, EdgeModel
from edgewise.api.settings import OperatorSettings


def test_brief_example_model_parses_with_defaults_filled_in() -> None:
    m = EdgeModel.model_validate(example("defect-detector.yaml"))
    assert (m.metadata.name, m.spec.profile_ref, m.spec.version) == (
        "defect-detector",
        "factory-floor",
        "2.1.0",
    )
    assert m.spec.optimization.accuracy_gate.min_cosine == 0.99
    assert m.spec.optimization.accuracy_gate.max_top1_drop_percent == 1.0  # default
    assert [s.percent or s.pause.duration for s in m.spec.rollout.steps] == [10, "10m", 50, 100]
    assert m.spec.rollout.analysis.max_latency_increase_percent == 20
    assert m.spec.rollout.class_policy == "Independent" and m.spec.rollout.auto_rollback


def test_model_without_rollout_gets_a_safe_canary_by_default() -> None:
    m = EdgeModel.model_validate(example("text-embedder-builtin.yaml"))
    assert m.spec.profile_ref is None
    steps = m.spec.rollout.steps
    assert steps[0].percent == 10 and steps[-1].percent == 100
    assert any(s.pause for s in steps)


def test_profile_example_parses_and_keeps_class_order() -> None:
    p = DeploymentProfile.model_validate(example("factory-floor-profile.yaml"))
    assert [c.name for c in p.spec.classes] == ["jetson-orin", "arm-cpu", "x86-vnni"]
    orin = p.spec.classes[0]
    assert orin.runtime == "triton-tensorrt" and orin.batching and orin.batching.max_batch_size == 8
    assert orin.slo and orin.slo.max_memory_mib == 512 and orin.slo.p95_latency_ms == 10


def test_wire_form_is_camel_case_and_round_trips() -> None:
    raw = example("factory-floor-profile.yaml")
    p = DeploymentProfile.model_validate(raw)
    wire = p.spec.to_api()
    assert wire["classes"][0]["slo"] == {"p95LatencyMs": 10.0, "maxMemoryMiB": 512}
    assert wire["classes"][0]["batching"] == {"maxBatchSize": 8, "maxQueueDelayMicroseconds": 500}
    assert DeploymentProfile.model_validate({"spec": wire}).spec == p.spec


def test_effective_precision_follows_the_runtime() -> None:
    trt = HardwareClass(name="a", node_selector={"k": "v"}, runtime="triton-tensorrt")
    ort = HardwareClass(name="b", node_selector={"k": "v"}, runtime="onnxruntime")
    assert (trt.effective_precision(), ort.effective_precision()) == ("fp16", "int8")
    assert (
        HardwareClass(
            name="c", node_selector={"k": "v"}, runtime="onnxruntime", precision="fp32"
        ).effective_precision()
        == "fp32"
    )


def test_builtin_profile_is_the_documented_one() -> None:
    classes = {c.name: c for c in BUILTIN_PROFILE.classes}
    assert list(classes) == ["jetson", "arm64-cpu", "amd64-cpu"]
    assert (classes["jetson"].runtime, classes["jetson"].effective_precision()) == ("triton-tensorrt", "fp16")
    assert classes["arm64-cpu"].node_selector == {"kubernetes.io/arch": "arm64"}
    assert (classes["amd64-cpu"].runtime, classes["amd64-cpu"].effective_precision()) == (
        "onnxruntime",
        "int8",
    )


def test_source_digest_comes_from_sha256_or_an_oci_pin() -> None:
    assert Source(uri="https://x/m.onnx", sha256="b" * 64).digest() == "b" * 64
    assert Source(uri="oci://reg.local/m@sha256:" + "c" * 64).digest() == "c" * 64


def test_python_side_enforces_types_bounds_and_enums() -> None:
    with pytest.raises(ValidationError):
        HardwareClass(name="a", node_selector={"k": "v"}, runtime="tensorflow")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        HardwareClass(name="Bad_Name", node_selector={"k": "v"}, runtime="onnxruntime")
    with pytest.raises(ValidationError):
        Rollout.model_validate({"steps": [{"percent": 101}]})


def test_settings_read_environment_and_flags_win() -> None:
    env = {
        "EDGEWISE_AGENT_IMAGE": "acme/agent:9",
        "EDGEWISE_WORKERS": "5",
        "EDGEWISE_AGENT_NODE_SELECTOR": "edge=true, zone=a",
        "EDGEWISE_IMAGE_REGISTRY": "mirror.local:5000",
    }
    s = OperatorSettings.from_env(env, workers=3, triton_image=None)
    assert s.agent_image == "acme/agent:9" and s.workers == 3
    assert s.agent_node_selector == {"edge": "true", "zone": "a"}
    assert s.image(s.agent_image) == "mirror.local:5000/acme/agent:9"
    assert s.image("other.registry.local/x:1") == "other.registry.local/x:1"  # already names a host
    assert OperatorSettings().image("a/b:1") == "a/b:1"  # no registry configured
