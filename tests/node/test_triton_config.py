"""Generated config.pbtxt files parse as Triton's own ModelConfig (as shipped in tritonclient)."""

from __future__ import annotations

import numpy as np
import pytest
from fetch_models_support import mixed_types, mlp
from google.protobuf import text_format
from onnx import helper, numpy_helper
from tritonclient.grpc import model_config_pb2 as mc

from edgewise.node import triton_config as tc

MODELS = {"mlp": mlp(), "mixed": mixed_types()}
BATCHINGS = [tc.Batching(), tc.Batching(8, 500), tc.Batching(16, 100, (4, 8, 32))]
FP32 = 1  # onnx.TensorProto.FLOAT


def io_of(name: str) -> tuple[list[tc.TensorSpec], list[tc.TensorSpec]]:
    import onnx

    return tc.onnx_io(onnx.load_from_string(MODELS[name]))


def all_configs() -> list[tuple[str, tc.Batching, mc.ModelConfig]]:
    out = []
    for model in MODELS:
        inputs, outputs = io_of(model)
        for batching in BATCHINGS:
            for precision in ("fp32", "fp16", "int8"):
                out.append((f"{model}-onnx-{batching.max_batch_size}-{precision}", batching, tc.onnx_tensorrt_config(
                    model, inputs, outputs, batching=batching, precision=precision)))
            for major in (8, 10):
                out.append((f"{model}-plan-{batching.max_batch_size}-trt{major}", batching, tc.tensorrt_plan_config(
                    model, inputs, outputs, batching=batching, instance_count=2, tensorrt_major=major)))
    return out


@pytest.mark.parametrize(("label", "batching", "cfg"), all_configs(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_generated_config_parses_as_triton_model_config(label: str, batching: tc.Batching,
                                                              cfg: mc.ModelConfig) -> None:
    parsed = tc.parse(tc.render(cfg))
    assert parsed == cfg, label
    assert parsed.platform in ("onnxruntime_onnx", "tensorrt_plan")
    assert parsed.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    # Against the ONNX graph: every tensor, in order, without its batch dim when batching.
    inputs, outputs = io_of(parsed.name)
    batched = batching.max_batch_size > 0
    assert parsed.max_batch_size == batching.max_batch_size
    for got, onnx_spec in [*zip(parsed.input, inputs, strict=True), *zip(parsed.output, outputs, strict=True)]:
        assert got.name == onnx_spec.name
        assert list(got.dims) == (list(onnx_spec.dims[1:]) or [1] if batched else list(onnx_spec.dims))
    assert parsed.HasField("dynamic_batching") == batched


@pytest.mark.parametrize("mutation", [
    lambda t: t + "\nnot_a_triton_field: 1\n",  # unknown top-level field
    lambda t: t.replace("max_queue_delay_microseconds", "max_queue_delay_us"),  # unknown nested field
    lambda t: t.replace("TYPE_FP32", "TYPE_FLOAT32"),  # unknown enum value
    lambda t: t.replace("KIND_GPU", "KIND_JETSON"),
])
def test_the_parse_check_bites_on_what_triton_would_reject(mutation) -> None:
    inputs, outputs = io_of("mlp")
    text = tc.render(tc.onnx_tensorrt_config("mlp", inputs, outputs, batching=tc.Batching(8, 500)))
    tc.parse(text)
    broken = mutation(text)
    assert broken != text
    with pytest.raises(text_format.ParseError):
        tc.parse(broken)


def test_onnx_io_reads_names_types_and_dims_without_initializers() -> None:
    inputs, outputs = io_of("mixed")
    def triton(specs: list[tc.TensorSpec]) -> list[tuple[str, str, tuple[int, ...]]]:
        return [(s.name, s.triton_type, s.dims) for s in specs]

    assert triton(inputs) == [("ids", "TYPE_INT64", (-1, 8)), ("mask", "TYPE_BOOL", (-1, 8)),
                              ("scale", "TYPE_FP16", (-1, 1))]
    assert triton(outputs) == [("scores", "TYPE_FP16", (-1, 8)), ("inverted", "TYPE_BOOL", (-1, 8))]
    old_style = helper.make_graph(  # exporters before IR 4 listed weights as graph inputs too
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", 1, ["N", 2]), helper.make_tensor_value_info("w", 1, [2])],
        [helper.make_tensor_value_info("y", 1, ["N", 2])],
        initializer=[numpy_helper.from_array(np.zeros(2, np.float32), "w")],
    )
    ins, _ = tc.onnx_io(helper.make_model(old_style))
    assert [s.name for s in ins] == ["x"]


def test_batching_strips_the_batch_dimension_and_sets_the_dynamic_batcher() -> None:
    inputs, outputs = io_of("mlp")
    cfg = tc.parse(tc.render(tc.tensorrt_plan_config(
        "mlp", inputs, outputs, batching=tc.Batching(8, 500, (4, 8, 64)))))
    assert cfg.max_batch_size == 8
    assert [list(i.dims) for i in cfg.input] == [[4]] and [list(o.dims) for o in cfg.output] == [[3]]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]  # 64 > max_batch_size is dropped
    unbatched = tc.tensorrt_plan_config("mlp", inputs, outputs)
    assert unbatched.max_batch_size == 0 and [list(i.dims) for i in unbatched.input] == [[-1, 4]]
    assert not unbatched.HasField("dynamic_batching")


def test_batching_needs_a_dynamic_batch_dimension() -> None:
    static = tc.TensorSpec("x", FP32, (1, 4))
    with pytest.raises(ValueError, match="dynamic first"):
        tc.model_config("m", "tensorrt_plan", [static], [], batching=tc.Batching(8))
    assert tc.triton_dims(tc.TensorSpec("x", FP32, ("N",)), 8) == (1,)


def test_rendered_text_reads_like_a_triton_config() -> None:
    inputs, outputs = io_of("mlp")
    text = tc.render(tc.onnx_tensorrt_config("mlp", inputs, outputs, batching=tc.Batching(8, 500),
                                             precision="fp16"))
    for expected in ('name: "mlp"', 'platform: "onnxruntime_onnx"', "max_batch_size: 8",
                     "data_type: TYPE_FP32", 'name: "tensorrt"', 'key: "precision_mode"', 'value: "FP16"',
                     "kind: KIND_GPU"):
        assert expected in text


@pytest.mark.parametrize("batching", BATCHINGS, ids=lambda b: f"batch{b.max_batch_size}")
@pytest.mark.parametrize("device", ["CPU", "GPU", "NPU", "AUTO"])
def test_openvino_backend_configs_parse_as_triton_model_config(device: str, batching: tc.Batching) -> None:
    inputs, outputs = io_of("mixed")
    cfg = tc.openvino_config("mixed", inputs, outputs, batching=batching, device=device, threads=2)
    text = tc.render(cfg)
    parsed = tc.parse(text)
    assert parsed == cfg
    # Triton picks the backend by name; a platform beside it would name another backend's model format.
    assert (parsed.backend, parsed.platform, parsed.default_model_filename) == ("openvino", "", "model.onnx")
    assert 'backend: "openvino"' in text and "platform" not in text
    params = {k: v.string_value for k, v in parsed.parameters.items()}
    # f32 on the CPU as the gates measured it (OpenVINO's default there would be bf16 on CPUs that have it).
    cpu = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "2"} if device in ("CPU", "AUTO") else {}
    assert params == {"TARGET_DEVICE": device, "PERFORMANCE_HINT": "LATENCY", **cpu}
    assert parsed.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert parsed.max_batch_size == batching.max_batch_size
    assert [t.name for t in parsed.input] == [s.name for s in inputs]
    broken = text.replace("string_value", "str_value")
    with pytest.raises(text_format.ParseError):
        tc.parse(broken)
