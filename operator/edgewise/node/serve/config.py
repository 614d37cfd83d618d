"""Triton-shaped descriptions of the server and the model: metadata and ModelConfig.

Plain dicts in Triton's JSON field names. HTTP returns them as they are; gRPC parses
them into the protobuf messages tritonclient ships (`json_format.ParseDict`), which also
proves every field name is one Triton knows.
"""

from __future__ import annotations

import functools
from importlib import metadata
from typing import Any

from edgewise.node.serve.model import ModelSpec, ServedTensor
from edgewise.shared import openvino_settings

SERVER_NAME = "edgewise"
EXTENSIONS = ("binary_tensor_data", "model_configuration", "statistics")


@functools.cache
def _installed_version() -> str:
    """Looked up once: `metadata.version` scans the installed distributions on every call."""
    try:
        return metadata.version("edgewise")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "0.0.0"


def server_metadata() -> dict[str, Any]:
    """The node runtime imports nothing of the operator, so the version comes from the install."""
    return {"name": SERVER_NAME, "version": _installed_version(), "extensions": list(EXTENSIONS)}


# Triton's platform for models of each backend. Triton has no platform for its openvino
# backend: a config names the backend only, and metadata then reports the backend's name.
_PLATFORMS = {"onnxruntime": "onnxruntime_onnx"}


def _meta_tensor(t: ServedTensor) -> dict[str, Any]:
    return {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}


def model_metadata(spec: ModelSpec) -> dict[str, Any]:
    """Shapes include the batch dim (-1 when batching), as Triton reports them."""
    return {
        "name": spec.name,
        "versions": [spec.version],
        "platform": _PLATFORMS.get(spec.backend, spec.backend),
        "inputs": [_meta_tensor(t) for t in spec.inputs],
        "outputs": [_meta_tensor(t) for t in spec.outputs],
    }


def _config_dims(spec: ModelSpec, t: ServedTensor) -> list[int]:
    """Triton's config leaves the batch dim out when max_batch_size > 0."""
    return list(t.shape[1:] if spec.max_batch_size > 0 else t.shape)


def _parameters(spec: ModelSpec, instances: int, threads: int, device: str, precision: str) -> dict[str, str]:
    """The runtime settings in use, under the parameter names of the Triton backend."""
    if spec.backend == "openvino":
        return openvino_settings.triton_parameters(device, threads, instances, precision)
    return {"intra_op_thread_count": str(threads)}


def model_config(
    spec: ModelSpec, max_queue_delay_us: int, instances: int, threads: int, device: str = "CPU",
    precision: str = "f32",
) -> dict[str, Any]:
    parameters = _parameters(spec, instances, threads, device, precision)
    config: dict[str, Any] = {"name": spec.name}
    if spec.backend in _PLATFORMS:
        config["platform"] = _PLATFORMS[spec.backend]
    config.update({
        "backend": spec.backend,
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": spec.max_batch_size,
        "input": [
            {"name": t.name, "data_type": t.dtype.config, "format": "FORMAT_NONE",
             "dims": _config_dims(spec, t)}
            for t in spec.inputs
        ],
        "output": [
            {"name": t.name, "data_type": t.dtype.config, "dims": _config_dims(spec, t)} for t in spec.outputs
        ],
        # Both backends run on the host's threads; an OpenVINO GPU or NPU is TARGET_DEVICE.
        "instance_group": [{"name": f"{spec.name}_0", "kind": "KIND_CPU", "count": instances}],
        "default_model_filename": spec.filename,
        "parameters": {k: {"string_value": v} for k, v in parameters.items()},
    })
    if spec.max_batch_size > 0:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": max_queue_delay_us}
    return config
