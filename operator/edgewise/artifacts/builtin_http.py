"""The built-in store over HTTP: read-only for nodes, one write path for optimization Jobs.

GET/HEAD /artifacts/sha256/<hex> with Range support (nodes resume cut downloads) and the
X-Edgewise-Sha256 header; GET /artifacts/sha256/<hex>.json for the annotations,
/artifacts/sha256/<hex>.intoto.json for the attestation; GET /healthz.
No listing. Nothing to install besides the operator.

One write path, for optimization Jobs (runIn: Job): PUT /uploads/<job key>/artifact|attestation|report with
the job's bearer token. It only lands files in that job's work directory, which `Uploads` names;
the operator verifies and stores them as it does a worker process's results.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Protocol

from aiohttp import web

from edgewise import contract
from edgewise.artifacts.builtin import BuiltinStore


class Uploads(Protocol):
    """Who may upload job results, and where they go."""

    def expects(self, key: str) -> bool:
        """Whether job `key` is running and may upload (after an operator restart, not until it is adopted)."""

    def upload_dir(self, key: str, token: str) -> Path | None:
        """The work directory of job `key` if `token` is its token, else None."""


MAX_REPORT_BYTES = 16 << 20
MAX_ATTESTATION_BYTES = 1 << 20


def upload_handler(uploads: Uploads):  # noqa: ANN201 - an aiohttp handler
    async def upload(request: web.Request) -> web.Response:
        key, part = request.match_info["key"], request.match_info["part"]
        if not uploads.expects(key):  # 503: the pod retries, a restarted operator adopts its Job meanwhile
            raise web.HTTPServiceUnavailable(text=f"not expecting results of optimization job {key} (yet)\n")
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        job_dir = uploads.upload_dir(key, token) if token else None
        if job_dir is None:
            raise web.HTTPForbidden(text=f"wrong upload token for optimization job {key}\n")
        if part == "attestation":  # the operator verifies it against the artifact before storing it
            body = await _read_at_most(request, MAX_ATTESTATION_BYTES)
            if body is None:
                raise web.HTTPBadRequest(text="an attestation is at most 1 MiB\n")
            _write_atomically(job_dir / ("artifact.onnx" + contract.ATTESTATION_SUFFIX), body)
            return web.Response(status=204)
        if part == "report":
            body = await _read_at_most(request, MAX_REPORT_BYTES)
            try:
                report = json.loads(body) if body is not None else None
            except ValueError:
                report = None
            if not isinstance(report, dict):
                raise web.HTTPBadRequest(text="the report must be a JSON object of at most 16 MiB\n")
            _write_atomically(job_dir / "report.json", json.dumps(report, indent=2).encode())
            return web.Response(status=204)
        want = request.headers.get(contract.AGENT_SHA256_HEADER, "")
        part_path = job_dir / "artifact.onnx.part"
        h = hashlib.sha256()
        with open(part_path, "wb") as out:
            async for chunk in request.content.iter_chunked(1 << 20):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != want:
            part_path.unlink(missing_ok=True)
            raise web.HTTPBadRequest(text=f"artifact sha256 is {h.hexdigest()}, the upload said {want!r}\n")
        os.replace(part_path, job_dir / "artifact.onnx")
        return web.Response(status=204)

    return upload


async def _read_at_most(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None when it is longer than `limit`.

    `content.read(n)` returns what has arrived so far, not n bytes: a body sent in several
    TCP writes (or larger than the socket buffer) must be read to its end.
    """
    if request.content_length is not None and request.content_length > limit:
        return None
    parts: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(1 << 20):
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def make_app(store: BuiltinStore, uploads: Uploads | None = None) -> web.Application:
    """The HTTP app; mount it in the operator's loop or run it with `BackgroundServer`."""

    async def artifact(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        suffix = next((s for s in (contract.ATTESTATION_SUFFIX, ".json") if name.endswith(s)), "")
        hexpart, is_json = name.removesuffix(suffix), bool(suffix)
        try:
            path = store.path_of(hexpart)
        except ValueError:
            raise web.HTTPNotFound(text="not a sha256 digest\n") from None
        if is_json:
            path = path.with_name(hexpart + suffix)
        if not path.is_file():
            raise web.HTTPNotFound(text="no such artifact\n")
        headers = {"Cache-Control": "public, max-age=31536000, immutable"}
        if not is_json:
            headers |= {contract.AGENT_SHA256_HEADER: hexpart, "Content-Type": "application/octet-stream"}
        else:
            headers["Content-Type"] = "application/json"
        return web.FileResponse(path, headers=headers)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/artifacts/sha256/{name}", artifact)  # GET also answers HEAD
    app.router.add_get("/healthz", healthz)
    if uploads is not None:
        app.router.add_put(contract.JOB_UPLOAD_PATH.format(key="{key}", part="{part:artifact|attestation|report}"),
                           upload_handler(uploads))
    return app


async def start(store: BuiltinStore, host: str, port: int, uploads: Uploads | None = None) -> web.AppRunner:
    """Start serving in the running event loop (the operator's); `await runner.cleanup()` stops it."""
    runner = web.AppRunner(make_app(store, uploads), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


class BackgroundServer:
    """The HTTP server on its own thread and loop (tests, `edgewise` dev tools)."""

    def __init__(self, store: BuiltinStore, host: str = "127.0.0.1", port: int = 0,
                 uploads: Uploads | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="artifact-http", daemon=True)
        self._thread.start()
        self._runner = asyncio.run_coroutine_threadsafe(start(store, host, port, uploads), self._loop).result(30)
        sock = self._runner.addresses[0]
        self.url = f"http://{sock[0]}:{sock[1]}"

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
            self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
