"""`edgewise serve --backend openvino`: the same protocol, statistics and metrics, on OpenVINO.

Real server processes on loopback, real OpenVINO (CPU device), real tritonclient; answers
are compared with ONNX Runtime running the same ONNX file in-process. GPU and NPU cannot
run here: what can is the refusal to start on a device the node lacks.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import openvino as ov
import pytest
import serve_models_support
from fetch_models_support import model_bytes
from google.protobuf import json_format
from onnx import TensorProto, helper, numpy_helper
from serve_support import ServeProcess, http_status, in_threads, infer, serving
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from edgewise.cli import main as cli_main
from edgewise.cli import serve as serve_cli
from edgewise.node.serve import backends, config, dtypes, openvino_model
from edgewise.node.serve.model import ModelSpec, ServedTensor, find_model_file
from edgewise.shared import openvino_settings

OPENVINO = ("--backend", "openvino")


def _reference(path: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))


def _as_json(proto: str, call: Any, *args: Any) -> dict[str, Any]:
    return call(*args) if proto == "http" else call(*args, as_json=True)


def _counter(server: ServeProcess, name: str) -> float:
    m = re.search(rf'^{name}{{model="[^"]*",version="[^"]*"}} (\S+)$', server.metrics(), re.MULTILINE)
    assert m, f"{name} missing from /metrics"
    return float(m.group(1))


def _numeric_types(path: Path) -> Path:
    """One input and output per numeric wire type (no BYTES: refused by this backend).

    FP16 doubled, FP64 and INT8 negated, INT64 plus one, BOOL negated, UINT8 times two."""
    nodes = [
        helper.make_node("Add", ["half", "half"], ["half_out"]), helper.make_node("Neg", ["wide"], ["wide_out"]),
        helper.make_node("Neg", ["small"], ["small_out"]), helper.make_node("Add", ["big", "one"], ["big_out"]),
        helper.make_node("Not", ["flag"], ["flag_out"]), helper.make_node("Add", ["byte", "byte"], ["byte_out"]),
    ]
    types = [("half", TensorProto.FLOAT16), ("wide", TensorProto.DOUBLE), ("small", TensorProto.INT8),
             ("big", TensorProto.INT64), ("flag", TensorProto.BOOL), ("byte", TensorProto.UINT8)]
    graph = helper.make_graph(
        nodes, "numeric_types",
        [helper.make_tensor_value_info(n, t, ["N", 2]) for n, t in types],
        [helper.make_tensor_value_info(f"{n}_out", t, ["N", 2]) for n, t in types],
        initializer=[numpy_helper.from_array(np.array(1, dtype=np.int64), "one")],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model_bytes(graph))
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ov-models")
    serve_models_support.mlp(root / "mlp" / "model.onnx")
    # The CNN as OpenVINO IR in a Triton layout, fp32 (save_model would halve the weights).
    cnn_onnx = serve_models_support.cnn(root / "cnn.onnx")
    ov.save_model(ov.convert_model(str(cnn_onnx)), str(root / "cnn" / "2" / "model.xml"), compress_to_fp16=False)
    serve_models_support.strided(root / "strided" / "model.onnx")
    _numeric_types(root / "types" / "model.onnx")
    return root


@pytest.fixture(scope="module")
def mlp(root: Path) -> Iterator[ServeProcess]:
    """A 60 s queue delay: a batch leaves only when full (4), so merging is certain, not timing."""
    with serving(root / "mlp", "mlp", root / "mlp.log", *OPENVINO, "--max-batch-size", "4",
                 "--max-queue-delay-us", "60000000", "--threads", "1") as server:
        yield server


@pytest.fixture(scope="module")
def cnn(root: Path) -> Iterator[ServeProcess]:
    """Two instances: two infer requests run at once, each on a stream of its own."""
    with serving(root / "cnn", "cnn", root / "cnn.log", *OPENVINO, "--instances", "2", "--threads", "1") as server:
        yield server


# --- served through the protocol ------------------------------------------------------------------

@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_metadata_and_config_name_the_openvino_backend(mlp: ServeProcess, proto: str) -> None:
    c = mlp.http() if proto == "http" else mlp.grpc()
    meta = _as_json(proto, c.get_model_metadata, "mlp")
    assert meta["platform"] == "openvino"  # Triton reports the backend when a config has no platform
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"]] == [
        ("x", "FP32", [-1, 4])]
    doc = _as_json(proto, c.get_model_config, "mlp")
    doc = doc.get("config", doc)
    assert doc["backend"] == "openvino" and "platform" not in doc
    assert doc["default_model_filename"] == "model.onnx"
    assert {k: v["string_value"] for k, v in doc["parameters"].items()} == {
        "TARGET_DEVICE": "CPU", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": "1"}


def test_batching_merges_concurrent_requests_and_statistics_and_metrics_count(
    mlp: ServeProcess, root: Path,
) -> None:
    rows = np.random.default_rng(3).standard_normal((4, 1, 4)).astype(np.float32)
    before = mlp.http().get_inference_statistics("mlp")["model_stats"][0]
    protos = ["http", "grpc", "http", "grpc"]
    results = in_threads([lambda k=k: infer(mlp, protos[k], "mlp", {"x": rows[k]}).as_numpy("y")
                          for k in range(4)])
    for k, got in enumerate(results):
        assert isinstance(got, np.ndarray), got
        np.testing.assert_allclose(got, _reference(root / "mlp" / "model.onnx", {"x": rows[k]})["y"],
                                   rtol=1e-5, atol=1e-6)
    (stats,) = mlp.http().get_inference_statistics("mlp")["model_stats"]
    assert stats["inference_count"] - before["inference_count"] == 4
    assert stats["execution_count"] - before["execution_count"] == 1  # the four ran as one batch
    assert {b["batch_size"] for b in stats["batch_stats"]} == {4}
    assert _counter(mlp, "nv_inference_count") == stats["inference_count"]
    assert _counter(mlp, "nv_inference_exec_count") == stats["execution_count"]
    assert _counter(mlp, "nv_inference_request_success") == stats["inference_stats"]["success"]["count"]


@pytest.mark.parametrize("proto, binary", [("http", True), ("http", False), ("grpc", True)])
def test_ir_model_in_a_triton_layout_matches_onnxruntime(cnn: ServeProcess, root: Path, proto: str,
                                                         binary: bool) -> None:
    images = np.random.default_rng(5).standard_normal((3, 1, 8, 8)).astype(np.float32)
    got = infer(cnn, proto, "cnn", {"image": images}, binary).as_numpy("logits")
    np.testing.assert_allclose(got, _reference(root / "cnn.onnx", {"image": images})["logits"],
                               rtol=1e-5, atol=1e-5)
    assert cnn.http().get_model_metadata("cnn")["versions"] == ["2"]
    assert cnn.http().get_model_config("cnn")["default_model_filename"] == "model.xml"


def test_concurrent_requests_on_two_instances_get_their_own_answers(cnn: ServeProcess, root: Path) -> None:
    feeds = [np.random.default_rng(k).standard_normal((1 + k % 3, 1, 8, 8)).astype(np.float32) for k in range(8)]
    results = in_threads([lambda k=k: infer(cnn, "http" if k % 2 else "grpc", "cnn", {"image": feeds[k]})
                          .as_numpy("logits") for k in range(len(feeds))])
    for k, feed in enumerate(feeds):
        assert isinstance(results[k], np.ndarray), results[k]
        np.testing.assert_allclose(results[k], _reference(root / "cnn.onnx", {"image": feed})["logits"],
                                   rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def types(root: Path) -> Iterator[ServeProcess]:
    with serving(root / "types", "types", root / "types.log", *OPENVINO, "--max-batch-size", "4") as server:
        yield server


@pytest.mark.parametrize("proto, binary", [("http", True), ("http", False), ("grpc", True)])
def test_every_numeric_wire_type_round_trips(types: ServeProcess, proto: str, binary: bool) -> None:
    feed = {
        "half": np.array([[1.5, -2.25]], dtype=np.float16), "wide": np.array([[0.1, -1e30]]),
        "small": np.array([[-127, 127]], dtype=np.int8), "big": np.array([[2**31 - 3, -5]], dtype=np.int64),
        "flag": np.array([[True, False]]), "byte": np.array([[3, 100]], dtype=np.uint8),
    }
    result = infer(types, proto, "types", feed, binary)
    meta = types.http().get_model_metadata("types")
    assert [t["datatype"] for t in meta["outputs"]] == ["FP16", "FP64", "INT8", "INT64", "BOOL", "UINT8"]
    assert result.as_numpy("half_out").dtype == np.float16
    np.testing.assert_array_equal(result.as_numpy("half_out"), [[3.0, -4.5]])
    # OpenVINO's CPU plugin computes FP64 in f32 (runtime.md): equal to f32's precision.
    assert result.as_numpy("wide_out").dtype == np.float64
    np.testing.assert_allclose(result.as_numpy("wide_out"), [[-0.1, 1e30]], rtol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("small_out"), [[127, -127]])
    np.testing.assert_array_equal(result.as_numpy("big_out"), [[2**31 - 2, -4]])
    np.testing.assert_array_equal(result.as_numpy("flag_out"), [[False, True]])
    np.testing.assert_array_equal(result.as_numpy("byte_out"), [[6, 200]])


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_64_bit_values_openvino_would_narrow_are_refused(types: ServeProcess, proto: str) -> None:
    """OpenVINO's CPU plugin computes INT64 as 32-bit (2**40 + 1 would come back as 1): a 400
    naming the value, not a wrong answer."""
    feed = {
        "half": np.zeros((1, 2), np.float16), "wide": np.zeros((1, 2)), "small": np.zeros((1, 2), np.int8),
        "big": np.array([[2**40, 1]], dtype=np.int64), "flag": np.zeros((1, 2), bool),
        "byte": np.zeros((1, 2), np.uint8),
    }
    with pytest.raises(InferenceServerException, match="input 'big' holds the INT64 value 1099511627776, "
                                                        "outside -2147483648..2147483647") as err:
        infer(types, proto, "types", feed)
    assert err.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")


@pytest.mark.parametrize("values, problem", [
    (np.array([2**31 - 1, -2**31], np.int64), None),
    (np.array([2**31], np.int64), "INT64 value 2147483648"),
    (np.array([2**32], np.uint64), "UINT64 value 4294967296"),
    (np.array([1e300, np.inf, np.nan]), "FP64 value 1e+300"),
    (np.array([3e38, -np.inf, np.nan]), None),
    (np.array([3e38], np.float32), None),  # FP32 is computed as it is
    (np.zeros((0, 2), np.int64), None),
])
def test_out_of_range(values: np.ndarray, problem: str | None) -> None:
    got = openvino_model.out_of_range("v", values)
    assert got is None if problem is None else problem in (got or "")


def test_a_request_that_breaks_the_kernel_is_the_requests_fault(root: Path) -> None:
    """[1,5] passes the signature [N,M] but cannot reshape to 32 values: 400 / INVALID_ARGUMENT,
    the next request is answered, and SIGTERM still ends the process cleanly."""
    server = ServeProcess(root / "strided", "strided", root / "strided.log", *OPENVINO).wait_ready()
    try:
        bad = {"x": np.ones((1, 5), np.float32)}
        with pytest.raises(InferenceServerException, match="the model failed on this input") as http_err:
            infer(server, "http", "strided", bad)
        assert http_err.value.status() == "400"
        with pytest.raises(InferenceServerException, match="reshape") as grpc_err:
            infer(server, "grpc", "strided", bad)
        assert grpc_err.value.status() == "StatusCode.INVALID_ARGUMENT"
        good = infer(server, "http", "strided", {"x": np.ones((2, 16), np.float32)}).as_numpy("y")
        np.testing.assert_array_equal(good, np.ones(32, np.float32))
        (stats,) = server.http().get_inference_statistics("strided")["model_stats"]
        assert (stats["inference_stats"]["fail"]["count"], stats["inference_stats"]["success"]["count"]) == (2, 1)
    finally:
        code = server.stop()
    assert code == 0, server.log()


# --- refused at start -----------------------------------------------------------------------------

def _never_ready(server: ServeProcess) -> tuple[int, set[int | None]]:
    seen: set[int | None] = set()
    while server.proc.poll() is None:
        seen.add(http_status(server.http_port, "/v2/health/ready"))
        time.sleep(0.02)
    return server.wait_exit(), seen


@pytest.mark.parametrize("device", ["GPU", "NPU"])
def test_a_device_the_node_lacks_fails_the_start(root: Path, device: str) -> None:
    assert not any(d.split(".")[0] == device for d in ov.Core().available_devices), f"this node has a {device}"
    server = ServeProcess(root / "mlp", "mlp", root / f"{device}.log", *OPENVINO, "--device", device)
    code, seen = _never_ready(server)
    assert code == 1
    assert seen <= {None}  # nothing ever listened, so nothing ever looked ready
    seen_devices = ", ".join(ov.Core().available_devices)
    assert f"device {device} is not available on this node; OpenVINO sees: {seen_devices}" in server.log()


def test_a_string_model_is_refused_at_load_naming_the_tensor(tmp_path: Path) -> None:
    serve_models_support.text(tmp_path / "text" / "model.onnx")
    server = ServeProcess(tmp_path / "text", "text", tmp_path / "log", *OPENVINO)
    code, seen = _never_ready(server)
    assert code == 1 and 200 not in seen
    assert "tensor 'text' is a string (BYTES) tensor; the openvino backend serves numeric tensors only" \
        in server.log()


@pytest.mark.parametrize("flags", [["--device", "GPU"], ["--backend", "onnxruntime", "--device", "CPU"],
                                   ["--inference-precision", "bf16"]])
def test_openvino_flags_without_the_openvino_backend_are_refused(
    capsys: pytest.CaptureFixture[str], flags: list[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli_main.main(["serve", "--model-dir", "/nowhere", "--model-name", "m", *flags])
    assert exit_.value.code == 2
    assert f"{flags[-2]} {flags[-1]} needs --backend openvino" in capsys.readouterr().err


# --- the pieces, without a server -----------------------------------------------------------------

@pytest.mark.parametrize("asked, available, problem", [
    ("CPU", ["CPU"], None),
    ("GPU", ["CPU", "GPU.0", "GPU.1"], None),  # numbered when a node has several
    ("NPU", ["CPU", "GPU", "NPU"], None),
    ("AUTO", ["CPU"], None),
    ("GPU", ["CPU"], "device GPU is not available on this node; OpenVINO sees: CPU;"),
    ("NPU", ["CPU", "GPU.0"], "device NPU is not available on this node; OpenVINO sees: CPU, GPU.0;"),
    ("AUTO", [], "device AUTO has nothing to choose from"),
])
def test_device_problem(asked: str, available: list[str], problem: str | None) -> None:
    got = openvino_model.device_problem(asked, available)
    assert got == problem if problem is None else (got or "").startswith(problem)


def test_compile_properties_put_cpu_knobs_where_the_device_takes_them() -> None:
    assert openvino_settings.compile_properties("CPU", 2, 3) == {
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 6,
        "NUM_STREAMS": 3}
    assert openvino_settings.compile_properties("AUTO", 0, 1, "bf16") == {
        "PERFORMANCE_HINT": "LATENCY", "DEVICE_PROPERTIES": {"CPU": {"INFERENCE_PRECISION_HINT": "bf16"}}}
    assert openvino_settings.compile_properties("GPU", 4, 2) == {"PERFORMANCE_HINT": "LATENCY"}


def test_auto_device_compiles_with_the_cpu_properties(tmp_path: Path) -> None:
    """AUTO refuses CPU properties at its own level; nested under DEVICE_PROPERTIES they apply."""
    model = openvino_model.OpenVinoModel(serve_models_support.mlp(tmp_path / "model.onnx"), "AUTO", 1, 2)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(model.run({"x": x})["y"], _reference(tmp_path / "model.onnx", {"x": x})["y"],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("max_batch_size", [0, 8])
def test_openvino_config_parses_into_tritons_model_config(max_batch_size: int) -> None:
    fp32 = dtypes.BY_TRITON["FP32"]
    spec = ModelSpec("m", "1", (ServedTensor("x", fp32, (-1, 4)),), (ServedTensor("y", fp32, (-1, 3)),),
                     max_batch_size, "openvino", "model.xml")
    msg = json_format.ParseDict(config.model_config(spec, 500, 2, 1, "GPU"), model_config_pb2.ModelConfig())
    assert (msg.backend, msg.platform, msg.default_model_filename) == ("openvino", "", "model.xml")
    assert msg.parameters["TARGET_DEVICE"].string_value == "GPU"
    assert config.model_metadata(spec)["platform"] == "openvino"


def test_model_directory_takes_ir_only_with_its_weights_and_prefers_onnx(tmp_path: Path) -> None:
    (tmp_path / "model.xml").write_text("<net/>")
    with pytest.raises(FileNotFoundError, match="no model.onnx or model.xml in"):
        find_model_file(tmp_path, backends.model_files("openvino"))
    (tmp_path / "model.bin").write_bytes(b"")
    assert find_model_file(tmp_path, backends.model_files("openvino")) == (tmp_path / "model.xml", "1")
    with pytest.raises(FileNotFoundError, match="no model.onnx in"):
        find_model_file(tmp_path, backends.model_files("onnxruntime"))  # ONNX Runtime cannot read IR
    serve_models_support.mlp(tmp_path / "model.onnx")
    assert find_model_file(tmp_path, backends.model_files("openvino")) == (tmp_path / "model.onnx", "1")


def test_openvino_element_types_map_to_wire_types() -> None:
    assert dtypes.from_openvino("f32", "x").triton == "FP32"
    assert dtypes.from_openvino("boolean", "x").triton == "BOOL"
    with pytest.raises(ValueError, match="tensor 'w' has OpenVINO element type 'bf16'"):
        dtypes.from_openvino("bf16", "w")


def test_cli_choices_match_the_backends() -> None:
    assert serve_cli.BACKENDS == backends.BACKENDS
    assert serve_cli.DEVICES == backends.DEVICES
    assert serve_cli.PRECISIONS == openvino_settings.PRECISIONS
