"""The planner: one DaemonSet per class (and GPU variant), exactly on the class's nodes."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

import pytest
from planning_support import (
    SHA,
    builtin,
    factory_floor,
    fleet,
    model,
    observed_from,
    profile_of,
    restricted_violations,
)

from edgewise import contract
from edgewise.api.settings import OperatorSettings
from edgewise.core import names
from edgewise.core.agent import agent_daemonset
from edgewise.core.classify import classify
from edgewise.core.observed import NodeInfo
from edgewise.core.plan import ModelPlan, WorkloadPlan, plan_model, spec_hash
from edgewise.core.rollout import Observed, advance
from edgewise.core.rollout.placement import deletions
from edgewise.core.runtimes import Artifact
from edgewise.core.selector import Requirement, terms_match

SETTINGS = OperatorSettings()
FLEET = fleet(jetson_orin=2, jetson_xavier=1, arm64_cpu=3, amd64_cpu=1)


def _plan(m=None, profile=None, nodes=FLEET, existing=(), settings=SETTINGS, **kw: Any) -> ModelPlan:
    return plan_model(
        m or model(), factory_floor() if profile is None else profile, nodes, list(existing), settings, **kw
    )


def _by_name(plan: ModelPlan) -> dict[str, WorkloadPlan]:
    return {w.name: w for w in plan.workloads}


def _pod(w: WorkloadPlan) -> dict[str, Any]:
    return w.manifest["spec"]["template"]["spec"]


def _selected(w: WorkloadPlan, nodes: list[NodeInfo]) -> list[str]:
    """The nodes the scheduler would place this DaemonSet's pods on (required node affinity)."""
    terms = w.manifest["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    parsed = [
        frozenset(
            Requirement(e["key"], e["operator"], tuple(e.get("values", ()))) for e in t["matchExpressions"]
        )
        for t in terms
    ]
    return sorted(n.name for n in nodes if terms_match(parsed, n.labels))


def test_one_daemonset_per_class_named_for_a_second_slot() -> None:
    plan = _plan()
    assert sorted(_by_name(plan)) == [
        "defect-detector-arm-cpu-a",
        "defect-detector-jetson-orin-sm87-a",
        "defect-detector-x86-vnni-a",
    ]
    ds = _by_name(plan)["defect-detector-arm-cpu-a"].manifest
    assert ds["metadata"]["namespace"] == "vision"
    assert ds["spec"]["selector"]["matchLabels"] == {
        names.MODEL_LABEL: "defect-detector",
        names.CLASS_LABEL: "arm-cpu",
        names.SLOT_LABEL: "a",
    }
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert labels[names.VERSION_LABEL] == "2.1.0" and labels[names.MANAGED_BY] == "edgewise"
    assert set(ds["spec"]["selector"]["matchLabels"].items()) <= set(labels.items())
    assert plan.unmatched == ("jetson-xavier-0",)


def test_owner_reference_lets_the_garbage_collector_clean_up() -> None:
    ref = _by_name(_plan())["defect-detector-arm-cpu-a"].manifest["metadata"]["ownerReferences"]
    assert ref == [
        {
            "apiVersion": "edgewise.io/v1alpha1",
            "kind": "EdgeModel",
            "name": "defect-detector",
            "uid": "uid-defect-detector",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


@pytest.mark.parametrize("profile", [factory_floor(), builtin()], ids=["factory-floor", "built-in"])
def test_affinity_selects_exactly_the_classified_nodes(profile) -> None:
    extra = [NodeInfo("plain", {"kubernetes.io/arch": "arm64", "nvidia.com/gpu.present": "true"})]
    nodes = [*FLEET, *extra]
    plan = _plan(profile=profile, nodes=nodes)
    result = classify(profile.spec, nodes)
    for cls in plan.classes:
        selected = sorted(n for w in cls.workloads for n in _selected(w, nodes))
        assert selected == sorted(
            n.name for n in result.members(cls.name).nodes if n.name not in cls.rejected
        ), cls.name
        for w in cls.workloads:
            assert sorted(w.nodes) == _selected(w, nodes)


def test_onnxruntime_pod_is_restricted_and_fetches_from_its_nodes_agent() -> None:
    pod = _pod(_by_name(_plan())["defect-detector-arm-cpu-a"])
    assert restricted_violations(pod) == []
    assert all(
        c["securityContext"]["readOnlyRootFilesystem"] for c in pod["containers"] + pod["initContainers"]
    )
    assert pod["automountServiceAccountToken"] is False and "runtimeClassName" not in pod
    assert {v["name"]: v for v in pod["volumes"]}[contract.MODEL_VOLUME] == {"name": "models", "emptyDir": {}}
    (fetch,) = pod["initContainers"]
    assert fetch["command"] == ["edgewise", "fetch"] and fetch["image"] == "edgewise/onnxruntime:0.1.0"
    assert {
        "name": contract.AGENT_HOST_ENV,
        "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}},
    } in fetch["env"]
    parser = argparse.ArgumentParser()
    contract.FetchRequest.add_arguments(parser)
    req = contract.FetchRequest.from_args(parser.parse_args(fetch["args"]))
    assert req == contract.FetchRequest(
        uri="https://models.example.com/defect-detector.onnx",
        sha256=SHA,
        model_name="defect-detector",
        layout=contract.Layout.ONNXRUNTIME,
        dest=contract.MODEL_ROOT,
        agent=f"http://$({contract.AGENT_HOST_ENV}):{contract.AGENT_PORT}",
        precision="fp32",
        source_sha256=SHA,  # the source is served as it is here: the fetch checks it is the pinned source
    )
    assert {"name": "models", "mountPath": contract.MODEL_ROOT, "readOnly": False} in fetch["volumeMounts"]


def test_onnxruntime_server_gets_threads_batching_resources_probes_and_ports() -> None:
    (server,) = _pod(_by_name(_plan())["defect-detector-arm-cpu-a"])["containers"]
    assert server["command"] == ["edgewise", "serve"]
    args = server["args"]
    assert args[:4] == [
        "--model-dir",
        contract.model_dir("defect-detector"),
        "--model-name",
        "defect-detector",
    ]
    assert args[args.index("--threads") + 1] == "4" and "--max-batch-size" not in args
    assert server["resources"] == {
        "requests": {"cpu": "500m", "memory": "256Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert [p["containerPort"] for p in server["ports"]] == [8000, 8001, 8002]
    assert server["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    # A terminating pod keeps serving while its endpoint's removal reaches kube-proxy, then drains.
    assert server["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert _pod(_by_name(_plan())["defect-detector-arm-cpu-a"])["terminationGracePeriodSeconds"] > 5 + 30
    assert {"name": "models", "mountPath": contract.MODEL_ROOT, "readOnly": True} in server["volumeMounts"]
    x86 = _pod(_by_name(_plan())["defect-detector-x86-vnni-a"])["containers"][0]["args"]
    assert (
        x86[x86.index("--max-batch-size") + 1] == "16"
        and x86[x86.index("--max-queue-delay-us") + 1] == "1000"
    )


def test_triton_tensorrt_pod_uses_the_igpu_image_the_gpu_and_the_nvidia_runtime() -> None:
    w = _by_name(_plan())["defect-detector-jetson-orin-sm87-a"]
    pod = _pod(w)
    assert pod["runtimeClassName"] == "nvidia"
    assert restricted_violations(pod) == []  # Triton needs only the RuntimeClass and the GPU
    (server,) = pod["containers"]
    assert server["image"].endswith("-igpu") and server["command"] == ["tritonserver"]
    assert f"--model-repository={contract.MODEL_ROOT}" in server["args"]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    (fetch,) = pod["initContainers"]
    assert fetch["image"] == SETTINGS.tensorrt_fetch_image
    assert {"name": contract.GPU_COMPUTE_CAPABILITY_ENV, "value": "8.7"} in fetch["env"]
    assert fetch["args"][fetch["args"].index("--layout") + 1] == "triton-tensorrt"
    assert fetch["args"][fetch["args"].index("--precision") + 1] == "fp16"
    assert fetch["args"][fetch["args"].index("--max-batch-size") + 1] == "8"
    assert fetch["resources"]["limits"]["nvidia.com/gpu"] == "1"  # trtexec builds on the GPU


def test_jetsons_of_different_compute_capability_get_separate_workloads() -> None:
    plan = _plan(profile=builtin())
    jetson = next(c for c in plan.classes if c.name == "jetson")
    assert [w.name for w in jetson.workloads] == [
        "defect-detector-jetson-sm72-a",
        "defect-detector-jetson-sm87-a",
    ]
    assert jetson.compute_capabilities == ("7.2", "8.7")
    assert [w.nodes for w in jetson.workloads] == [("jetson-xavier-0",), ("jetson-orin-0", "jetson-orin-1")]
    env = {e["name"]: e.get("value") for e in _pod(jetson.workloads[0])["initContainers"][0]["env"]}
    assert env[contract.GPU_COMPUTE_CAPABILITY_ENV] == "7.2"


def test_a_jetson_without_compute_capability_labels_is_reported_not_served() -> None:
    odd = NodeInfo("odd-jetson", {"kubernetes.io/arch": "arm64", "nvidia.com/gpu.family": "ampere"})
    jetson = next(c for c in _plan(profile=builtin(), nodes=[odd]).classes if c.name == "jetson")
    assert jetson.workloads == () and jetson.rejected == ("odd-jetson",)
    assert "nvidia.com/gpu.compute.major" in jetson.notes[0]


def test_images_come_from_settings_and_class_overrides() -> None:
    settings = OperatorSettings(
        image_registry="mirror.local:5000",
        onnxruntime_image="acme/ort:7",
        triton_image="acme/triton:1-igpu",
        allowed_images=("custom.local/ort",),  # a class's own image must be allowed (core/guards.py)
    )
    plan = _plan(
        settings=settings,
        profile=profile_of(
            {"name": "cpu", "runtime": "onnxruntime", "nodeSelector": {"kubernetes.io/arch": "amd64"}},
            {
                "name": "arm",
                "runtime": "onnxruntime",
                "image": "custom.local/ort:x",
                "nodeSelector": {"kubernetes.io/arch": "arm64"},
            },
        ),
    )
    cpu, arm = (_pod(w) for w in plan.workloads)
    assert cpu["containers"][0]["image"] == "mirror.local:5000/acme/ort:7"
    # The fetcher comes from the settings' ONNX Runtime image, also under a class's own server image.
    assert cpu["initContainers"][0]["image"] == arm["initContainers"][0]["image"] == "mirror.local:5000/acme/ort:7"
    assert arm["containers"][0]["image"] == "custom.local/ort:x"
    assert [c.image for c in plan.classes] == ["mirror.local:5000/acme/ort:7", "custom.local/ort:x"]


def test_classes_with_no_nodes_still_get_a_daemonset_so_new_nodes_are_served_at_once() -> None:
    plan = _plan(nodes=fleet(amd64_cpu=1))
    assert "defect-detector-arm-cpu-a" in _by_name(plan)
    assert "defect-detector-jetson-orin-sm87-a" not in _by_name(plan)  # TensorRT needs a known GPU first
    assert next(c for c in plan.classes if c.name == "arm-cpu").nodes == ()


def test_replanning_keeps_the_slot_a_workload_already_uses() -> None:
    first = _by_name(_plan())["defect-detector-arm-cpu-a"].manifest
    moved = {
        **first,
        "metadata": {
            **first["metadata"],
            "name": "defect-detector-arm-cpu-b",
            "labels": {**first["metadata"]["labels"], names.SLOT_LABEL: "b"},
        },
    }
    plan = _plan(existing=[observed_from(moved)])
    assert "defect-detector-arm-cpu-b" in _by_name(plan) and "defect-detector-arm-cpu-a" not in _by_name(plan)
    assert deletions(plan.classes, [observed_from(moved)], plan.workloads) == ()


def test_removed_class_workloads_are_deleted_others_untouched() -> None:
    before = _plan()
    existing = [observed_from(w.manifest) for w in before.workloads]
    fewer = profile_of(
        {"name": "arm-cpu", "runtime": "onnxruntime", "nodeSelector": {"kubernetes.io/arch": "arm64"}},
        name="factory-floor",
    )
    after = _plan(profile=fewer, existing=existing)
    assert deletions(after.classes, existing, after.workloads) == ("defect-detector-jetson-orin-sm87-a",
                                                                   "defect-detector-x86-vnni-a")
    assert [w.name for w in after.workloads] == ["defect-detector-arm-cpu-a"]


def test_missing_profile_plans_nothing_and_deletes_nothing() -> None:
    existing = [observed_from(w.manifest) for w in _plan().workloads]
    plan = plan_model(model(), None, FLEET, existing, SETTINGS)
    rollout = advance(model(), plan, Observed(FLEET, existing), None, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert plan.workloads == () and rollout.apply == () and rollout.delete == ()
    assert sorted(plan.keep) == sorted(w.name for w in existing)


def test_a_class_that_cannot_be_expressed_keeps_its_workloads() -> None:
    many = [
        {
            "name": f"c{i}",
            "runtime": "onnxruntime",
            "matchExpressions": [{"key": f"k{i}-{j}", "operator": "Exists"} for j in range(3)],
        }
        for i in range(8)
    ]
    last = {"name": "arm-cpu", "runtime": "onnxruntime", "nodeSelector": {"kubernetes.io/arch": "arm64"}}
    existing = [observed_from(_by_name(_plan())["defect-detector-arm-cpu-a"].manifest)]
    plan = _plan(profile=profile_of(*many, last), existing=existing)
    arm = next(c for c in plan.classes if c.name == "arm-cpu")
    assert arm.error and "node-affinity terms" in arm.error
    assert plan.keep == ("defect-detector-arm-cpu-a",) and deletions(plan.classes, existing, plan.workloads) == ()


def test_a_shadowed_class_runs_nothing_and_says_why() -> None:
    shadow = profile_of(
        {"name": "arm", "runtime": "onnxruntime", "nodeSelector": {"kubernetes.io/arch": "arm64"}},
        {
            "name": "orin",
            "runtime": "triton-tensorrt",
            "nodeSelector": {"kubernetes.io/arch": "arm64", "nvidia.com/gpu.family": "ampere"},
        },
    )
    orin = next(c for c in _plan(profile=shadow).classes if c.name == "orin")
    assert orin.workloads == () and "earlier class" in orin.notes[0]


def test_spec_hash_is_stable_and_tracks_changes() -> None:
    a = _plan()
    b = _plan(nodes=list(reversed(FLEET)))
    assert [w.spec_hash for w in a.workloads] == [w.spec_hash for w in b.workloads]
    assert all(w.spec_hash == spec_hash(w.manifest) for w in a.workloads)
    newer = _plan(m=model(version="2.2.0"))
    assert {w.spec_hash for w in a.workloads}.isdisjoint({w.spec_hash for w in newer.workloads})


def test_adding_a_node_of_a_known_kind_changes_no_workload() -> None:
    """New nodes reach the DaemonSet through its affinity: the operator writes nothing for them."""
    before = _plan()
    after = _plan(nodes=[*FLEET, *fleet(arm64_cpu=5)[3:]])
    assert [w.spec_hash for w in before.workloads] == [w.spec_hash for w in after.workloads]
    assert len(next(c for c in after.classes if c.name == "arm-cpu").nodes) == 5


def test_optimized_artifacts_replace_the_source_per_class() -> None:
    art = Artifact(uri="http://store.local/int8.onnx", sha256="d" * 64, precision="int8")
    plan = _plan(artifacts={"arm-cpu": art})
    arm = next(c for c in plan.classes if c.name == "arm-cpu")
    fetch = _pod(arm.workloads[0])["initContainers"][0]["args"]
    assert fetch[fetch.index("--sha256") + 1] == "d" * 64 and fetch[fetch.index("--precision") + 1] == "int8"
    assert not arm.notes  # no "serving fp32 until…" note once the int8 artifact exists
    x86 = next(c for c in plan.classes if c.name == "x86-vnni")
    assert x86.artifact.sha256 == SHA and "fp32 source model" in x86.notes[0]


def test_a_gated_fp32_artifact_for_an_int8_class_is_not_waiting_for_anything() -> None:
    # The speed or accuracy gate chose fp32: that is the optimized artifact, not the source awaiting one.
    art = Artifact(uri="http://store.local/fp32.onnx", sha256="e" * 64, precision="fp32")
    plan = _plan(artifacts={"arm-cpu": art})
    arm = next(c for c in plan.classes if c.name == "arm-cpu")
    assert arm.artifact.sha256 == "e" * 64 and not arm.notes


def test_tolerations_of_the_class_are_rendered() -> None:
    plan = _plan(
        profile=profile_of(
            {
                "name": "cpu",
                "runtime": "onnxruntime",
                "nodeSelector": {"kubernetes.io/arch": "amd64"},
                "tolerations": [{"key": "edge", "operator": "Exists"}],
            }
        )
    )
    assert _pod(plan.workloads[0])["tolerations"] == [{"key": "edge", "operator": "Exists"}]


def test_node_agent_is_the_only_host_level_component() -> None:
    settings = OperatorSettings(namespace="ew-system", agent_namespace="ew-node", agent_image="acme/agent:3")
    ds = agent_daemonset(settings)
    pod = ds["spec"]["template"]["spec"]
    assert ds["metadata"]["namespace"] == "ew-node" and pod["hostNetwork"] is True
    (hostpath,) = [v for v in pod["volumes"] if "hostPath" in v]
    assert hostpath["hostPath"]["path"] == settings.agent_cache_dir
    (agent,) = pod["containers"]
    assert agent["image"] == "acme/agent:3" and agent["command"] == ["edgewise", "agent"]
    assert agent["args"][agent["args"].index("--port") + 1] == str(contract.AGENT_PORT)
    assert agent["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert ds["metadata"]["annotations"][names.SPEC_HASH_ANNOTATION] == spec_hash(ds)
    for w in _plan().workloads:  # and no runtime pod touches the host
        pod = _pod(w)
        assert not pod.get("hostNetwork") and all("hostPath" not in v for v in pod["volumes"])


def test_every_runtime_a_profile_can_name_has_an_implementation() -> None:
    from typing import get_args

    from edgewise.contract import Runtime
    from edgewise.core.runtimes import get_runtime

    assert [get_runtime(name).name for name in get_args(Runtime)] == list(get_args(Runtime))
