"""Test helpers for the node cache: a local HTTP artifact source and real agent processes.

Everything listens on 127.0.0.1 only. The source can cut a body midway or stall
after half of it, to reproduce an uplink that drops during a download.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edgewise.devcluster import processes
from edgewise.devcluster.processes import free_port
from wait_support import wait_for

REPO = Path(__file__).resolve().parents[2]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class SourceServer:
    """An HTTP artifact source on loopback, with faults on demand.

    `cut[path] = n`: the next n responses for `path` send half the body and close.
    `stall[path]`: responses for `path` send half the body, set `half_sent`, and
    hold the connection until `release` is set (then close it, short).
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.stall: set[str] = set()
        self.ignore_range: set[str] = set()  # answer 200 with the whole body, like a server without Range
        self.post_ready: set[str] = set()  # POST answers {"state": "ready"}, like an agent's prefetch
        self.redirects: dict[str, str] = {}  # path -> Location of a 302
        self.half_sent = threading.Event()
        self.release = threading.Event()
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self._httpd: ThreadingHTTPServer | None = None

    def add(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return self.url(path)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        assert self._httpd is not None
        return f"http://{host}:{self._httpd.server_port}{path}"

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)

    def start(self) -> SourceServer:
        source = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]  # the query does not pick the file
                source.requests.append((path, self.headers.get("Range")))
                if path in source.redirects:
                    self.send_response(302)
                    self.send_header("Location", source.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = source.files.get(path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                range_header = self.headers.get("Range", "")
                if (range_header.startswith("bytes=") and range_header.endswith("-")
                        and path not in source.ignore_range):
                    start = int(range_header[len("bytes="):-1])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if source.cut.get(path, 0) > 0:
                    source.cut[path] -= 1
                    self._short(body)
                elif path in source.stall:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    source.half_sent.set()
                    source.release.wait(60)
                    self._short(b"")
                else:
                    self.wfile.write(body)

            def do_POST(self) -> None:
                path = self.path.split("?", 1)[0]
                source.requests.append((path, None))
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = b'{"state": "ready"}' if path in source.post_ready else b'{"error": "no"}'
                self.send_response(200 if path in source.post_ready else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _short(self, body: bytes) -> None:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()


# Callers of the test agents (tests/node/static_auth_agent.py), as a TokenReview would describe them.
NODE = "node-a"
OPERATOR_USER = "system:serviceaccount:edgewise-system:edgewise-operator"
POD = "pod-token"  # a runtime pod on the agent's node
OTHER_NODE_POD = "other-node-pod-token"  # a pod whose token is bound to another node
OPERATOR = "operator-token"
UNBOUND = "unbound-token"  # a ServiceAccount token not bound to any pod
TENANT = "tenant-token"  # a runtime pod of another namespace on the agent's node
TOKENS = {
    POD: {"user": "system:serviceaccount:vision:default", "node": NODE, "pod": "detector-abcde"},
    OTHER_NODE_POD: {"user": "system:serviceaccount:vision:default", "node": "node-b", "pod": "detector-fghij"},
    OPERATOR: {"user": OPERATOR_USER},
    UNBOUND: {"user": "system:serviceaccount:vision:default"},
    TENANT: {"user": "system:serviceaccount:retail:default", "node": NODE, "pod": "counter-12345"},
}


def http(method: str, url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 60,
         token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; HTTP errors are answers too, not exceptions."""
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


def pod_http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
             token: str | None = POD, timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    """A request to a test agent, by default as a runtime pod of its node."""
    return http(method, url, body, headers, timeout=timeout, token=token)


def artifact_url(agent: AgentProcess, key: str, uri: str = "", model: str = "") -> str:
    """The agent's URL of an artifact or plan `key`, with the source `uri` and `model` when given."""
    query = urllib.parse.urlencode({k: v for k, v in (("uri", uri), ("model", model)) if v})
    return f"{agent.url}/v1/artifacts/{key}" + (f"?{query}" if query else "")


def get_json(url: str, token: str | None = POD) -> Any:
    status, _, body = http("GET", url, token=token)
    assert status == 200, (status, body)
    return json.loads(body)


class AgentProcess:
    """The real agent as a process on loopback, with its own cache dir, node `NODE`, the test
    callers of TOKENS, and 127.0.0.1 (where the test sources listen) explicitly allowed."""

    def __init__(self, cache_dir: Path, *extra: str, port: int | None = None, allow_loopback: bool = True,
                 env: dict[str, str] | None = None) -> None:
        self.cache_dir = cache_dir
        self.extra = extra
        self.env = env or {}
        self.allow = ["--allow-host", "127.0.0.1"] if allow_loopback else []
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = cache_dir.parent / f"agent-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AgentProcess:
        tokens = self.cache_dir.parent / f"tokens-{self.port}.json"
        tokens.write_text(json.dumps(TOKENS))
        cmd = [sys.executable, str(REPO / "tests" / "node" / "static_auth_agent.py"), str(tokens),
               "--host", "127.0.0.1", "--port", str(self.port), "--cache-dir", str(self.cache_dir),
               "--node-name", NODE, "--operator-user", OPERATOR_USER, *self.allow, *self.extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        wait_for(self._healthy, 60, f"agent on port {self.port} (log: {self.log})", interval=0.05)
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"agent exited with {self.proc.returncode}: {self.log.read_text()}")
        try:
            return http("GET", self.url + "/healthz", timeout=2)[0] in (200, 503)
        except OSError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None:
            processes.terminate(self.proc)

    def artifacts(self) -> list[dict[str, Any]]:
        return list(get_json(self.url + "/v1/artifacts", token=OPERATOR)["artifacts"])  # the operator's view
