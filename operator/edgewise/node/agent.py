"""`edgewise agent`: the node's artifact cache, served over HTTP to the pods of its node.

One agent per node (a DaemonSet with host networking, the only Edgewise
component with a hostPath). It fills its cache from artifact sources, verifies
every digest, and serves cached bytes read-only — also when the uplink is gone.

API (see docs/node-cache.md):
    GET  /v1/artifacts                     listing of the cache
    GET  /v1/artifacts/{key}[?uri=&model=] a cached artifact or plan; a miss is filled from `uri`
    PUT  /v1/artifacts/{plan-key}          a TensorRT plan built on this node (sha256 in a header)
    POST /v1/prefetch                      {"uri", "sha256", "model"}: stage an artifact in the background
    GET  /v1/prefetch/{sha256}             state of a prefetch
    GET  /healthz, GET /metrics
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from edgewise import contract
from edgewise.node import download as dl
from edgewise.node.cache import (
    PLAN_KEY_RE,
    DigestMismatch,
    NodeCache,
    Writer,
    normalize_digest,
)

log = logging.getLogger("edgewise.agent")

SHA256_HEADER = contract.AGENT_SHA256_HEADER
CHUNK = 1 << 16
MAX_PLAN_BYTES = 8 << 30  # a plan larger than this is a bug, not a model
MAX_JOBS_KEPT = 256


def source_allowed(uri: str, file_root: Path | None) -> str | None:
    """Why the agent refuses to fetch `uri`, or None when it may.

    The agent runs on the host network with a hostPath: a `file://` URI from any
    pod could otherwise read host files whose digest is known (e.g. /etc/os-release).
    So `file://` is only allowed below an explicitly configured directory.
    """
    scheme = dl.scheme_of(uri)
    if scheme in ("http", "https", "oci"):
        return None
    if scheme == "file":
        if file_root is None:
            return "file:// sources are disabled on this agent (start it with --file-root)"
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(uri).path)).resolve()
        if not path.is_relative_to(file_root.resolve()):
            return f"file:// sources must be under {file_root}"
        return None
    return f"unsupported scheme {scheme!r}"


@dataclass
class Job:
    """One download into the cache, awaited by GETs and/or watched through /v1/prefetch."""

    sha256: str
    uri: str
    model: str | None
    state: str = "queued"  # queued | downloading | ready | failed
    error: str = ""
    error_kind: str = ""  # digest_mismatch | transient | permanent | refused
    writer: Writer | None = None

    def view(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256, "uri": self.uri, "model": self.model, "state": self.state,
            "error": self.error, "errorKind": self.error_kind,
            "bytes": self.writer.size if self.writer and self.state == "downloading" else None,
        }


class _StoppableSink:
    """Passes writes to the cache writer until the agent shuts down, so a download thread ends."""

    def __init__(self, writer: Writer, stop: threading.Event) -> None:
        self._w = writer
        self._stop = stop

    def write(self, data: bytes) -> None:
        if self._stop.is_set():
            raise dl.PermanentError("agent shutting down")
        self._w.write(data)

    def reset(self) -> None:
        self._w.reset()

    def tell(self) -> int:
        return self._w.tell()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.hits = Counter("edgewise_agent_cache_hits", "Artifact requests served from cache", registry=r)
        self.misses = Counter("edgewise_agent_cache_misses", "Artifact requests not in the cache", registry=r)
        self.served_bytes = Counter("edgewise_agent_served_bytes", "Bytes of artifacts served", registry=r)
        self.downloaded_bytes = Counter(
            "edgewise_agent_downloaded_bytes", "Bytes downloaded into the cache", registry=r)
        self.failures = Counter(
            "edgewise_agent_download_failures", "Failed cache fills", ["kind"], registry=r)
        self.cache_bytes = Gauge("edgewise_agent_cache_bytes", "Bytes held in the cache", registry=r)


class Agent:
    """The agent's state: the cache, downloads in flight, prefetch jobs, metrics."""

    def __init__(
        self, cache: NodeCache, *, file_root: Path | None = None, attempts: int = 5,
        base_delay: float = 0.5, timeout: float = 30.0,
    ) -> None:
        self.cache = cache
        self.file_root = file_root
        self.attempts = attempts
        self.base_delay = base_delay
        self.timeout = timeout
        self.jobs: dict[str, Job] = {}
        self.metrics = Metrics()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    async def ensure(self, sha256: str, uri: str, model: str | None) -> Job | None:
        """Make `sha256` cached, downloading it from `uri` once however many ask; None if it was."""
        if self.cache.has(sha256) and await asyncio.to_thread(self.cache.verify, sha256):
            return None
        task = self._inflight.get(sha256)
        if task is None:
            job = Job(sha256=sha256, uri=uri, model=model)
            self._remember(job)
            task = asyncio.get_running_loop().create_task(self._fill(job))
            self._inflight[sha256] = task
            task.add_done_callback(lambda _t: self._inflight.pop(sha256, None))
        await asyncio.shield(task)  # a client hanging up does not cancel the fill
        return self.jobs.get(sha256)

    def _remember(self, job: Job) -> None:
        self.jobs[job.sha256] = job
        while len(self.jobs) > MAX_JOBS_KEPT:
            self.jobs.pop(next(iter(self.jobs)))

    async def _fill(self, job: Job) -> None:
        refusal = source_allowed(job.uri, self.file_root)
        if refusal:
            job.state, job.error, job.error_kind = "failed", refusal, "refused"
            return
        job.state = "downloading"
        try:
            await asyncio.to_thread(self._fill_blocking, job)
        except DigestMismatch as err:
            job.state, job.error, job.error_kind = "failed", str(err), "digest_mismatch"
        except dl.TransientError as err:
            job.state, job.error, job.error_kind = "failed", str(err), "transient"
        except dl.DownloadError as err:
            job.state, job.error, job.error_kind = "failed", str(err), "permanent"
        except Exception as err:  # noqa: BLE001 - a job reports every failure, the agent goes on
            log.exception("fill of %s failed", job.sha256)
            job.state, job.error, job.error_kind = "failed", repr(err), "internal"
        else:
            job.state = "ready"
        finally:
            job.writer = None
            self.metrics.cache_bytes.set(self.cache.total_bytes())
        if job.state == "failed":
            self.metrics.failures.labels(job.error_kind).inc()
            log.warning("could not cache %s from %s: %s", job.sha256, job.uri, job.error)
        else:
            log.info("cached %s from %s", job.sha256, job.uri)

    def _fill_blocking(self, job: Job) -> None:
        with self.cache.writer() as w:
            job.writer = w
            dl.download(
                job.uri, _StoppableSink(w, self._stop), attempts=self.attempts,
                base_delay=self.base_delay, timeout=self.timeout,
                on_retry=lambda n, err: log.info("retry %d of %s: %s", n, job.uri, err),
            )
            self.metrics.downloaded_bytes.inc(w.size)
            self.cache.commit(w, job.sha256, model=job.model)


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _serve_file(agent: Agent, digest: str) -> web.StreamResponse:
    path = agent.cache.path(digest)
    try:
        size = path.stat().st_size
    except FileNotFoundError:  # evicted between lookup and now: rare, and a retry refills it
        return _error(503, f"sha256 {digest} was evicted while being requested; retry")
    agent.metrics.hits.inc()
    agent.metrics.served_bytes.inc(size)
    headers = {SHA256_HEADER: digest, "ETag": f'"{digest}"', "Content-Type": "application/octet-stream",
               "Cache-Control": "public, max-age=31536000, immutable"}
    return web.FileResponse(path, headers=headers)


async def get_artifact(request: web.Request) -> web.StreamResponse:
    agent: Agent = request.app["agent"]
    key = request.match_info["key"]
    uri = request.query.get("uri", "")
    model = request.query.get("model") or None
    if PLAN_KEY_RE.match(key):
        digest = agent.cache.resolve(key)
        if digest is None or not await asyncio.to_thread(agent.cache.verify, digest):
            agent.metrics.misses.inc()
            return _error(404, f"no plan cached under {key}")
        await asyncio.to_thread(agent.cache.touch, digest)
        return _serve_file(agent, digest)
    try:
        digest = normalize_digest(key)
    except ValueError as err:
        return _error(400, f"{err}; or a plan key plan-<sha256>-sm<cc>-trt<version>-<precision>")
    if agent.cache.has(digest) and await asyncio.to_thread(agent.cache.verify, digest):
        await asyncio.to_thread(agent.cache.touch, digest, model)
        return _serve_file(agent, digest)
    agent.metrics.misses.inc()
    if not uri:
        return _error(404, f"sha256 {digest} is not cached; pass ?uri= to fetch it from its source")
    job = await agent.ensure(digest, uri, model)
    if job is not None and job.state == "failed":
        status = 403 if job.error_kind == "refused" else 502
        return _error(status, job.error, kind=job.error_kind)
    await asyncio.to_thread(agent.cache.touch, digest, model)
    return _serve_file(agent, digest)


async def put_artifact(request: web.Request) -> web.Response:
    agent: Agent = request.app["agent"]
    key = request.match_info["key"]
    if not PLAN_KEY_RE.match(key):
        return _error(405, "only TensorRT plans (plan-… keys) can be uploaded; artifacts come from sources")
    try:
        expected = normalize_digest(request.headers.get(SHA256_HEADER, ""))
    except ValueError as err:
        return _error(400, f"header {SHA256_HEADER}: {err}")
    with agent.cache.writer() as w:
        async for chunk in request.content.iter_chunked(CHUNK):
            w.write(chunk)  # small local writes; fsync happens off the loop in commit
            if w.size > MAX_PLAN_BYTES:
                return _error(413, f"plan larger than {MAX_PLAN_BYTES} bytes")
        try:
            await asyncio.to_thread(agent.cache.commit, w, expected, plan_key=key)
        except DigestMismatch as err:
            agent.metrics.failures.labels("digest_mismatch").inc()
            return _error(422, str(err), kind="digest_mismatch")
    agent.metrics.cache_bytes.set(agent.cache.total_bytes())
    log.info("stored plan %s (%s)", key, expected)
    return web.json_response({"key": key, "sha256": expected}, status=201)


async def list_artifacts(request: web.Request) -> web.Response:
    agent: Agent = request.app["agent"]
    return web.json_response({
        "artifacts": agent.cache.entries(), "totalBytes": agent.cache.total_bytes(),
        "maxBytes": agent.cache.max_bytes, "keepPerModel": agent.cache.keep_per_model,
    })


async def post_prefetch(request: web.Request) -> web.Response:
    agent: Agent = request.app["agent"]
    try:
        body = await request.json()
        uri = str(body["uri"])
        digest = normalize_digest(str(body["sha256"]))
        model = body.get("model") or None
    except (ValueError, KeyError, TypeError) as err:
        return _error(400, f'want JSON {{"uri": …, "sha256": …, "model": …}}: {err}')
    location = f"{contract.AGENT_PREFETCH_PATH}/{digest}"
    if agent.cache.has(digest):
        await asyncio.to_thread(agent.cache.touch, digest, model)
        return web.json_response({"sha256": digest, "state": "ready"}, headers={"Location": location})
    refusal = source_allowed(uri, agent.file_root)
    if refusal:
        return _error(403, refusal, kind="refused")
    task = asyncio.get_running_loop().create_task(agent.ensure(digest, uri, model))
    request.app["background"].add(task)
    task.add_done_callback(request.app["background"].discard)
    await asyncio.sleep(0)  # let the job register, so the status below is not 404
    job = agent.jobs.get(digest)
    view = job.view() if job else {"sha256": digest, "state": "queued"}
    return web.json_response(view, status=202, headers={"Location": location})


async def get_prefetch(request: web.Request) -> web.Response:
    agent: Agent = request.app["agent"]
    try:
        digest = normalize_digest(request.match_info["sha256"])
    except ValueError as err:
        return _error(400, str(err))
    job = agent.jobs.get(digest)
    if job is not None and job.state != "ready":
        return web.json_response(job.view())
    if agent.cache.has(digest):
        return web.json_response({"sha256": digest, "state": "ready"})
    return _error(404, f"no prefetch of {digest} and not cached", state="unknown")


async def healthz(request: web.Request) -> web.Response:
    agent: Agent = request.app["agent"]
    return web.json_response({"status": "ok", "artifacts": agent.cache.count()})


async def metrics(request: web.Request) -> web.Response:
    agent: Agent = request.app["agent"]
    agent.metrics.cache_bytes.set(agent.cache.total_bytes())
    body = generate_latest(agent.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(agent: Agent, *, scrub_on_start: bool = True) -> web.Application:
    app = web.Application()
    app["agent"] = agent
    app["background"] = set()
    artifact = contract.AGENT_ARTIFACT_PATH
    app.router.add_get("/v1/artifacts", list_artifacts)
    app.router.add_get(artifact, get_artifact)
    app.router.add_put(artifact, put_artifact)
    app.router.add_post(contract.AGENT_PREFETCH_PATH, post_prefetch)
    app.router.add_get(contract.AGENT_PREFETCH_PATH + "/{sha256}", get_prefetch)
    app.router.add_get(contract.AGENT_HEALTH_PATH, healthz)
    app.router.add_get("/metrics", metrics)

    async def start_scrub(app: web.Application) -> None:
        # Serve at once; blobs not yet re-hashed are verified on their first request instead.
        if scrub_on_start:
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(_scrub, agent))
            app["background"].add(task)
            task.add_done_callback(app["background"].discard)

    async def shutdown(app: web.Application) -> None:
        agent.stop()  # download threads see it on their next chunk and give up
        for task in list(app["background"]):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    app.on_startup.append(start_scrub)
    app.on_shutdown.append(shutdown)
    return app


def _scrub(agent: Agent) -> None:
    bad = agent.cache.scrub()
    if bad:
        log.warning("deleted %d cached blobs whose bytes no longer match their digest: %s", len(bad), bad)


def run(
    *, host: str, port: int, cache_dir: Path, max_bytes: int | None, keep_per_model: int,
    file_root: Path | None, attempts: int, scrub_on_start: bool,
) -> None:
    """Open the cache (dropping half-written files), then serve until SIGTERM/SIGINT."""
    cache = NodeCache(cache_dir, max_bytes=max_bytes, keep_per_model=keep_per_model)
    cache.evict()  # a smaller budget than last time applies at once
    agent = Agent(cache, file_root=file_root, attempts=attempts)
    log.info("agent on %s:%d, cache %s (%d bytes, budget %s)", host, port, cache_dir,
             cache.total_bytes(), max_bytes)
    web.run_app(build_app(agent, scrub_on_start=scrub_on_start), host=host, port=port,
                print=None, access_log=None)
