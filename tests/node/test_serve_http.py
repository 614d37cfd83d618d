"""The inference port's HTTP/1.1 itself, spoken byte by byte to a real `edgewise serve`.

tritonclient exercises the happy path (test_serve_protocol.py); these are what other clients,
proxies and probes do: pipelining, chunked bodies, `Expect: 100-continue`, HTTP/1.0,
bodies and headers over the limits, bytes that are not HTTP, and clients that hang up.
"""

from __future__ import annotations

import gzip
import json
import socket
import time
from collections.abc import Iterator

import numpy as np
import onnxruntime as ort
import pytest
import serve_models_support
from serve_support import ServeProcess, serving

MAX_REQUEST_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    root = tmp_path_factory.mktemp("http")
    serve_models_support.mlp(root / "mlp" / "model.onnx")
    with serving(root / "mlp", "mlp", root / "mlp.log", "--max-batch-size", "8",
                 "--max-request-bytes", str(MAX_REQUEST_BYTES), "--threads", "1") as s:
        yield s


def mlp_reference(server: ServeProcess, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(server.model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def infer_body(value: float = 1.0) -> bytes:
    return json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [value] * 4}]}).encode()


def request(path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            version: str = "HTTP/1.1") -> bytes:
    method = "GET" if body is None else "POST"
    lines = [f"{method} {path} {version}", "Host: test"]
    if body is not None and "Transfer-Encoding" not in (headers or {}):
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


class Reader:
    """Reads responses off a raw socket: status, headers (lower-cased), Content-Length body."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError(f"connection closed; got {self.buf!r}")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            if not self._fill():
                raise ConnectionError("connection closed mid-body")
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(status_line.split()[1]), headers, body

    def closed(self) -> bool:
        """True once the server closed the connection (nothing more to read)."""
        self.sock.settimeout(30)
        try:
            return not self._fill()
        except ConnectionResetError:  # closed with our unread bytes still in its buffer
            return True


def connect(server: ServeProcess) -> tuple[socket.socket, Reader]:
    sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=30)
    return sock, Reader(sock)


def outputs(body: bytes) -> list[float]:
    return json.loads(body)["outputs"][0]["data"]


def test_keep_alive_and_pipelined_requests_answer_in_order(server: ServeProcess) -> None:
    sock, reader = connect(server)
    with sock:
        # Three requests in one write: answered in the order sent, on the same connection.
        sock.sendall(request("/v2/models/mlp/infer", infer_body(1.0)) + request("/v2/health/ready")
                     + request("/v2/models/mlp/infer", infer_body(-1.0)))
        first, ready, second = reader.response(), reader.response(), reader.response()
        assert (first[0], ready[0], second[0]) == (200, 200, 200)
        assert outputs(first[2]) != outputs(second[2])
        ref = mlp_reference(server, np.full((1, 4), -1.0, np.float32))
        np.testing.assert_allclose(outputs(second[2]), ref.ravel(), rtol=1e-5)
        sock.sendall(request("/v2/health/live"))  # still open
        assert reader.response()[0] == 200


def test_chunked_body_and_expect_continue(server: ServeProcess) -> None:
    body = infer_body(0.5)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:])) + b"0\r\n\r\n"
    sock, reader = connect(server)
    with sock:
        sock.sendall(request("/v2/models/mlp/infer", chunked, {"Transfer-Encoding": "chunked"}))
        assert reader.response()[0] == 200
        sock.sendall(request("/v2/models/mlp/infer", None, {}).replace(b"GET", b"POST", 1)[:-2]
                     + f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode())
        assert reader.response()[0] == 100  # go ahead
        sock.sendall(body)
        assert reader.response()[0] == 200


def test_gzip_body_that_inflates_beyond_the_limit_gets_413(server: ServeProcess) -> None:
    bomb = gzip.compress(b"\0" * (MAX_REQUEST_BYTES * 4))
    sock, reader = connect(server)
    with sock:
        sock.sendall(request("/v2/models/mlp/infer", bomb, {"Content-Encoding": "gzip"}))
        status, _, body = reader.response()
    assert status == 413 and f"limit of {MAX_REQUEST_BYTES} bytes" in json.loads(body)["error"]


def test_unsupported_content_encoding_gets_415(server: ServeProcess) -> None:
    sock, reader = connect(server)
    with sock:
        sock.sendall(request("/v2/models/mlp/infer", infer_body(), {"Content-Encoding": "br"}))
        status, _, body = reader.response()
    assert status == 415 and "identity, gzip or deflate" in json.loads(body)["error"]


def test_chunked_body_over_the_limit_gets_413_and_close(server: ServeProcess) -> None:
    chunk = b"\0" * 16384
    sock, reader = connect(server)
    with sock:
        sock.sendall(request("/v2/models/mlp/infer", b"", {"Transfer-Encoding": "chunked"}))
        try:
            for _ in range(MAX_REQUEST_BYTES // len(chunk) + 2):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # the server may close before every chunk is out
        status, headers, body = reader.response()
        assert status == 413 and headers.get("connection") == "close"
        assert "exceeds the limit" in json.loads(body)["error"]
        assert reader.closed()


def test_headers_over_the_limit_get_431(server: ServeProcess) -> None:
    sock, reader = connect(server)
    with sock:
        sock.sendall(request("/v2/health/live", None, {f"X-Filler-{i}": "y" * 1000 for i in range(80)}))
        assert reader.response()[0] == 431
        assert reader.closed()


def test_garbage_gets_400_and_close_and_the_server_keeps_serving(server: ServeProcess) -> None:
    sock, reader = connect(server)
    with sock:
        sock.sendall(b"\x16\x03\x01 this is not HTTP\r\n\r\n")  # e.g. a TLS client on the plain port
        status, _, body = reader.response()
        assert status == 400 and "malformed HTTP request" in json.loads(body)["error"]
        assert reader.closed()
    sock, reader = connect(server)
    with sock:
        sock.sendall(request("/v2/health/ready"))
        assert reader.response()[0] == 200


def test_unknown_path_is_404_and_wrong_method_is_405(server: ServeProcess) -> None:
    sock, reader = connect(server)
    with sock:
        sock.sendall(request("/v1/models/mlp:predict", b"{}"))
        status, _, body = reader.response()
        assert status == 404 and "/v2/models/<name>/infer" in json.loads(body)["error"]
        sock.sendall(request("/v2/models/mlp/infer"))  # GET
        status, headers, body = reader.response()
        assert status == 405 and headers["allow"] == "POST" and "use POST" in json.loads(body)["error"]


def test_http_1_0_and_connection_close_are_honoured(server: ServeProcess) -> None:
    for raw in (request("/v2/health/ready", version="HTTP/1.0"),
                request("/v2/health/ready", None, {"Connection": "close"})):
        sock, reader = connect(server)
        with sock:
            sock.sendall(raw)
            assert reader.response()[0] == 200
            assert reader.closed()


def test_client_hanging_up_mid_request_leaves_the_server_serving(server: ServeProcess) -> None:
    for _ in range(5):
        sock, _ = connect(server)
        with sock:  # headers promise a body that never comes, or a request never read
            sock.sendall(request("/v2/models/mlp/infer", infer_body())[:-20])
        sock, _ = connect(server)
        with sock:
            sock.sendall(request("/v2/models/mlp/infer", infer_body()))
    sock, reader = connect(server)
    with sock:
        sock.sendall(request("/v2/models/mlp/infer", infer_body()))
        assert reader.response()[0] == 200


def test_percent_encoded_model_name_is_decoded(server: ServeProcess) -> None:
    sock, reader = connect(server)
    with sock:
        sock.sendall(request("/v2/models/%6Dlp/ready"))
        assert reader.response()[0] == 200
        sock.sendall(request("/v2/models/other%20model/ready"))
        assert reader.response()[0] == 400


def test_silent_connections_are_closed_after_the_idle_timeout(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("idle")
    serve_models_support.mlp(root / "mlp" / "model.onnx")
    with serving(root / "mlp", "mlp", root / "mlp.log", "--http-idle-timeout", "1") as s:
        idle, idle_reader = connect(s)
        stalled, stalled_reader = connect(s)
        with idle, stalled:
            idle.sendall(request("/v2/health/ready"))
            assert idle_reader.response()[0] == 200  # then nothing: an idle keep-alive connection
            stalled.sendall(request("/v2/models/mlp/infer", infer_body())[:-10])  # half a request
            # closed() is True only on the server's close: the reader's own (30 s) timeout raises instead,
            # so this holds however busy the machine is, without timing anything.
            assert idle_reader.closed() and stalled_reader.closed()
        busy, reader = connect(s)
        with busy:  # a connection that keeps talking stays open
            for _ in range(4):
                busy.sendall(request("/v2/health/live"))
                assert reader.response()[0] == 200
                time.sleep(0.5)
