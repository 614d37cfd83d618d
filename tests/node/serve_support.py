"""Run `python -m edgewise serve` as a real process on loopback ports, and talk to it.

Tests drive the server exactly as a node's clients would: tritonclient over HTTP and
gRPC, a Prometheus scrape on the metrics port, SIGTERM to stop it.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import np_to_triton_dtype

from edgewise.devcluster.processes import free_ports

READY_TIMEOUT_S = 180  # the CI machine may be busy compiling; loading is usually ~2 s


class ServeProcess:
    def __init__(self, model_dir: Path, model_name: str, log_path: Path, *args: str) -> None:
        self.model_dir = model_dir
        self.model_name = model_name
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgewise", "serve", "--model-dir", str(model_dir),
             "--model-name", model_name, "--host", "127.0.0.1", "--http-port", str(self.http_port),
             "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port), *args],
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> ServeProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode} before ready:\n{self.log()}")
            if http_status(self.http_port, "/v2/health/ready") == 200:
                return self
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.log()}")

    def wait_exit(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.wait_exit()
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def http(self) -> httpclient.InferenceServerClient:
        return httpclient.InferenceServerClient(self.http_url)

    def grpc(self) -> grpcclient.InferenceServerClient:
        return grpcclient.InferenceServerClient(self.grpc_url)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()


@contextlib.contextmanager
def serving(model_dir: Path, model_name: str, log_path: Path, *args: str) -> Iterator[ServeProcess]:
    server = ServeProcess(model_dir, model_name, log_path, *args)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def peak_memory(pid: int) -> int:
    """A process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def server_has_read(client: socket.socket) -> bool:
    """Whether the server process has read every byte `client` sent (an IPv4 loopback TCP
    connection): the client's send queue and the server side's receive queue are both empty
    (/proc/net/tcp). What a test waits for instead of sleeping before it depends on that."""
    ours, theirs = client.getsockname()[1], client.getpeername()[1]
    queues = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
        tx, rx = (int(q, 16) for q in fields[4].split(":"))
        if (local, remote) == (ours, theirs):
            queues["client unsent"] = tx
        elif (local, remote) == (theirs, ours):
            queues["server unread"] = rx
    return queues == {"client unsent": 0, "server unread": 0}


def http_status(port: int, path: str) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def in_threads(calls: list[Callable[[], Any]], timeout: float = 120) -> list[Any]:
    """Run `calls` concurrently, one thread each; each result, or the exception it raised."""
    results: list[Any] = [TimeoutError(f"no answer within {timeout}s")] * len(calls)

    def run(k: int) -> None:
        try:
            results[k] = calls[k]()
        except BaseException as err:  # noqa: BLE001 - handed to the caller's assertions
            results[k] = err

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return results


def post(
    port: int, path: str, body: bytes, headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """A raw POST for requests tritonclient refuses to build (malformed JSON, lying sizes)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def client(server: ServeProcess, proto: str) -> Any:
    return server.http() if proto == "http" else server.grpc()


def infer(
    server: ServeProcess, proto: str, model: str, arrays: dict[str, np.ndarray], binary: bool = True,
    outputs: list[str] | None = None, version: str = "",
) -> Any:
    mod = httpclient if proto == "http" else grpcclient
    inputs = []
    for name, arr in arrays.items():
        i = mod.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
        if proto == "http":
            i.set_data_from_numpy(arr, binary_data=binary)
        else:
            i.set_data_from_numpy(arr)
        inputs.append(i)
    requested = None
    if outputs is not None:
        requested = [httpclient.InferRequestedOutput(o, binary_data=binary) if proto == "http"
                     else grpcclient.InferRequestedOutput(o) for o in outputs]
    return client(server, proto).infer(model, inputs, model_version=version, outputs=requested)


def check_concurrent_minilm(server: ServeProcess, answer: Callable[[str, dict[str, np.ndarray]], np.ndarray],
                            expected: Callable[[dict[str, np.ndarray]], np.ndarray]) -> None:
    """Six MiniLM clients at once, two sequence lengths, HTTP and gRPC: merged batches must split back row for
    row. `answer(proto, feed)` is the server's embedding, `expected(feed)` the reference runtime's."""
    import serve_models_support

    feeds = [serve_models_support.minilm_inputs(batch=1, seq=16 if k % 2 else 8, seed=100 + k) for k in range(6)]
    results = in_threads([lambda k=k: answer("http" if k < 3 else "grpc", feeds[k]) for k in range(len(feeds))])
    for k, feed in enumerate(feeds):
        assert isinstance(results[k], np.ndarray), results[k]
        np.testing.assert_allclose(results[k], expected(feed), atol=1e-4)
    (stats,) = server.http().get_inference_statistics("minilm")["model_stats"]
    assert stats["inference_stats"]["fail"]["count"] == 0
