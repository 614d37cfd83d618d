"""`openvino`: Edgewise's server on OpenVINO Runtime (`edgewise serve --backend openvino`), for Intel nodes.

The pod is the ONNX Runtime server's pod with another image and backend; what the class's `device` adds:

- CPU (the default) and AUTO request no device and run on every node of the class;
- GPU and NPU request one device from Intel's device plugins and run only on the class's nodes that
  Node Feature Discovery's Intel rules label as having one. A node of the class without the label is
  rejected with the reason (as a Jetson without compute-capability labels is), so the class's status
  says why it runs nothing there instead of a pod pending forever for a device that is not there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgewise.api.profile import HardwareClass
from edgewise.core.observed import NodeInfo
from edgewise.core.quantities import BadQuantity, parse_quantity
from edgewise.core.runtimes.interface import PodContext, Split, Variant
from edgewise.core.runtimes.onnxruntime import serve_pod_spec
from edgewise.core.selector import Requirement

# Intel's device plugins: the GPU plugin registers i915 or xe after the kernel driver in use; the NPU plugin accel.
GPU_I915 = "gpu.intel.com/i915"
GPU_XE = "gpu.intel.com/xe"
NPU_ACCEL = "npu.intel.com/accel"
GPU_RESOURCES = (GPU_I915, GPU_XE)
# The labels Intel's NodeFeatureRules for NFD put on nodes with such a device.
GPU_LABEL = "intel.feature.node.kubernetes.io/gpu"
NPU_LABEL = "intel.feature.node.kubernetes.io/npu"
_DEVICE_LABEL = {"GPU": GPU_LABEL, "NPU": NPU_LABEL}


def device_resource(hc: HardwareClass) -> str | None:
    """The extended resource one pod of the class asks for: none for CPU/AUTO; for a GPU the one the class's
    resources name (gpu.intel.com/xe on nodes whose GPU runs the xe driver), gpu.intel.com/i915 otherwise."""
    device = hc.effective_device()
    if device == "NPU":
        return NPU_ACCEL
    if device != "GPU":
        return None
    named = {**(hc.resources.requests or {}), **(hc.resources.limits or {})} if hc.resources else {}
    return next((r for r in GPU_RESOURCES if r in named), GPU_I915)


def device_limits(hc: HardwareClass) -> dict[str, str]:
    """One whole device, unless the class's own limits already say how many."""
    resource = device_resource(hc)
    if resource is None:
        return {}
    limits = (hc.resources.limits if hc.resources else None) or {}
    return {resource: str(limits.get(resource, "1"))}


def _offers(node: NodeInfo, resource: str) -> bool:
    try:
        return parse_quantity(node.allocatable.get(resource, "0")) >= 1
    except BadQuantity:
        return False


class OpenVino:
    name = "openvino"

    def split(self, nodes: Sequence[NodeInfo], hardware: HardwareClass) -> Split:
        device = hardware.effective_device()
        label = _DEVICE_LABEL.get(device)
        if label is None:
            return Split(variants=(Variant(key="", nodes=tuple(nodes)),))
        resource = device_resource(hardware) or ""
        having, rejected = [], []
        for n in nodes:
            if n.labels.get(label) != "true":
                rejected.append((n, f"no {label}=true label (from Node Feature Discovery's Intel rules), so no "
                                    f"Intel {device} to run the class's device: {device} on"))
            elif n.allocatable and not _offers(n, resource):
                # Labelled, but the device plugin offers nothing there: its pod would wait, Pending, for a device.
                rejected.append((n, f"its allocatable has no {resource}: is Intel's {device} device plugin "
                                    "running on it (or does its GPU use the other driver, i915 or xe)?"))
            else:
                having.append(n)
        return Split(variants=(Variant(key="", nodes=tuple(having),
                                       requirements=(Requirement(label, "In", ("true",)),)),),
                     rejected=tuple(rejected))

    def image(self, ctx: PodContext) -> str:
        return ctx.hardware.image or ctx.settings.image(ctx.settings.openvino_image)

    def pod_spec(self, ctx: PodContext) -> dict[str, Any]:
        hc = ctx.hardware
        return serve_pod_spec(ctx, self.image(ctx), ctx.settings.image(ctx.settings.openvino_image),
                              backend_args=("--backend", "openvino", "--device", hc.effective_device()),
                              device_limits=device_limits(hc))
