"""Invalid resources are refused by the real apiserver at `kubectl apply`, with a message that helps."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from operator_support import apply, example, install_crds

from edgewise.devcluster.cluster import DevCluster

Mutate = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module")
def crd_ns(cluster: DevCluster) -> Iterator[str]:
    install_crds(cluster)
    name = f"crd-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _model(ns: str) -> dict[str, Any]:
    return example("defect-detector.yaml", ns)[0]


def _profile(ns: str) -> dict[str, Any]:
    return example("factory-floor-profile.yaml", ns)[0]


def _set(path: str, value: Any) -> Mutate:
    """Mutation setting a dotted path (list indexes as numbers); value None deletes the key."""

    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        if value is None:
            del node[int(last) if last.isdigit() else last]
        else:
            node[int(last) if last.isdigit() else last] = value

    return mutate


def _steps(*steps: dict[str, Any]) -> Mutate:
    return _set("spec.rollout.steps", list(steps))


HTTP = "https://models.example.com/m.onnx"
MODEL_CASES: list[tuple[str, Mutate, list[str]]] = [
    ("http-source-without-sha256", _set("spec.source.sha256", None), ["an http(s) uri needs sha256"]),
    (
        "file-source-without-sha256",
        lambda d: d["spec"].update(source={"uri": "file:///models/m.onnx"}),
        ["a file:// uri needs sha256"],
    ),
    (
        "oci-source-not-pinned",
        lambda d: d["spec"].update(source={"uri": "oci://registry.local/m:latest"}),
        ["an oci:// uri needs sha256 or a reference pinned by digest"],
    ),
    ("sha256-not-hex", _set("spec.source.sha256", "Z" * 64), ["spec.source.sha256", "should match"]),
    ("sha256-too-short", _set("spec.source.sha256", "abc"), ["spec.source.sha256", "at least 64"]),
    (
        "unsupported-uri-scheme",
        _set("spec.source.uri", "ftp://models.example.com/m.onnx"),
        ["spec.source.uri", "should match"],
    ),
    ("missing-version", _set("spec.version", None), ["spec.version: Required value"]),
    ("version-with-spaces", _set("spec.version", "2.1 beta"), ["spec.version", "should match"]),
    (
        "static-quantization-without-calibration",
        _set("spec.optimization.quantization", "static"),
        ["static int8 quantization needs calibration data"],
    ),
    (
        "unknown-quantization",
        _set("spec.optimization.quantization", "int4"),
        ['spec.optimization.quantization: Unsupported value: "int4"'],
    ),
    (
        "job-memory-without-a-job",
        _set("spec.optimization.jobMemory", "16Gi"),
        ["spec.optimization.jobMemory", "set runIn: Job"],
    ),
    (
        "job-memory-not-a-size",
        _set("spec.optimization.jobMemory", "lots"),
        ["spec.optimization.jobMemory", "should match"],
    ),
    (
        "unknown-run-in",
        _set("spec.optimization.runIn", "Lambda"),
        ['spec.optimization.runIn: Unsupported value: "Lambda"'],
    ),
    (
        "cosine-above-one",
        _set("spec.optimization.accuracyGate.minCosine", 1.5),
        ["spec.optimization.accuracyGate.minCosine", "less than or equal to 1"],
    ),
    (
        "calibration-over-http-without-sha256",
        _set("spec.optimization.calibration", {"uri": HTTP}),
        ["an http(s) uri needs sha256"],
    ),
    (
        "steps-decreasing",
        _steps({"percent": 50}, {"percent": 10}, {"percent": 100}),
        ["step percents must strictly increase"],
    ),
    (
        "steps-repeating",
        _steps({"percent": 50}, {"pause": {}}, {"percent": 50}, {"percent": 100}),
        ["step percents must strictly increase"],
    ),
    ("steps-not-ending-at-100", _steps({"percent": 10}, {"percent": 50}), ["the last step must be {percent: 100}"]),
    (
        "step-with-percent-and-pause",
        _steps({"percent": 10, "pause": {}}, {"percent": 100}),
        ["a step sets exactly one of percent, sites, sitesPercent or pause"],
    ),
    (
        "step-with-sites-and-percent",
        _steps({"sites": 1, "percent": 10}, {"percent": 100}),
        ["a step sets exactly one of percent, sites, sitesPercent or pause"],
    ),
    (
        "canary-sites-on-a-pause",
        _steps({"sites": 1}, {"pause": {}, "canarySites": ["berlin"]}, {"percent": 100}),
        ["canarySites pins sites to a step that moves nodes"],
    ),
    (
        "canary-sites-repeated",
        _steps({"sites": 1, "canarySites": ["berlin", "berlin"]}, {"percent": 100}),
        ["canarySites must not repeat a site"],
    ),
    ("step-percent-zero", _steps({"percent": 0}, {"percent": 100}), ["greater than or equal to 1"]),
    (
        "pause-duration-in-words",
        _steps({"percent": 10}, {"pause": {"duration": "ten minutes"}}, {"percent": 100}),
        ["spec.rollout.steps[1].pause.duration", "should match"],
    ),
    ("no-steps", _steps(), ["spec.rollout.steps", "should have at least 1 items"]),
    (
        "unknown-class-policy",
        _set("spec.rollout.classPolicy", "Sometimes"),
        ['spec.rollout.classPolicy: Unsupported value: "Sometimes"'],
    ),
    (
        "error-rate-above-one",
        _set("spec.rollout.analysis.maxErrorRate", 2),
        ["spec.rollout.analysis.maxErrorRate", "less than or equal to 1"],
    ),
    (
        "negative-failure-limit",
        _set("spec.rollout.analysis.failureLimit", -1),
        ["spec.rollout.analysis.failureLimit", "greater than or equal to 0"],
    ),
    (
        "analysis-interval-without-unit",
        _set("spec.rollout.analysis.interval", "60"),
        ["spec.rollout.analysis.interval", "should match"],
    ),
    (
        "prometheus-without-address",
        _set("spec.rollout.analysis.provider", "prometheus"),
        ["the prometheus provider needs analysis.prometheus.address"],
    ),
    ("profile-ref-not-a-name", _set("spec.profileRef", "Factory_Floor"), ["spec.profileRef", "should match"]),
    (
        "name-too-long",
        _set("metadata.name", "a-very-long-model-name-that-cannot-fit-workload-names"),
        ["EdgeModel names are at most 40 characters"],
    ),
    ("unknown-field", _set("spec.replicas", 3), ['unknown field "spec.replicas"']),
    # Values that reach operator loops and rendered objects (issue 15 §4): refused at apply, not later.
    (
        "analysis-interval-that-would-spin",
        _set("spec.rollout.analysis.interval", "0s"),
        ["analysis.interval must be between 1s and 24h"],
    ),
    (
        "analysis-interval-of-a-year",
        _set("spec.rollout.analysis.interval", "8760h"),
        ["analysis.interval must be between 1s and 24h"],
    ),
    ("progress-deadline-of-no-time", _set("spec.rollout.progressDeadline", "1ms"), ["progressDeadline must be"]),
    (
        "pause-beyond-time-arithmetic",
        _steps({"percent": 10}, {"pause": {"duration": "999999999h"}}, {"percent": 100}),
        ["spec.rollout.steps[1].pause.duration"],
    ),
    (
        "window-schedule-with-an-hour-25",
        _set("spec.rollout.windows", {"activation": [{"schedule": "0 25 * * *", "duration": "2h"}]}),
        ["schedule must be a 5-field cron expression"],
    ),
    (
        "window-schedule-of-six-fields",
        _set("spec.rollout.windows", {"staging": [{"schedule": "0 0 2 * * *", "duration": "2h"}]}),
        ["schedule must be a 5-field cron expression"],
    ),
    (
        "window-of-two-months",
        _set("spec.rollout.windows", {"activation": [{"schedule": "@daily", "duration": "1464h"}]}),
        ["a window's duration must be between 1m and 744h"],
    ),
    (
        "window-time-zone-with-a-space",
        _set("spec.rollout.windows", {"activation": [{"schedule": "@daily", "duration": "1h",
                                                      "timeZone": "Europe Berlin"}]}),
        ["timeZone must be an IANA time zone name such as Europe/Berlin"],
    ),
    (
        "window-of-another-kind",
        _set("spec.rollout.windows", {"activation": [{"kind": "Maybe", "schedule": "@daily", "duration": "1h"}]}),
        ["spec.rollout.windows.activation[0].kind", "Unsupported value"],
    ),
    (
        "job-memory-too-small-to-run",
        lambda d: d["spec"]["optimization"].update(runIn="Job", jobMemory="1Ki"),
        ["jobMemory must be between 256Mi and 1Ti"],
    ),
    (
        "source-uri-with-a-newline",
        _set("spec.source.uri", "https://models.example.com/m.onnx\nX-Injected: 1"),
        ["spec.source.uri", "should match"],
    ),
    (
        "source-uri-not-ascii",  # found by the admission property test: its DaemonSet could never be applied
        _set("spec.source.uri", "file:///models/\U00010000.onnx"),
        ["spec.source.uri", "should match"],
    ),
    ("profile-ref-with-empty-label", _set("spec.profileRef", "factory..floor"), ["spec.profileRef", "should match"]),
]

PROFILE_CASES: list[tuple[str, Mutate, list[str]]] = [
    (
        "duplicate-class-names",
        lambda d: d["spec"]["classes"].append(copy.deepcopy(d["spec"]["classes"][1])),
        ["class names must be unique within a profile"],
    ),
    (
        "class-without-selector",
        lambda d: d["spec"]["classes"][1].pop("nodeSelector") and d["spec"]["classes"][1].pop("matchExpressions"),
        ["a class needs a nodeSelector or matchExpressions"],
    ),
    (
        "unknown-runtime",
        _set("spec.classes.0.runtime", "tensorflow"),
        ['spec.classes[0].runtime: Unsupported value: "tensorflow"'],
    ),
    (
        "unknown-precision",
        _set("spec.classes.0.precision", "fp8"),
        ['spec.classes[0].precision: Unsupported value: "fp8"'],
    ),
    (
        "in-without-values",
        _set("spec.classes.1.matchExpressions", [{"key": "a", "operator": "In"}]),
        ["operators In and NotIn need at least one value"],
    ),
    (
        "exists-with-values",
        _set("spec.classes.1.matchExpressions", [{"key": "a", "operator": "Exists", "values": ["x"]}]),
        ["operators Exists and DoesNotExist take no values"],
    ),
    (
        "gt-not-an-integer",
        _set(
            "spec.classes.1.matchExpressions",
            [{"key": "nvidia.com/gpu.compute.major", "operator": "Gt", "values": ["ampere"]}],
        ),
        ["operators Gt and Lt need exactly one integer value"],
    ),
    (
        "unknown-operator",
        _set("spec.classes.1.matchExpressions", [{"key": "a", "operator": "Like"}]),
        ['spec.classes[1].matchExpressions[0].operator: Unsupported value: "Like"'],
    ),
    ("threads-on-triton", _set("spec.classes.0.threads", 4),
     ["threads applies only to the onnxruntime and openvino runtimes"]),
    ("device-on-triton", _set("spec.classes.0.device", "GPU"),
     ["device applies only to the openvino runtime; remove it, or set runtime: openvino"]),
    ("unknown-openvino-device", _set("spec.classes.0.device", "VPU"),
     ['spec.classes[0].device: Unsupported value: "VPU"']),
    ("class-name-with-capitals", _set("spec.classes.0.name", "Jetson_Orin"), ["spec.classes[0].name", "should match"]),
    (
        "class-name-too-long",
        _set("spec.classes.0.name", "jetson-orin-agx-64gb-industrial"),
        ["spec.classes[0].name", "may not be more than 20"],
    ),
    ("no-classes", _set("spec.classes", []), ["spec.classes", "should have at least 1 items"]),
    (
        "batch-size-zero",
        _set("spec.classes.0.batching.maxBatchSize", 0),
        ["spec.classes[0].batching.maxBatchSize", "greater than or equal to 1"],
    ),
    (
        "negative-latency-slo",
        _set("spec.classes.0.slo.p95LatencyMs", -5),
        ["spec.classes[0].slo.p95LatencyMs", "greater than 0"],
    ),
    (
        "toleration-without-key-equal",
        _set("spec.classes.0.tolerations", [{"operator": "Equal", "value": "x"}]),
        ["a toleration without a key must use operator Exists"],
    ),
    # Values that reach the rendered DaemonSet (issue 15 §4): refused at apply, not when the DaemonSet is.
    (
        "node-selector-key-not-a-label",
        _set("spec.classes.1.nodeSelector", {"arch is": "arm64"}),
        ["keys must be Kubernetes label keys"],
    ),
    (
        "node-selector-key-prefix-not-dns",
        _set("spec.classes.1.nodeSelector", {"Example.COM/arch": "arm64"}),
        ["keys must be Kubernetes label keys"],
    ),
    (
        "node-selector-value-not-a-label",
        _set("spec.classes.1.nodeSelector", {"kubernetes.io/arch": "arm 64"}),
        ["spec.classes[1].nodeSelector.kubernetes.io/arch", "should match"],
    ),
    (
        "match-expression-key-not-a-label",
        _set("spec.classes.1.matchExpressions", [{"key": "-gpu", "operator": "Exists"}]),
        ["spec.classes[1].matchExpressions[0].key", "should match"],
    ),
    (
        "match-expression-value-not-a-label",
        _set("spec.classes.1.matchExpressions", [{"key": "a", "operator": "In", "values": ["x/y"]}]),
        ["spec.classes[1].matchExpressions[0].values[0]", "should match"],
    ),
    (
        "gt-beyond-int64",
        _set("spec.classes.1.matchExpressions", [{"key": "a", "operator": "Gt", "values": ["9" * 30]}]),
        ["operators Gt and Lt need exactly one integer value"],
    ),
    (
        "gt-negative",  # label values cannot be negative, so node affinity refuses it
        _set("spec.classes.1.matchExpressions", [{"key": "a", "operator": "Lt", "values": ["-1"]}]),
        ["operators Gt and Lt need exactly one integer value"],
    ),
    (
        "request-not-a-quantity",
        _set("spec.classes.1.resources", {"requests": {"cpu": "two"}}),
        ["must be a Kubernetes quantity"],
    ),
    (
        "negative-limit",
        _set("spec.classes.1.resources", {"limits": {"memory": -1}}),
        ["must be a Kubernetes quantity that is not negative"],
    ),
    (
        "request-above-limit",
        _set("spec.classes.1.resources", {"requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}}),
        ["each request must be at most its limit"],
    ),
    (
        "unknown-resource-name",
        _set("spec.classes.1.resources", {"limits": {"gpu": 1}}),
        ["resource names are cpu, memory, ephemeral-storage"],
    ),
    (
        "fractional-gpu",
        _set("spec.classes.0.resources", {"limits": {"nvidia.com/gpu": "500m"}}),
        ["counted in whole units"],
    ),
    (
        "gpu-request",
        _set("spec.classes.0.resources", {"requests": {"nvidia.com/gpu": 1}}),
        ["extended resources such as nvidia.com/gpu go in limits only"],
    ),
    ("image-with-spaces", _set("spec.classes.1.image", "my image:latest"), ["spec.classes[1].image", "should match"]),
    ("image-in-capitals", _set("spec.classes.1.image", "Edgewise/Node:1"), ["spec.classes[1].image", "should match"]),
    (
        "toleration-key-not-a-label",
        _set("spec.classes.0.tolerations", [{"key": "dedicated node", "operator": "Exists"}]),
        ["spec.classes[0].tolerations[0].key", "should match"],
    ),
    (
        "toleration-seconds-without-no-execute",
        _set("spec.classes.0.tolerations", [{"key": "a", "operator": "Exists", "effect": "NoSchedule",
                                             "tolerationSeconds": 30}]),
        ["tolerationSeconds applies only to effect NoExecute"],
    ),
]


def _rejected(cluster: DevCluster, doc: dict[str, Any], expected: list[str]) -> str:
    result = apply(cluster, doc, check=False)
    assert result.returncode != 0, f"accepted: {doc}"
    for text in expected:
        assert text in result.stderr, f"{text!r} not in: {result.stderr}"
    return result.stderr


def test_the_examples_themselves_are_accepted(cluster: DevCluster, crd_ns: str) -> None:
    docs = (
        example("factory-floor-profile.yaml", crd_ns)
        + example("defect-detector.yaml", crd_ns)
        + example("text-embedder-builtin.yaml", crd_ns)
        + example("defect-detector-windows.yaml", crd_ns)
        + example("intel-profile.yaml", crd_ns)
    )
    out = apply(cluster, docs).stdout
    assert out.count("created") + out.count("unchanged") + out.count("configured") == 5


@pytest.mark.parametrize(("case", "mutate", "expected"), MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_invalid_edgemodels_are_refused(
    cluster: DevCluster, crd_ns: str, case: str, mutate: Mutate, expected: list[str]
) -> None:
    doc = _model(crd_ns)
    doc["metadata"]["name"] = f"bad-{case}"[:40].rstrip("-")
    mutate(doc)
    _rejected(cluster, doc, expected)


@pytest.mark.parametrize(("case", "mutate", "expected"), PROFILE_CASES, ids=[c[0] for c in PROFILE_CASES])
def test_invalid_profiles_are_refused(
    cluster: DevCluster, crd_ns: str, case: str, mutate: Mutate, expected: list[str]
) -> None:
    doc = _profile(crd_ns)
    doc["metadata"]["name"] = f"bad-{case}"
    mutate(doc)
    _rejected(cluster, doc, expected)


def test_there_are_at_least_twenty_distinct_rejections() -> None:
    messages = {tuple(expected) for _, _, expected in MODEL_CASES + PROFILE_CASES}
    assert len(MODEL_CASES) + len(PROFILE_CASES) >= 20 and len(messages) >= 20


def test_kubectl_explain_teaches_the_api(cluster: DevCluster, crd_ns: str) -> None:
    out = " ".join(cluster.kubectl("explain", "edgemodel.spec.rollout.analysis").stdout.split())
    assert "maxLatencyIncreasePercent" in out and "p95 latency increase of canary over stable" in out
    out = " ".join(cluster.kubectl("explain", "edgemodel.spec.rollout.windows.activation").stdout.split())
    assert "the first canary step, each next step" in out and "a rollback never waits" in out
    out = " ".join(cluster.kubectl("explain", "edgemodel.spec.rollout.windows.activation.timeZone").stdout.split())
    assert "edgewise.io/time-zone" in out and "Europe/Berlin" in out
    out = " ".join(cluster.kubectl("explain", "deploymentprofile.spec.classes").stdout.split())
    assert "first class it matches" in out and "triton-tensorrt" in out
    out = " ".join(cluster.kubectl("explain", "deploymentprofile.spec.classes.device").stdout.split())
    assert "npu.intel.com/accel" in out and "intel.feature.node.kubernetes.io/gpu=true" in out
