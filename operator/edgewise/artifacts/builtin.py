"""The built-in store: files on the operator's volume, keyed by sha256, served read-only over HTTP.

Layout under the root (one volume, so renames are atomic):
    sha256/<hex>        the artifact
    sha256/<hex>.json   its annotations (source digest, target, precision, report summary)
    tmp/                writes in progress; renamed into sha256/ only once complete and verified

HTTP (aiohttp, read-only): GET/HEAD /artifacts/sha256/<hex> with Range support (nodes resume
cut downloads) and the X-Edgewise-Sha256 header; GET
/artifacts/sha256/<hex>.json for the annotations; GET /healthz. Nothing else; no listing.
Nothing to install besides the operator.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

from aiohttp import web

from edgewise import contract
from edgewise.artifacts.store import ArtifactNotFound, ArtifactRef, DigestMismatch, normalize, sha256_file

ARTIFACT_PATH = "/artifacts/sha256/{hex}"


class BuiltinStore:
    """Content-addressed files under `root`; `base_url` is where the HTTP server is reachable by nodes."""

    def __init__(self, root: str | Path, base_url: str = "") -> None:
        self.root = Path(root)
        self.base_url = base_url.rstrip("/")
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)

    def path_of(self, digest: str) -> Path:
        return self.root / "sha256" / normalize(digest)

    def put(self, path: Path, annotations: dict[str, str]) -> ArtifactRef:
        fd, tmp_name = tempfile.mkstemp(dir=self.root / "tmp", prefix="put-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            digest, size = sha256_file(tmp)  # hash what landed on the volume, not what we meant to write
            final = self.path_of(digest)
            if final.exists():
                tmp.unlink()
            else:
                os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        self._write_annotations(digest, annotations)
        return ArtifactRef(digest=digest, size=size, uri=self.uri_for(digest))

    def _write_annotations(self, digest: str, annotations: dict[str, str]) -> None:
        target = self.path_of(digest).with_suffix(".json")
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp", prefix="ann-")
        with os.fdopen(fd, "w") as f:
            json.dump({k: str(v) for k, v in annotations.items()}, f, indent=2, sort_keys=True)
        os.replace(tmp, target)

    def annotations(self, digest: str) -> dict[str, str]:
        try:
            return json.loads(self.path_of(digest).with_suffix(".json").read_text())
        except FileNotFoundError as err:
            raise ArtifactNotFound(digest) from err

    def get(self, digest: str, dest: Path) -> None:
        want = normalize(digest)
        src = self.path_of(want)
        if not src.exists():
            raise ArtifactNotFound(want)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        shutil.copyfile(src, tmp)
        got, _ = sha256_file(tmp)
        if got != want:  # bit rot on the volume: refuse rather than serve a wrong model
            tmp.unlink()
            raise DigestMismatch(f"stored artifact {want} hashes to {got}")
        os.replace(tmp, dest)

    def has(self, digest: str) -> bool:
        return self.path_of(digest).exists()

    def uri_for(self, digest: str) -> str:
        return self.base_url + ARTIFACT_PATH.format(hex=normalize(digest))


def make_app(store: BuiltinStore) -> web.Application:
    """The read-only HTTP app; mount it in the operator's loop or run it with `serve_in_thread`."""

    async def artifact(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        hexpart, is_json = (name[:-5], True) if name.endswith(".json") else (name, False)
        try:
            path = store.path_of(hexpart)
        except ValueError:
            raise web.HTTPNotFound(text="not a sha256 digest\n") from None
        if is_json:
            path = path.with_suffix(".json")
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
    return app


async def start(store: BuiltinStore, host: str, port: int) -> web.AppRunner:
    """Start serving in the running event loop (the operator's); `await runner.cleanup()` stops it."""
    runner = web.AppRunner(make_app(store), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


class BackgroundServer:
    """The HTTP server on its own thread and loop (tests, `edgewise` dev tools)."""

    def __init__(self, store: BuiltinStore, host: str = "127.0.0.1", port: int = 0) -> None:
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="artifact-http", daemon=True)
        self._thread.start()
        self._runner = asyncio.run_coroutine_threadsafe(start(store, host, port), self._loop).result(30)
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
