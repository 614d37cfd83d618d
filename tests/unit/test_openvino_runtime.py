"""The openvino runtime's pods: the server's backend and device, Intel device requests, NFD selectors,
and how a class with one device per node switches versions. GPUs and NPUs cannot run here; what a pod
asks of the scheduler can be checked, and is."""

from __future__ import annotations

from typing import Any

import pytest
from planning_support import model, profile_of, restricted_violations
from pydantic import ValidationError

from edgewise.api.optimization_job import JobInput, JobOptions, JobTarget, OptimizationJob
from edgewise.api.profile import HardwareClass
from edgewise.api.settings import OperatorSettings
from edgewise.core.observed import NodeInfo
from edgewise.core.optimization import job_spec
from edgewise.core.plan import ClassPlan, plan_model
from edgewise.core.rollout.switch import MAKE_BEFORE_BREAK, REPLACE, choose_mode
from edgewise.core.selector import Requirement, terms_match

SETTINGS = OperatorSettings()
X86 = {"kubernetes.io/arch": "amd64", "feature.node.kubernetes.io/cpu-model.vendor_id": "Intel"}
GPU_LABEL = {"intel.feature.node.kubernetes.io/gpu": "true"}
NPU_LABEL = {"intel.feature.node.kubernetes.io/npu": "true"}


def intel_class(**extra: Any) -> dict[str, Any]:
    return {"name": "intel", "nodeSelector": {"feature.node.kubernetes.io/cpu-model.vendor_id": "Intel"},
            "runtime": "openvino", **extra}


def nodes() -> list[NodeInfo]:
    return [NodeInfo("ipc-0", dict(X86)), NodeInfo("ipc-gpu-0", {**X86, **GPU_LABEL}),
            NodeInfo("ipc-npu-0", {**X86, **NPU_LABEL})]


def plan_class(**extra: Any) -> ClassPlan:
    (cp,) = plan_model(model(), profile_of(intel_class(**extra)), nodes(), [], SETTINGS).classes
    return cp


def pod(cp: ClassPlan) -> dict[str, Any]:
    (w,) = cp.workloads
    return w.manifest["spec"]["template"]["spec"]


def arg(container: dict[str, Any], flag: str) -> str:
    return container["args"][container["args"].index(flag) + 1]


def scheduled_on(cp: ClassPlan) -> list[str]:
    (w,) = cp.workloads
    terms = w.manifest["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    parsed = [{Requirement(e["key"], e["operator"], tuple(e.get("values", ()))) for e in t["matchExpressions"]}
              for t in terms]
    return [n.name for n in nodes() if terms_match(parsed, n.labels)]


def test_a_cpu_class_serves_with_openvino_on_every_node_of_the_class_from_the_openvino_image() -> None:
    cp = plan_class(threads=2)
    p = pod(cp)
    (server,), (fetch,) = p["containers"], p["initContainers"]
    assert server["command"] == ["edgewise", "serve"]
    assert (arg(server, "--backend"), arg(server, "--device"), arg(server, "--threads")) == ("openvino", "CPU", "2")
    assert server["image"] == fetch["image"] == SETTINGS.openvino_image == "edgewise/node-openvino:0.1.0"
    assert arg(fetch, "--layout") == "onnxruntime" and arg(fetch, "--precision") == "fp32"  # the source, until int8
    assert "limits" not in server["resources"] or not any("intel.com" in k for k in server["resources"]["limits"])
    assert restricted_violations(p) == []
    assert scheduled_on(cp) == ["ipc-0", "ipc-gpu-0", "ipc-npu-0"] and cp.rejected == ()
    assert cp.precision == "int8"  # the runtime's natural precision, as for onnxruntime


def test_a_gpu_class_requests_an_intel_gpu_and_runs_only_where_nfd_found_one() -> None:
    cp = plan_class(device="GPU", resources={"limits": {"memory": "1Gi"}})
    (server,) = pod(cp)["containers"]
    assert arg(server, "--device") == "GPU"
    assert server["resources"]["limits"] == {"memory": "1Gi", "gpu.intel.com/i915": "1"}
    assert scheduled_on(cp) == ["ipc-gpu-0"]
    assert set(cp.rejected) == {"ipc-0", "ipc-npu-0"}
    assert any("intel.feature.node.kubernetes.io/gpu=true" in n and n.startswith("ipc-0:") for n in cp.notes)
    assert restricted_violations(pod(cp)) == []  # a device plugin's device needs no privilege


def test_a_labelled_node_whose_device_plugin_offers_nothing_is_rejected_with_the_reason() -> None:
    offering = NodeInfo("ipc-gpu-0", {**X86, **GPU_LABEL}, allocatable={"gpu.intel.com/i915": "1", "cpu": "8"})
    no_plugin = NodeInfo("ipc-gpu-1", {**X86, **GPU_LABEL}, allocatable={"cpu": "8"})
    on_xe = NodeInfo("ipc-gpu-2", {**X86, **GPU_LABEL}, allocatable={"gpu.intel.com/xe": "1", "cpu": "8"})
    (cp,) = plan_model(model(), profile_of(intel_class(device="GPU")), [offering, no_plugin, on_xe], [],
                       SETTINGS).classes
    assert cp.workloads[0].nodes == ("ipc-gpu-0",) and cp.rejected == ("ipc-gpu-1", "ipc-gpu-2")
    assert any(n.startswith("ipc-gpu-2:") and "no gpu.intel.com/i915" in n and "i915 or xe" in n for n in cp.notes)


def test_a_gpu_class_on_the_xe_driver_names_its_resource_and_keeps_its_count() -> None:
    cp = plan_class(device="GPU", resources={"limits": {"gpu.intel.com/xe": "2"}})
    (server,) = pod(cp)["containers"]
    assert server["resources"]["limits"] == {"gpu.intel.com/xe": "2"}


def test_an_npu_class_requests_the_npu_plugins_resource_on_npu_nodes() -> None:
    cp = plan_class(device="NPU")
    (server,) = pod(cp)["containers"]
    assert arg(server, "--device") == "NPU" and server["resources"]["limits"] == {"npu.intel.com/accel": "1"}
    assert scheduled_on(cp) == ["ipc-npu-0"]


def test_auto_lets_openvino_choose_and_requests_no_device() -> None:
    cp = plan_class(device="AUTO")
    (server,) = pod(cp)["containers"]
    assert arg(server, "--device") == "AUTO" and "limits" not in server["resources"]
    assert scheduled_on(cp) == ["ipc-0", "ipc-gpu-0", "ipc-npu-0"]


def test_an_unknown_device_is_refused() -> None:
    # device on another runtime is the CRD's CEL rule, checked at apply (tests/cluster/test_crd_validation.py).
    HardwareClass.model_validate(intel_class(device="NPU"))
    with pytest.raises(ValidationError):
        HardwareClass.model_validate(intel_class(device="VPU"))


def test_one_device_per_node_means_replace_and_a_shared_device_means_make_before_break() -> None:
    hc = HardwareClass.model_validate(intel_class(device="GPU"))
    one = NodeInfo("ipc-gpu-0", {**X86, **GPU_LABEL}, allocatable={"gpu.intel.com/i915": "1"})
    shared = NodeInfo("ipc-gpu-1", {**X86, **GPU_LABEL}, allocatable={"gpu.intel.com/i915": "4"})
    mode = choose_mode("Auto", hc, "nvidia.com/gpu", [one, shared])
    assert mode.name == REPLACE and "gpu.intel.com/i915" in mode.reason and "ipc-gpu-0" in mode.reason
    assert choose_mode("Auto", hc, "nvidia.com/gpu", [shared]).name == MAKE_BEFORE_BREAK
    cpu = HardwareClass.model_validate(intel_class())
    assert choose_mode("Auto", cpu, "nvidia.com/gpu", [one]).name == MAKE_BEFORE_BREAK


def test_the_optimization_targets_openvino_on_the_class_device_with_the_class_cpu_features() -> None:
    hc = HardwareClass.model_validate(intel_class(device="GPU"))
    vnni = NodeInfo("ipc-0", {**X86, "feature.node.kubernetes.io/cpu-cpuid.AVX512VNNI": "true"})
    spec = job_spec(model(), hc, [vnni])
    assert spec is not None
    target = spec.job.to_wire()["target"]
    assert target == {"runtime": "openvino", "precision": "int8", "cpuFeatures": ["avx512vnni"], "device": "GPU"}
    cpu = job_spec(model(), HardwareClass.model_validate(intel_class()), [vnni])
    assert cpu is not None and cpu.key != spec.key  # one artifact per device


def test_jobs_of_the_other_runtimes_write_no_device_so_their_keys_stay() -> None:
    job = OptimizationJob(source=JobInput(uri="file:///m.onnx", sha256="a" * 64),
                          target=JobTarget(runtime="onnxruntime", precision="int8"),
                          options=JobOptions(quantization="auto", fallback=True, min_cosine=0.99,
                                             max_top1_drop_percent=1.0))
    assert "device" not in job.to_wire()["target"]
    assert OptimizationJob.model_validate(job.to_wire()) == job


def test_the_intel_example_puts_each_node_on_its_device() -> None:
    from planning_support import example

    from edgewise.api.resources import DeploymentProfile
    from edgewise.core.plan import ResolvedProfile

    spec = DeploymentProfile.model_validate(example("intel-profile.yaml")).spec
    fleet = [NodeInfo("ipc-0", dict(X86)), NodeInfo("nuc-gpu-0", {**X86, **GPU_LABEL}),
             NodeInfo("ultra-npu-0", {**X86, **GPU_LABEL, **NPU_LABEL})]
    plan = plan_model(model(), ResolvedProfile(name="intel-line", spec=spec), fleet, [], SETTINGS)
    got = {c.name: (c.nodes, pod(c)["containers"][0]["resources"].get("limits")) for c in plan.classes}
    assert got == {"intel-npu": (("ultra-npu-0",), {"npu.intel.com/accel": "1"}),
                   "intel-gpu": (("nuc-gpu-0",), {"gpu.intel.com/i915": "1"}),
                   "intel-cpu": (("ipc-0",), {"memory": "1Gi"})}
