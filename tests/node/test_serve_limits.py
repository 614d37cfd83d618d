"""Bounded work per request: what a request declares is checked before its data is decoded.

Issue 15 §3: a 63 MiB BYTES request of 16.5 million empty elements took 99.7 s, stalled
/v2/health/live for up to 56 s and peaked at 1.66 GB; a 60 MiB JSON request blocked the event
loop for 15 s before being refused. These run the real server with its default limits, and
assert on answers and their order, never on durations.
"""

from __future__ import annotations

import asyncio
import json
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import serve_models_support
from serve_support import ServeProcess, http_status, peak_memory, post, server_has_read, serving
from tritonclient.grpc import service_pb2, service_pb2_grpc

from edgewise.node.serve import codec, dtypes, grpc_api, grpc_wire, http_codec, limits
from edgewise.node.serve.batcher import Batcher
from edgewise.node.serve.errors import InferError, Status
from edgewise.node.serve.model import ModelSpec, ServedTensor
from edgewise.node.serve.service import OFFLOAD_BYTES, Decoded, InferenceService, Settings
from edgewise.node.serve.stats import ModelStats
from wait_support import wait_for

BYTES = dtypes.BY_TRITON["BYTES"]
FP32 = dtypes.BY_TRITON["FP32"]
TEXT = ModelSpec("text", "1", (ServedTensor("text", BYTES, (-1, -1)),), (ServedTensor("text_out", BYTES, (-1, -1)),))
MLP = ModelSpec("mlp", "1", (ServedTensor("x", FP32, (-1, 4)),), (ServedTensor("y", FP32, (-1, 3)),), 8)
EMPTY_ELEMENTS = 16_500_000  # 66 MB of zero lengths: under the default 64 MiB body limit


# --- pure checks ----------------------------------------------------------------------------------

def test_declared_elements_and_memory_are_checked_against_the_limits() -> None:
    cost = limits.BYTES_ELEMENT_COST
    small = limits.Limits(max_elements=100, max_memory=90 * cost)
    limits.check_declared(TEXT, [("text", "BYTES", [2, 45])], small, body_bytes=0)
    with pytest.raises(InferError) as err:
        limits.check_declared(TEXT, [("text", "BYTES", [1, 101])], small, body_bytes=0)
    assert err.value.status is Status.TOO_LARGE
    assert "101 tensor elements" in err.value.message and "--max-request-elements" in err.value.message
    with pytest.raises(InferError) as err:
        limits.check_declared(TEXT, [("text", "BYTES", [1, 91])], small, body_bytes=0)
    assert f"limit of {90 * cost} bytes per request (--max-request-memory)" in err.value.message
    with pytest.raises(InferError, match="--max-request-memory"):  # the body counts too
        limits.check_declared(MLP, [("x", "FP32", [1, 4])], small, body_bytes=90 * cost)


def test_json_over_the_memory_limit_is_refused_before_parsing() -> None:
    bounds = limits.Limits(max_memory=24 * 1000)
    limits.check_json(1000, bounds)
    with pytest.raises(InferError) as err:
        http_codec.decode_request(MLP, b"{" * 1001, None, bounds)  # not even valid JSON: never parsed
    assert err.value.status is Status.TOO_LARGE
    assert "at most 1000 bytes of JSON" in err.value.message and "binary_data_size" in err.value.message


def test_bytes_decoding_stops_at_the_declared_count() -> None:
    buf = b"\0\0\0\0" * 1000
    with pytest.raises(InferError, match=r"has more than 2 BYTES elements, expected 2 for shape \[1, 2\]"):
        codec.decode_raw("text", BYTES, [1, 2], buf)


def test_json_numbers_are_not_silently_cast() -> None:
    int32, int8, uint64 = (dtypes.BY_TRITON[t] for t in ("INT32", "INT8", "UINT64"))
    with pytest.raises(InferError, match="FP32: its JSON data must be numbers"):
        codec.decode_json("x", FP32, [2], ["1.5", "2"])  # numpy would parse the strings
    with pytest.raises(InferError, match="FP32: its JSON data must be numbers"):
        codec.decode_json("x", FP32, [2], [True, False])
    with pytest.raises(InferError, match="INT32: its JSON data must be integers"):
        codec.decode_json("i", int32, [1], [1.7])  # numpy would truncate it to 1
    with pytest.raises(InferError, match="from -128 to 127, got -129"):
        codec.decode_json("i", int8, [2], [0, -129])
    assert codec.decode_json("u", uint64, [1], [2**64 - 1]).tolist() == [2**64 - 1]
    assert codec.decode_json("x", FP32, [0, 4], []).shape == (0, 4)


def test_grpc_typed_contents_out_of_the_inputs_range_are_refused() -> None:
    spec = ModelSpec("m", "1", (ServedTensor("s", dtypes.BY_TRITON["INT8"], (-1, 2)),), (), 4)
    request = service_pb2.ModelInferRequest(model_name="m")
    request.inputs.add(name="s", datatype="INT8", shape=[1, 2]).contents.int_contents.extend([5, 300])
    with pytest.raises(InferError, match="INT8: its contents must be integers from -128 to 127, got 300"):
        grpc_api.decode_request(spec, request)
    request.inputs[0].contents.int_contents[1] = -7
    assert grpc_api.decode_request(spec, request).inputs["s"].tolist() == [[5, -7]]


# --- the real server, default limits --------------------------------------------------------------

@pytest.fixture(scope="module")
def text_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    root = tmp_path_factory.mktemp("text")
    serve_models_support.text(root / "text" / "model.onnx")
    with serving(root / "text", "text", root / "text.log") as server:
        yield server


@pytest.fixture(scope="module")
def mlp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    root = tmp_path_factory.mktemp("mlp")
    serve_models_support.mlp(root / "mlp" / "model.onnx")
    with serving(root / "mlp", "mlp", root / "mlp.log", "--max-batch-size", "8") as server:
        yield server


def _binary_text(shape: list[int], data: bytes) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": shape,
                                     "parameters": {"binary_data_size": len(data)}}]}).encode()
    return header + data, {"Inference-Header-Content-Length": str(len(header)),
                           "Content-Type": "application/octet-stream"}


def _grpc_text(server: ServeProcess, shape: list[int], data: bytes) -> grpc.RpcError:
    request = service_pb2.ModelInferRequest(model_name="text")
    request.inputs.add(name="text", datatype="BYTES", shape=shape)
    request.raw_input_contents.append(data)
    with grpc.insecure_channel(server.grpc_url) as channel, pytest.raises(grpc.RpcError) as err:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=120)
    return err.value


def _text_answer(server: ServeProcess, words: list[bytes]) -> list[str]:
    data = b"".join(struct.pack("<I", len(w)) + w for w in words)
    body, headers = _binary_text([1, len(words)], data)
    headers["Content-Type"] = "application/json"
    status, doc = post(server.http_port, "/v2/models/text/infer", body, headers)
    assert status == 200, doc
    return doc["outputs"][0]["data"]


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_sixteen_million_empty_bytes_elements_are_refused_before_decoding(text_server: ServeProcess,
                                                                          proto: str) -> None:
    data = b"\0\0\0\0" * EMPTY_ELEMENTS
    if proto == "http":
        body, headers = _binary_text([1, EMPTY_ELEMENTS], data)
        status, doc = post(text_server.http_port, "/v2/models/text/infer", body, headers)
        assert status == 413, doc
        message = doc["error"]
    else:
        err = _grpc_text(text_server, [1, EMPTY_ELEMENTS], data)
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
        message = err.details()
    assert "(--max-request-memory)" in message and f"{limits.BYTES_ELEMENT_COST} bytes per BYTES element" in message
    assert http_status(text_server.http_port, "/v2/health/live") == 200
    assert _text_answer(text_server, [b"still", b"serving"]) == ["still", "serving"]


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_more_bytes_elements_than_declared_are_refused_at_the_declared_count(text_server: ServeProcess,
                                                                             proto: str) -> None:
    data = b"\0\0\0\0" * EMPTY_ELEMENTS
    expected = "has more than 2 BYTES elements, expected 2 for shape [1, 2]"
    if proto == "http":
        body, headers = _binary_text([1, 2], data)
        status, doc = post(text_server.http_port, "/v2/models/text/infer", body, headers)
        assert status == 400 and expected in doc["error"], doc
    else:
        err = _grpc_text(text_server, [1, 2], data)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and expected in err.details()


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_declared_elements_over_the_limit_are_refused(text_server: ServeProcess, proto: str) -> None:
    shape = [2, limits.DEFAULT_MAX_ELEMENTS // 2 + 1]  # the data is never looked at
    if proto == "http":
        status, doc = post(text_server.http_port, "/v2/models/text/infer", *_binary_text(shape, b""))
        assert status == 413
        message = doc["error"]
    else:
        err = _grpc_text(text_server, shape, b"")
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        message = err.details()
    assert f"over the limit of {limits.DEFAULT_MAX_ELEMENTS} elements per request (--max-request-elements)" \
        in message


def test_sixty_mib_of_json_is_refused_before_parsing(mlp_server: ServeProcess) -> None:
    rows = 60 * 1024 * 1024 // 22
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 4],
                                   "data": [[1.0, 2.0, 3.0, 4.0]] * rows}]}).encode()
    status, doc = post(mlp_server.http_port, "/v2/models/mlp/infer", body)
    assert status == 413, doc
    assert "(--max-request-memory)" in doc["error"] and "binary_data_size" in doc["error"]
    assert http_status(mlp_server.http_port, "/v2/health/live") == 200


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def test_health_answers_while_a_large_json_request_is_decoded(mlp_server: ServeProcess) -> None:
    """Decoding ~10 MiB of nested JSON takes seconds of CPU: it happens on the decode thread, so a
    liveness probe sent once the server has read the whole request is answered before the request is.

    Sent at that moment (not after a sleep), the probe races nothing but the decode: were the decode
    on the event loop, it would already be running, and the large request would be answered first.
    (json.loads holds the interpreter lock until it returns: a probe arriving during the parse is
    answered after it, while the decoded rows are checked, which takes about as long again.)"""
    rows = (limits.DEFAULT.max_json_bytes - 200) // 6  # `[[0]],`: the slowest JSON to parse per byte
    body = ('{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":['
            + ",".join(["[[0]]"] * rows) + "]}]}").encode()
    assert len(body) <= limits.DEFAULT.max_json_bytes
    head = (f"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
            "Content-Type: application/json\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", mlp_server.http_port), timeout=120) as big:
        big.sendall(head + body)
        wait_for(lambda: server_has_read(big), 60, "the server to read the whole request", interval=0.01)
        with socket.create_connection(("127.0.0.1", mlp_server.http_port), timeout=60) as probe:
            probe.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n")
            answer = probe.recv(1024)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert not _readable(big), "the large request was answered before the probe: it ran on the loop"
        big.settimeout(120)
        response = big.recv(65536)
    assert response.startswith(b"HTTP/1.1 400") and b"elements of JSON data, expected 4" in response, \
        response[:300]


def test_a_request_still_arriving_at_sigterm_is_answered(tmp_path: Path) -> None:
    serve_models_support.mlp(tmp_path / "mlp" / "model.onnx")
    server = ServeProcess(tmp_path / "mlp", "mlp", tmp_path / "log", "--drain-timeout", "120").wait_ready()
    x = [0.25, -1.0, 2.0, 0.5]
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": x}]}).encode()
    head = f"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    try:
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=60) as sock:
            sock.sendall(head + body[:20])
            # Else only the order of the server's event-loop passes (accept and read before the drain's
            # idle sweep) keeps this connection from being closed as idle.
            wait_for(lambda: server_has_read(sock), 60, "the server to read the request's beginning", interval=0.01)
            server.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: "draining" in server.log(), 60, "the server to start draining")
            sock.sendall(body[20:])
            sock.settimeout(60)
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
        assert response.startswith(b"HTTP/1.1 200"), response
        assert b"Connection: close" in response
        y = json.loads(response.split(b"\r\n\r\n", 1)[1])["outputs"][0]["data"]
        expected = _mlp_reference(tmp_path / "mlp" / "model.onnx", np.array([x], np.float32))
        np.testing.assert_allclose(y, expected.ravel(), rtol=1e-5)
        assert server.wait_exit() == 0, server.log()  # one SIGTERM: a second one could land after exit
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.wait_exit()


def _mlp_reference(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("flag", ["--max-request-elements", "--max-request-memory"])
def test_limit_flags_must_be_positive(flag: str) -> None:
    result = subprocess.run([sys.executable, "-m", "edgewise", "serve", "--model-dir", ".", "--model-name", "m",
                             flag, "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"{flag}: expected a whole number of at least 1, got '0'" in result.stderr


# --- gRPC: the message sized up from its wire bytes before protobuf parses it -----------------------

def _typed_text(count: int) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="text")
    request.inputs.add(name="text", datatype="BYTES", shape=[1, 2]).contents.bytes_contents.extend([b""] * count)
    return request


def test_grpc_wire_counts_typed_contents_and_skeleton_fields_without_parsing() -> None:
    request = _typed_text(1000)
    request.raw_input_contents.append(b"\0" * 5000)  # raw bytes are skipped by length
    summary = grpc_wire.summarize(request.SerializeToString())
    assert summary.typed_bytes == 2000 and summary.fields < 20
    grpc_wire.check(request.SerializeToString(), limits.DEFAULT)
    with pytest.raises(InferError) as err:
        grpc_wire.check(request.SerializeToString(), limits.Limits(max_memory=24 * 1999))
    assert err.value.status is Status.TOO_LARGE and "raw_input_contents" in err.value.message
    many = service_pb2.ModelInferRequest(model_name="text")
    for k in range(grpc_wire.MAX_FIELDS):
        many.outputs.add(name=f"o{k}")
    with pytest.raises(InferError, match="more than 10000 fields"):
        grpc_wire.check(many.SerializeToString(), limits.DEFAULT)
    with pytest.raises(InferError, match="not a valid ModelInferRequest"):
        grpc_wire.summarize(request.SerializeToString()[:-3])


@pytest.mark.parametrize("case", ["typed contents", "fields"])
def test_grpc_messages_too_costly_to_parse_are_refused_unparsed(text_server: ServeProcess, case: str) -> None:
    """16 million empty bytes_contents (32 MB), or 2 million outputs: seconds of parsing."""
    if case == "typed contents":
        request, code, fragment = _typed_text(EMPTY_ELEMENTS), grpc.StatusCode.RESOURCE_EXHAUSTED, \
            "bytes of typed tensor contents"
    else:
        request = service_pb2.ModelInferRequest(model_name="text")
        request.outputs.extend([service_pb2.ModelInferRequest.InferRequestedOutputTensor()] * 2_000_000)
        code, fragment = grpc.StatusCode.INVALID_ARGUMENT, "more than 10000 fields"
    with grpc.insecure_channel(text_server.grpc_url) as channel, pytest.raises(grpc.RpcError) as err:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=120)
    assert err.value.code() == code and fragment in err.value.details(), err.value.details()
    assert http_status(text_server.http_port, "/v2/health/live") == 200


def test_a_request_at_the_memory_limit_stays_within_it(tmp_path: Path) -> None:
    """The estimate is an upper bound: the largest BYTES request the limit lets in, answered
    end to end, raises the server's peak memory by less than the limit."""
    limit = 64 * 1024 * 1024
    count = (limit - 6 * 170_000) // limits.BYTES_ELEMENT_COST  # minus the body: 5 bytes per element, and JSON
    serve_models_support.text(tmp_path / "text" / "model.onnx")
    with serving(tmp_path / "text", "text", tmp_path / "log", "--max-request-memory", str(limit)) as server:
        before = peak_memory(server.proc.pid)
        words = [b"%d" % (k % 10) for k in range(count)]
        assert _text_answer(server, words)[-3:] == [str(k % 10) for k in range(count - 3, count)]
        grown = peak_memory(server.proc.pid) - before
        assert grown < limit, f"a request within --max-request-memory {limit} took {grown} bytes"
        body, headers = _binary_text([1, limit // limits.BYTES_ELEMENT_COST + 1], b"")
        status, doc = post(server.http_port, "/v2/models/text/infer", body, headers)
        assert status == 413 and "(--max-request-memory)" in doc["error"]


# --- the decode thread ----------------------------------------------------------------------------

def _offloaded(decode: Any, cancel_first: bool = False) -> tuple[list[Any], list[bool], ModelStats]:
    """Submit one request whose decode is costly (over OFFLOAD_BYTES); return the replies,
    whether each decode ran on the main thread, and the statistics."""
    threads: list[bool] = []
    replies: list[Any] = []

    async def main() -> None:
        service = InferenceService(Settings("mlp"))
        batcher = Batcher(lambda feed, outputs: {"y": feed["x"] * 2}, service.stats)
        batcher.start()
        service.attach(MLP, batcher)

        def traced(spec: ModelSpec) -> Any:
            threads.append(threading.current_thread() is threading.main_thread())
            return decode(spec)

        done = asyncio.Event()

        def reply(result: Any) -> None:
            replies.append(result)
            done.set()

        cancel = service.submit("mlp", "", traced, lambda spec, request, outputs: outputs["y"].tolist(), reply,
                                size=OFFLOAD_BYTES + 1)
        assert not replies  # nothing is answered before the decode thread is done
        if cancel_first:
            cancel()  # the decode still runs; its result must then be dropped
            # The decode thread runs one job at a time, in order: once this one is done, the decode
            # above has finished, and its result reached the loop first.
            await asyncio.wait_for(service.on_decoder(lambda: None), 60)
        else:
            await asyncio.wait_for(done.wait(), 60)
        await batcher.close()
        service.close()
        stats.append(service.stats)

    stats: list[ModelStats] = []
    asyncio.run(main())
    return replies, threads, stats[0]


def test_costly_decodes_run_on_the_decode_thread_and_answer_through_reply() -> None:
    x = np.ones((1, 4), np.float32)
    replies, threads, _ = _offloaded(lambda spec: Decoded({"x": x}, 1, None))
    assert replies == [[[2.0, 2.0, 2.0, 2.0]]] and threads == [False]

    def refuse(spec: ModelSpec) -> Decoded:
        raise InferError(Status.INVALID_ARGUMENT, "bad input")

    replies, threads, stats = _offloaded(refuse)
    assert threads == [False] and isinstance(replies[0], InferError) and replies[0].message == "bad input"
    assert stats.fail.count == 1


def test_a_request_cancelled_while_it_decodes_is_never_answered() -> None:
    replies, threads, stats = _offloaded(lambda spec: Decoded({"x": np.ones((1, 4), np.float32)}, 1, None),
                                         cancel_first=True)
    assert threads == [False] and replies == []
    assert (stats.fail.count, stats.success.count, stats.execution_count) == (1, 0, 0)


def test_a_grpc_stream_open_at_sigterm_has_its_later_requests_answered(tmp_path: Path) -> None:
    import queue

    serve_models_support.mlp(tmp_path / "mlp" / "model.onnx")
    server = ServeProcess(tmp_path / "mlp", "mlp", tmp_path / "log", "--drain-timeout", "120").wait_ready()
    requests: queue.Queue[service_pb2.ModelInferRequest | None] = queue.Queue()

    def request(value: float) -> service_pb2.ModelInferRequest:
        r = service_pb2.ModelInferRequest(model_name="mlp", id=str(value))
        r.inputs.add(name="x", datatype="FP32", shape=[1, 4])
        r.raw_input_contents.append(np.full((1, 4), value, np.float32).tobytes())
        return r

    try:
        with grpc.insecure_channel(server.grpc_url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            answers = stub.ModelStreamInfer(iter(requests.get, None), timeout=120)
            requests.put(request(1.0))
            assert next(answers).infer_response.id == "1.0"
            server.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: "draining" in server.log(), 60, "the server to start draining")
            requests.put(request(2.0))  # arrives while the server drains
            second = next(answers)
            assert second.error_message == "" and second.infer_response.id == "2.0", second.error_message
            y = np.frombuffer(second.infer_response.raw_output_contents[0], np.float32)
            expected = _mlp_reference(tmp_path / "mlp" / "model.onnx", np.full((1, 4), 2.0, np.float32))
            np.testing.assert_allclose(y, expected.ravel(), rtol=1e-5)
            requests.put(None)  # the client ends the stream; the server can finish draining
            assert list(answers) == []
        assert server.wait_exit() == 0, server.log()
    finally:
        requests.put(None)
        if server.proc.poll() is None:
            server.proc.kill()
            server.wait_exit()
