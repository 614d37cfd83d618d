"""Triton `config.pbtxt` from an ONNX graph, built as Triton's own ModelConfig message.

The config is a `tritonclient.grpc.model_config_pb2.ModelConfig` printed with
protobuf's text_format, so a field Triton does not know cannot be written, and
tests parse every output back into the same message.

Batching follows Triton's rule: with `max_batch_size > 0` the first dimension of
every input and output is the batch and is left out of `dims`; it must then be
dynamic in the ONNX graph. With `max_batch_size == 0` dims are the full shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from edgewise.contract import ONNX_FILENAME
from edgewise.shared.openvino_settings import triton_parameters
from edgewise.shared.tensors import INT32, INT64, TensorSpec

if TYPE_CHECKING:
    import onnx
    from tritonclient.grpc.model_config_pb2 import ModelConfig

PRECISION_MODE = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}  # onnxruntime backend's TensorRT modes


@dataclass(frozen=True)
class Batching:
    max_batch_size: int = 0
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()


def _spec(value_info: onnx.ValueInfoProto) -> TensorSpec:
    if not value_info.type.HasField("tensor_type"):
        raise ValueError(f"{value_info.name}: only tensor inputs/outputs are supported")
    spec = TensorSpec.of(value_info)
    spec.triton_type  # noqa: B018 - refuse a type Triton cannot name now, not when the config is written
    return spec


def onnx_io(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Graph inputs (without initializers, which older exporters list as inputs) and outputs."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [_spec(vi) for vi in model.graph.input if vi.name not in initializers]
    outputs = [_spec(vi) for vi in model.graph.output]
    return inputs, outputs


def load_onnx_io(path: str | Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    import onnx

    return onnx_io(onnx.load(str(path), load_external_data=False))


def triton_dims(spec: TensorSpec, max_batch_size: int) -> tuple[int, ...]:
    """The dims Triton wants for `spec`: without the batch dimension when batching."""
    if max_batch_size <= 0:
        return spec.dims
    if not spec.dims or spec.dims[0] != -1:
        first = spec.dims[0] if spec.dims else "none (a scalar)"
        raise ValueError(
            f"{spec.name}: max_batch_size {max_batch_size} needs a dynamic first (batch) dimension, "
            f"the ONNX graph has {first}; export with a dynamic batch axis or use max_batch_size 0"
        )
    return spec.dims[1:] or (1,)  # Triton wants at least one dim; [N] becomes batch x [1]


def tensorrt_io_types(specs: Sequence[TensorSpec], tensorrt_major: int | None) -> list[TensorSpec]:
    """TensorRT before 10 has no INT64 bindings: it casts them to INT32, and so must the config."""
    if tensorrt_major is None or tensorrt_major >= 10:
        return list(specs)
    return [replace(s, elem_type=INT32) if s.elem_type == INT64 else s for s in specs]


def model_config(
    name: str,
    platform: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    *,
    batching: Batching = Batching(),
    instance_count: int = 1,
    instance_kind: str = "KIND_GPU",
    tensorrt_precision: str | None = None,
) -> ModelConfig:
    """A ModelConfig for `platform` ('tensorrt_plan' or 'onnxruntime_onnx').

    `tensorrt_precision` adds the TensorRT execution accelerator to an
    onnxruntime_onnx model (x86 GPUs; on Jetson that backend has no TensorRT
    provider, hence the plan path).
    """
    from tritonclient.grpc import model_config_pb2 as mc

    cfg = mc.ModelConfig(name=name, platform=platform, max_batch_size=max(0, batching.max_batch_size))
    for spec in inputs:
        cfg.input.add(name=spec.name, data_type=mc.DataType.Value(spec.triton_type),
                      dims=triton_dims(spec, batching.max_batch_size))
    for spec in outputs:
        cfg.output.add(name=spec.name, data_type=mc.DataType.Value(spec.triton_type),
                       dims=triton_dims(spec, batching.max_batch_size))
    if batching.max_batch_size > 0:
        cfg.dynamic_batching.max_queue_delay_microseconds = max(0, batching.max_queue_delay_us)
        preferred = sorted({b for b in batching.preferred_batch_sizes if 0 < b <= batching.max_batch_size})
        cfg.dynamic_batching.preferred_batch_size.extend(preferred)
    cfg.instance_group.add(kind=mc.ModelInstanceGroup.Kind.Value(instance_kind), count=instance_count)
    if tensorrt_precision is not None:
        accelerator = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        accelerator.parameters["precision_mode"] = PRECISION_MODE[tensorrt_precision]
    return cfg


def tensorrt_plan_config(
    name: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], *,
    batching: Batching = Batching(), instance_count: int = 1, tensorrt_major: int | None = None,
) -> ModelConfig:
    return model_config(
        name, "tensorrt_plan", tensorrt_io_types(inputs, tensorrt_major),
        tensorrt_io_types(outputs, tensorrt_major), batching=batching, instance_count=instance_count,
    )


def onnx_tensorrt_config(
    name: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], *,
    batching: Batching = Batching(), instance_count: int = 1, precision: str = "fp16",
) -> ModelConfig:
    return model_config(
        name, "onnxruntime_onnx", inputs, outputs, batching=batching,
        instance_count=instance_count, tensorrt_precision=precision,
    )


def openvino_config(
    name: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], *,
    batching: Batching = Batching(), instance_count: int = 1, device: str = "CPU", threads: int = 0,
) -> ModelConfig:
    """A config for Triton's OpenVINO backend serving `model.onnx` (the artifact as Edgewise stores it:
    the backend reads ONNX, given its file name), compiled for `device` as Edgewise's own server compiles it."""
    from tritonclient.grpc import model_config_pb2 as mc

    cfg = model_config(name, "", inputs, outputs, batching=batching, instance_count=instance_count,
                       instance_kind="KIND_CPU")  # the backend places work by TARGET_DEVICE, not by instance kind
    cfg.ClearField("platform")
    cfg.backend = "openvino"
    cfg.default_model_filename = ONNX_FILENAME
    # The properties the optimizer gated the artifact with and `edgewise serve` compiles it with.
    for key, value in triton_parameters(device, threads, instance_count).items():
        cfg.parameters[key].CopyFrom(mc.ModelParameter(string_value=value))
    return cfg


def render(cfg: ModelConfig) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(cfg)


def parse(text: str) -> ModelConfig:
    """Parse a config.pbtxt into Triton's ModelConfig; unknown fields raise ParseError."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    return text_format.Parse(text, mc.ModelConfig())
