"""`edgewise serve` speaks Triton's protocol: tritonclient, unchanged, over HTTP and gRPC.

Each test runs against real server processes on loopback, once per protocol. Results are
compared with the same model run in-process by ONNX Runtime.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import serve_models_support
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from serve_support import ServeProcess, client, infer, post, serving
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

PROTOCOLS = ["http", "grpc"]
# gRPC always carries raw bytes; HTTP can send tensors as binary or as JSON lists.
ENCODINGS = [("http", True), ("http", False), ("grpc", True)]
ENCODING_IDS = ["http-binary", "http-json", "grpc"]
MAX_REQUEST_BYTES = 256 * 1024


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    serve_models_support.mlp(root / "mlp" / "model.onnx")
    serve_models_support.cnn(root / "cnn" / "1" / "model.onnx")
    serve_models_support.cnn(root / "cnn" / "3" / "model.onnx")  # Triton layout: the highest version is served
    serve_models_support.wire_types(root / "types" / "model.onnx")
    return root


@pytest.fixture(scope="module")
def mlp_server(model_root: Path) -> Iterator[ServeProcess]:
    with serving(model_root / "mlp", "mlp", model_root / "mlp.log", "--max-batch-size", "8",
                 "--max-request-bytes", str(MAX_REQUEST_BYTES), "--threads", "1") as server:
        yield server


@pytest.fixture(scope="module")
def cnn_server(model_root: Path) -> Iterator[ServeProcess]:
    with serving(model_root / "cnn", "cnn", model_root / "cnn.log") as server:
        yield server


@pytest.fixture(scope="module")
def types_server(model_root: Path) -> Iterator[ServeProcess]:
    with serving(model_root / "types", "types", model_root / "types.log", "--max-batch-size", "4") as server:
        yield server


def as_json(proto: str, call: Any, *args: Any) -> dict[str, Any]:
    """Metadata/config/stats as dicts for both clients (gRPC's JSON renders int64 as strings)."""
    return call(*args) if proto == "http" else call(*args, as_json=True)


def ints(values: list[Any]) -> list[int]:
    return [int(v) for v in values]


def reference(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_health_and_server_metadata(mlp_server: ServeProcess, proto: str) -> None:
    c = client(mlp_server, proto)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("mlp")
    assert not c.is_model_ready("nope")
    meta = as_json(proto, c.get_server_metadata)
    assert meta["name"] == "edgewise"
    assert {"binary_tensor_data", "statistics", "model_configuration"} <= set(meta["extensions"])


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_model_metadata_and_config_are_triton_shaped(mlp_server: ServeProcess, proto: str) -> None:
    c = client(mlp_server, proto)
    meta = as_json(proto, c.get_model_metadata, "mlp")
    assert meta["platform"] == "onnxruntime_onnx" and meta["versions"] == ["1"]
    assert [(t["name"], t["datatype"], ints(t["shape"])) for t in meta["inputs"]] == [("x", "FP32", [-1, 4])]
    assert [(t["name"], t["datatype"], ints(t["shape"])) for t in meta["outputs"]] == [("y", "FP32", [-1, 3])]
    config = as_json(proto, c.get_model_config, "mlp")
    config = config.get("config", config)  # gRPC wraps it in ModelConfigResponse
    assert int(config["max_batch_size"]) == 8
    inputs = [(t["name"], t["data_type"], ints(t["dims"])) for t in config["input"]]
    assert inputs == [("x", "TYPE_FP32", [4])]
    assert "dynamic_batching" in config
    assert config["parameters"]["intra_op_thread_count"]["string_value"] == "1"


@pytest.mark.parametrize("proto, binary", ENCODINGS, ids=ENCODING_IDS)
def test_mlp_infer_matches_onnxruntime(
    mlp_server: ServeProcess, model_root: Path, proto: str, binary: bool,
) -> None:
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    result = infer(mlp_server, proto, "mlp", {"x": x}, binary=binary, outputs=["y"])
    (expected,) = reference(model_root / "mlp" / "model.onnx", {"x": x})
    np.testing.assert_allclose(result.as_numpy("y"), expected, rtol=1e-6)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_cnn_from_triton_layout_serves_highest_version(cnn_server: ServeProcess, model_root: Path,
                                                       proto: str) -> None:
    meta = as_json(proto, client(cnn_server, proto).get_model_metadata, "cnn")
    assert meta["versions"] == ["3"]
    image = np.random.default_rng(2).standard_normal((2, 1, 8, 8)).astype(np.float32)
    result = infer(cnn_server, proto, "cnn", {"image": image}, version="3")
    (expected,) = reference(model_root / "cnn" / "3" / "model.onnx", {"image": image})
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5)
    with pytest.raises(InferenceServerException, match="version 1 is not found; available versions: 3"):
        infer(cnn_server, proto, "cnn", {"image": image}, version="1")


@pytest.mark.parametrize("proto, binary", ENCODINGS, ids=ENCODING_IDS)
def test_every_wire_type_round_trips(types_server: ServeProcess, proto: str, binary: bool) -> None:
    feed = {
        "half": np.array([[1.5, -2.25]], dtype=np.float16),
        "small": np.array([[-128 + 1, 127]], dtype=np.int8),
        "big": np.array([[2**40, -5]], dtype=np.int64),
        "flag": np.array([[True, False]]),
        "text": np.array([["héllo".encode(), b"edge"]], dtype=object),
    }
    result = infer(types_server, proto, "types", feed, binary=binary,
                   outputs=["half_out", "small_out", "big_out", "flag_out", "text_out"])
    assert result.as_numpy("half_out").dtype == np.float16
    np.testing.assert_array_equal(result.as_numpy("half_out"), [[3.0, -4.5]])
    np.testing.assert_array_equal(result.as_numpy("small_out"), [[127, -127]])
    np.testing.assert_array_equal(result.as_numpy("big_out"), [[2**40 + 1, -4]])
    np.testing.assert_array_equal(result.as_numpy("flag_out"), [[False, True]])
    text = result.as_numpy("text_out").reshape(-1).tolist()
    assert [t if isinstance(t, bytes) else t.encode() for t in text] == ["héllo".encode(), b"edge"]


def _good(server: ServeProcess, proto: str) -> None:
    x = np.ones((1, 4), dtype=np.float32)
    assert infer(server, proto, "mlp", {"x": x}).as_numpy("y").shape == (1, 3)


BAD_REQUESTS = {
    # case: (model, inputs, http status, grpc status, expected message fragment)
    "unknown model": ("nope", {"x": np.ones((1, 4), np.float32)}, "404", "NOT_FOUND",
                      "unknown model: 'nope' is not found; this server serves 'mlp'"),
    "unknown input": ("mlp", {"x": np.ones((1, 4), np.float32), "z": np.ones((1, 4), np.float32)}, "400",
                      "INVALID_ARGUMENT", "unexpected inference input 'z' for model 'mlp'; expected inputs: "
                      "'x' (FP32 [-1,4])"),
    "missing input": ("mlp", {}, "400", "INVALID_ARGUMENT", "missing: 'x' (FP32 [-1,4])"),
    "wrong dtype": ("mlp", {"x": np.ones((1, 4), np.float64)}, "400", "INVALID_ARGUMENT",
                    "data-type is 'FP64', but model 'mlp' expects 'FP32'"),
    "wrong shape": ("mlp", {"x": np.ones((1, 5), np.float32)}, "400", "INVALID_ARGUMENT",
                    "Expected [-1,4], got [1,5]"),
    "batch too large": ("mlp", {"x": np.ones((9, 4), np.float32)}, "400", "INVALID_ARGUMENT",
                        "batch-size must be between 1 and 8"),
    "wrong output": ("mlp", {"x": np.ones((1, 4), np.float32)}, "400", "INVALID_ARGUMENT",
                     "unexpected inference output 'nope'"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
@pytest.mark.parametrize("proto", PROTOCOLS)
def test_bad_request_says_what_was_expected(mlp_server: ServeProcess, proto: str, case: str) -> None:
    model, feed, http_status, grpc_status, fragment = BAD_REQUESTS[case]
    outputs = ["nope"] if case == "wrong output" else None
    with pytest.raises(InferenceServerException) as err:
        infer(mlp_server, proto, model, feed, outputs=outputs)
    assert fragment in err.value.message()
    assert err.value.status() == (http_status if proto == "http" else f"StatusCode.{grpc_status}")
    _good(mlp_server, proto)  # the server keeps serving


def _binary_x(extra: int) -> tuple[bytes, dict[str, str]]:
    """A request whose header claims 16 bytes for x, followed by 16 + `extra` bytes."""
    header = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"parameters":{"binary_data_size":16}}]}'
    return header + b"\0" * (16 + extra), {"Inference-Header-Content-Length": str(len(header))}


@pytest.mark.parametrize("body, headers, fragment", [
    (b'{"inputs": [{"name": "x", ', {}, "failed to parse the request JSON"),
    (b'["not", "an", "object"]', {}, "must be an object"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3]}]}', {},
     "has 3 elements of JSON data, expected 4"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": ["a", "b", "c", "d"]}]}', {},
     "input 'x' is FP32: its JSON data must be numbers"),
    (*_binary_x(-4), "only 12 bytes of binary data remain"),
    (*_binary_x(4), "4 bytes of binary data that no input claims"),
    (b'{}', {"Inference-Header-Content-Length": "ten"}, "must be an integer"),
], ids=["truncated JSON", "not an object", "too few elements", "strings for FP32", "short binary",
        "extra binary", "bad header length"])
def test_malformed_http_bodies_get_400(mlp_server: ServeProcess, body: bytes, headers: dict[str, str],
                                       fragment: str) -> None:
    status, doc = post(mlp_server.http_port, "/v2/models/mlp/infer", body, headers)
    assert status == 400
    assert fragment in doc["error"]
    _good(mlp_server, "http")


def test_oversized_http_body_gets_413(mlp_server: ServeProcess) -> None:
    big = np.zeros((1, MAX_REQUEST_BYTES // 4 + 16), dtype=np.float32).tobytes()
    status, doc = post(mlp_server.http_port, "/v2/models/mlp/infer", big,
                       {"Inference-Header-Content-Length": "2"})
    assert status == 413
    assert f"exceeds the limit of {MAX_REQUEST_BYTES} bytes" in doc["error"]
    _good(mlp_server, "http")


def test_oversized_grpc_message_is_resource_exhausted(mlp_server: ServeProcess) -> None:
    x = np.zeros((1, MAX_REQUEST_BYTES // 4 + 16), dtype=np.float32)
    with pytest.raises(InferenceServerException) as err:
        infer(mlp_server, "grpc", "mlp", {"x": x})
    assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert str(MAX_REQUEST_BYTES) in err.value.message()
    _good(mlp_server, "grpc")


def _stub(server: ServeProcess) -> service_pb2_grpc.GRPCInferenceServiceStub:
    return service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc_url))


def test_grpc_raw_contents_must_match_inputs(mlp_server: ServeProcess) -> None:
    request = service_pb2.ModelInferRequest(model_name="mlp")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.extend([b"\0" * 16, b"\0" * 16])
    with pytest.raises(grpc.RpcError) as err:
        _stub(mlp_server).ModelInfer(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw_input_contents has 2 entries; expected one per input (1)" in err.value.details()


def test_grpc_typed_contents_are_accepted(mlp_server: ServeProcess, model_root: Path) -> None:
    request = service_pb2.ModelInferRequest(model_name="mlp", id="req-7")
    t = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    t.contents.fp32_contents.extend([1.0, 2.0, 3.0, 4.0])
    response = _stub(mlp_server).ModelInfer(request)
    assert response.id == "req-7"
    got = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(1, 3)
    (expected,) = reference(model_root / "mlp" / "model.onnx", {"x": np.array([[1, 2, 3, 4]], np.float32)})
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_grpc_stream_infer(mlp_server: ServeProcess) -> None:
    c = mlp_server.grpc()
    results: queue.Queue[Any] = queue.Queue()
    c.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        for n in (1, 2):
            i = grpcclient.InferInput("x", [n, 4], "FP32")
            i.set_data_from_numpy(np.ones((n, 4), np.float32))
            c.async_stream_infer("mlp", [i], request_id=f"s{n}")
        bad = grpcclient.InferInput("x", [1, 5], "FP32")
        bad.set_data_from_numpy(np.ones((1, 5), np.float32))
        c.async_stream_infer("mlp", [bad], request_id="bad")
        got = [results.get(timeout=60) for _ in range(3)]
    finally:
        c.stop_stream()
    shapes = sorted(r.as_numpy("y").shape for r, e in got if e is None)
    errors = [str(e) for _, e in got if e is not None]
    assert shapes == [(1, 3), (2, 3)]
    assert len(errors) == 1 and "Expected [-1,4], got [1,5]" in errors[0]


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_statistics_have_triton_shape_and_count_failures(mlp_server: ServeProcess, proto: str) -> None:
    c = client(mlp_server, proto)

    def stats() -> dict[str, Any]:
        (entry,) = as_json(proto, c.get_inference_statistics, "mlp")["model_stats"]
        return entry

    before = stats()
    _good(mlp_server, proto)
    with pytest.raises(InferenceServerException):
        infer(mlp_server, proto, "mlp", {"x": np.ones((1, 5), np.float32)})
    after = stats()
    assert after["name"] == "mlp" and after["version"] == "1"
    s0, s1 = before["inference_stats"], after["inference_stats"]
    assert set(s1) >= {"success", "fail", "queue", "compute_input", "compute_infer", "compute_output"}
    assert int(s1["success"]["count"]) == int(s0["success"]["count"]) + 1
    assert int(s1["fail"]["count"]) == int(s0["fail"]["count"]) + 1
    assert int(s1["compute_infer"]["ns"]) > int(s0["compute_infer"]["ns"])
    assert int(after["inference_count"]) == int(before["inference_count"]) + 1
    assert int(after["execution_count"]) == int(before["execution_count"]) + 1
    assert {int(b["batch_size"]) for b in after["batch_stats"]} >= {1}


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_http_requests_are_accepted(mlp_server: ServeProcess, model_root: Path, algorithm: str) -> None:
    x = np.random.default_rng(4).standard_normal((2, 4)).astype(np.float32)
    i = httpclient.InferInput("x", [2, 4], "FP32").set_data_from_numpy(x)
    result = mlp_server.http().infer("mlp", [i], request_compression_algorithm=algorithm)
    (expected,) = reference(model_root / "mlp" / "model.onnx", {"x": x})
    np.testing.assert_allclose(result.as_numpy("y"), expected, rtol=1e-6)
