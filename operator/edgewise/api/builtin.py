"""The built-in profile, used by an EdgeModel without `profileRef`.

It classifies nodes by labels that NVIDIA GPU Feature Discovery and the kubelet
put on real devices, so a K3s fleet needs no labelling by hand:

1. `jetson`: arm64 with a GPU family label from GPU Feature Discovery
   → Triton with a TensorRT plan built on the device, fp16;
2. `arm64-cpu`: every other arm64 node → Edgewise's ONNX Runtime server, int8;
3. `amd64-cpu`: amd64 nodes → Edgewise's ONNX Runtime server, int8.

Intel nodes are not routed to `openvino` here: measured, OpenVINO's int8 was ahead on a CNN but
not on a transformer at batch 1, and its server needs more memory (docs/benchmarks.md, "OpenVINO
beside ONNX Runtime"). examples/intel-profile.yaml shows the profile that does.
"""

from __future__ import annotations

from edgewise.api.profile import DeploymentProfileSpec, HardwareClass, NodeSelectorRequirement

BUILTIN_PROFILE_NAME = "built-in"

ARCH = "kubernetes.io/arch"
GPU_FAMILY = "nvidia.com/gpu.family"

BUILTIN_PROFILE = DeploymentProfileSpec(classes=[
    HardwareClass(
        name="jetson",
        node_selector={ARCH: "arm64"},
        match_expressions=[NodeSelectorRequirement(key=GPU_FAMILY, operator="Exists")],
        runtime="triton-tensorrt",
        precision="fp16",
    ),
    HardwareClass(name="arm64-cpu", node_selector={ARCH: "arm64"}, runtime="onnxruntime", precision="int8"),
    HardwareClass(name="amd64-cpu", node_selector={ARCH: "amd64"}, runtime="onnxruntime", precision="int8"),
])
