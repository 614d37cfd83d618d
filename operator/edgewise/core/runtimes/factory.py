"""The runtime a hardware class names (spec.classes[].runtime), by name: the one list of implementations."""

from __future__ import annotations

from typing import cast

from edgewise.api.profile import Runtime as RuntimeName
from edgewise.core.runtimes.interface import Runtime
from edgewise.core.runtimes.onnxruntime import OnnxRuntime
from edgewise.core.runtimes.openvino import OpenVino
from edgewise.core.runtimes.triton_tensorrt import TritonTensorRT

_RUNTIMES: dict[RuntimeName, Runtime] = {
    "onnxruntime": OnnxRuntime(), "triton-tensorrt": TritonTensorRT(), "openvino": OpenVino()}


def get_runtime(name: str) -> Runtime:
    return _RUNTIMES[cast(RuntimeName, name)]  # the API allows only the names above
