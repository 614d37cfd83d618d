"""`triton-tensorrt`: NVIDIA Triton on Jetson, serving a TensorRT plan built on the device.

TensorRT plans only run on the GPU compute capability (and TensorRT version)
that built them, so the class's nodes are split by the compute capability
GPU Feature Discovery labels them with: one workload per capability, whose
init container builds (or gets from the node cache) the plan for exactly
that capability.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from edgewise import contract
from edgewise.api.profile import HardwareClass
from edgewise.core import pods
from edgewise.core.observed import NodeInfo
from edgewise.core.runtimes.interface import PodContext, Split, Variant
from edgewise.core.runtimes.onnxruntime import fetch_container, fetch_request
from edgewise.core.selector import Requirement

CC_MAJOR = "nvidia.com/gpu.compute.major"
CC_MINOR = "nvidia.com/gpu.compute.minor"
# Triton loads the plan quickly; the slow part (the plan build) happens in the init container.
STARTUP_SECONDS = 600
GRACE_SECONDS = 40


def compute_capability(node: NodeInfo) -> tuple[str, str] | None:
    major, minor = node.labels.get(CC_MAJOR, ""), node.labels.get(CC_MINOR, "")
    if major.isdigit() and minor.isdigit():
        return major, minor
    return None


class TritonTensorRT:
    name = "triton-tensorrt"

    def split(self, nodes: Sequence[NodeInfo], hardware: HardwareClass) -> Split:
        groups: dict[tuple[str, str], list[NodeInfo]] = {}
        rejected = []
        for node in nodes:
            cc = compute_capability(node)
            if cc is None:
                rejected.append((node, f"no {CC_MAJOR}/{CC_MINOR} labels (from GPU Feature Discovery), "
                                       "so no TensorRT plan can be built for it"))
            else:
                groups.setdefault(cc, []).append(node)
        ordered = sorted(groups.items(), key=lambda kv: (int(kv[0][0]), int(kv[0][1])))
        variants = tuple(
            Variant(key=f"sm{major}{minor}", value=f"{major}.{minor}", nodes=tuple(members),
                    requirements=(Requirement(CC_MAJOR, "In", (major,)),
                                  Requirement(CC_MINOR, "In", (minor,))))
            for (major, minor), members in ordered)
        return Split(variants=variants, rejected=tuple(rejected))

    def image(self, ctx: PodContext) -> str:
        return ctx.hardware.image or ctx.settings.image(ctx.settings.triton_image)

    def pod_spec(self, ctx: PodContext) -> dict[str, Any]:
        s, hc = ctx.settings, ctx.hardware
        gpu = {"limits": {s.gpu_resource: "1"}}
        request = fetch_request(ctx, contract.Layout.TRITON_TENSORRT, ctx.precision)
        if s.node_plan_check:  # a plan from the agent loads only with its node's attestation (docs/security.md)
            request = dataclasses.replace(
                request, trusted_plan_keys=f"{contract.PLAN_KEYS_DIR}/{contract.PLAN_PUBLIC_KEY_FILE}")
        fetch = fetch_container(
            ctx, s.image(s.tensorrt_fetch_image), request, s.triton_run_as_user,
            env=[{"name": contract.GPU_COMPUTE_CAPABILITY_ENV, "value": ctx.variant.value}],
            resources={"requests": {"cpu": "100m", "memory": "256Mi"}, **gpu},
            mounts=pods.plan_keys_mounts(s.node_plan_check))
        res = pods.resources(hc.resources.requests if hc.resources else None,
                             hc.resources.limits if hc.resources else None)
        res["limits"] = {s.gpu_resource: "1", **res.get("limits", {})}
        server = {
            "name": "server",
            "image": self.image(ctx),
            "imagePullPolicy": s.image_pull_policy,
            "command": ["tritonserver"],
            "args": [
                f"--model-repository={contract.MODEL_ROOT}",
                f"--http-port={contract.HTTP_PORT}",
                f"--grpc-port={contract.GRPC_PORT}",
                f"--metrics-port={contract.METRICS_PORT}",
                "--strict-readiness=true",
            ],
            "ports": pods.ports(),
            **pods.probes(STARTUP_SECONDS),
            "lifecycle": pods.lifecycle(),
            "resources": res,
            "volumeMounts": pods.model_mounts(read_only=True),
            "securityContext": pods.container_security(s.triton_run_as_user),
        }
        return {
            "runtimeClassName": s.nvidia_runtime_class,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": GRACE_SECONDS,
            "securityContext": pods.pod_security(s.triton_run_as_user),
            **pods.pull_secrets(s.image_pull_secrets),
            "initContainers": [fetch],
            "containers": [server],
            "volumes": [*pods.volumes(s.node_trusted_keys_config_map),
                        *pods.plan_keys_volumes(s.node_plan_check, s.agent_cache_dir)],
        }
