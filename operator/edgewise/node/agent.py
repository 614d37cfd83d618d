"""`edgewise agent`: the node's artifact cache, served over HTTP to the pods of its node.

One agent per node (a DaemonSet with host networking, the only Edgewise
component with a hostPath). It fills its cache from artifact sources, verifies
every digest, and serves cached bytes read-only — also when the uplink is gone.

Every call but /healthz and /metrics needs a bearer token (edgewise.node.auth):
pods of this node may fill, read and upload plans; the operator may stage; the
agents of other nodes may stage and read by digest (peers of a site).

Downloads from a source (outside the site) go through one `Limiter`: the site's
byte rate and daily cap, which the operator sends with each prefetch (the flags
give the default). A node that is not its site's source node fetches from the
peer agent the operator named instead, falling back to the source (node/peers.py).
Downloads only reach allowed destinations (edgewise.shared.destinations), run in
a bounded pool of their own with an overall deadline, and never hold more
bytes in flight than the cache's budget.

API (see docs/node-cache.md):
    GET  /v1/artifacts                     listing of the cache
    GET  /v1/artifacts/{key}[?uri=&model=] a cached artifact or plan; a miss is filled from `uri`
    PUT  /v1/artifacts/{plan-key}          a TensorRT plan built on this node (sha256 in a header), once (with
                                           --plan-signing-key: again while the plan is not attested by its key)
    POST /v1/prefetch                      {"uri", "sha256", "model"[, "namespace", "site", "budget", "peers"]}:
                                           stage in the background
    GET  /v1/prefetch/{sha256}             state of a prefetch
    GET  /v1/attestations/{sha256}         the attestation a cached artifact was verified with
    GET  /v1/telemetry                     the node's power (W) and temperature (°C), or why not (operator)
    GET  /healthz, GET /metrics

With trusted keys configured (`--trusted-keys`: the operator's attestation keys, pinned on the node;
node/trust.py), an artifact is cached only with a valid attestation fetched from beside it, and each
use re-checks that attestation, offline, against the keys in force and the source the caller pins
(`?source=` / "sourceSha256"). A refusal caches nothing and replaces nothing; it answers 403 with the
reason as `kind` and counts in edgewise_agent_trust_refusals_total{reason}.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from edgewise import contract
from edgewise.node import peers as peer_fetch
from edgewise.node.auth import Caller, Policy, Role, Verifier, VerifierUnavailable, bearer_token
from edgewise.node.cache import (
    PLAN_KEY_RE,
    CacheFull,
    NodeCache,
    PlanExists,
    plan_model_digest,
)
from edgewise.node.telemetry import NodeTelemetry, Telemetry
from edgewise.node.trust import (
    ATTESTATION_KINDS,
    TrustRefused,
    attest_plan,
    attestation_of,
    judge,
    own_plan_verdict,
)
from edgewise.shared import download as dl
from edgewise.shared import tracing
from edgewise.shared.bandwidth import Budget, Limiter, Stopped
from edgewise.shared.destinations import Destinations
from edgewise.shared.digest import DigestMismatch, Writer, normalize_digest
from edgewise.shared.trust.keys import Signer
from edgewise.shared.trust.verify import NodeTrust, Reason, Verdict

log = logging.getLogger("edgewise.agent")

SHA256_HEADER = contract.AGENT_SHA256_HEADER
CHUNK = 1 << 16
MAX_PLAN_BYTES = 8 << 30  # a plan larger than this is a bug, not a model
MAX_JOBS_KEPT = 256
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")  # as `edgewise fetch` accepts them
NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def source_allowed(uri: str, file_root: Path | None) -> str | None:
    """Why the agent refuses to fetch `uri`, or None when it may.

    The agent runs on the host network with a hostPath: a `file://` URI from any
    pod could otherwise read host files whose digest is known (e.g. /etc/os-release).
    So `file://` is only allowed below an explicitly configured directory.
    (Network destinations are vetted at connect time: edgewise.shared.destinations.)
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


@dataclass(frozen=True)
class Limits:
    """Bounds on the work the agent takes on (flags of `edgewise agent`)."""

    download_workers: int = 4  # downloads at once; more wait in a queue
    max_queued: int = 64  # downloads queued or running; beyond, a fill is refused with 429
    download_deadline: float = 7200.0  # seconds one download may take, retries included
    index_flush: float = 30.0  # seconds between writes of the uses reads recorded (reads never write)
    telemetry_interval: float = 5.0  # seconds between background reads (they keep RAPL's baseline fresh)
    budget: Budget = Budget()  # source downloads' rate and daily cap until the operator sends the site's


@dataclass
class Job:
    """One download into the cache, awaited by GETs and/or watched through /v1/prefetch."""

    sha256: str
    uri: str
    model: str | None
    namespace: str = ""  # of the caller that started it; others see its state, not its URI or error
    state: str = "queued"  # queued | downloading | ready | failed
    error: str = ""
    error_kind: str = ""  # digest_mismatch | transient | permanent | refused | too_large | deadline
    writer: Writer | None = None
    started: float | None = None  # time.monotonic() when a download worker took it
    paused: float = 0.0  # seconds spent waiting for the bandwidth budget (not counted by the deadline)
    for_peer: bool = False  # asked by a peer agent: always from the source (peers never chain)
    via: str = ""  # where the bytes came from: "source" or "peer <address>"
    limiter: Limiter | None = None  # the budget pacing it, while it downloads from the source
    source: str = ""  # the source digest the first caller pinned: the attestation must derive from it

    def waiting_until(self) -> float | None:
        """When the daily cap lifts, while this download waits for it."""
        return self.limiter.waiting_until if self.limiter is not None and self.state == "downloading" else None

    def view(self, full: bool = True) -> dict[str, Any]:
        """The job as callers see it; `full=False` for another tenant's job: a URI may carry a
        presigned credential, an error may quote the source."""
        view = {"sha256": self.sha256, "state": self.state, "errorKind": self.error_kind,
                "bytes": self.writer.size if self.writer and self.state == "downloading" else None,
                "via": self.via or None, "waitingUntil": _rfc3339(self.waiting_until())}
        if full:
            view.update(uri=self.uri, model=self.model, error=self.error)
        return view


def _rfc3339(wall: float | None) -> str | None:
    if wall is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


class DeadlineExceeded(dl.PermanentError):
    """The download took longer than the agent's --download-deadline."""


# A failed fill's errorKind, by the first class its exception is an instance of; any other: "internal".
FAILURE_KINDS: tuple[tuple[type[Exception], str], ...] = (
    (DigestMismatch, "digest_mismatch"),
    (CacheFull, "too_large"),
    (DeadlineExceeded, "deadline"),
    (dl.RefusedError, "refused"),
    (dl.TransientError, "transient"),
    (dl.DownloadError, "permanent"),
    (RuntimeError, "transient"),  # the pool was shut down: the agent is stopping
)


class _GuardedSink:
    """Passes writes to the cache writer until the agent shuts down or the deadline passes,
    so a download thread ends whatever the source does (1 byte every 10 s included)."""

    def __init__(self, writer: Writer, stop: threading.Event, deadline: float, job: Job | None = None) -> None:
        self._w = writer
        self._stop = stop
        self._deadline = deadline
        self._job = job

    def write(self, data: bytes) -> None:
        if self._stop.is_set():
            raise dl.PermanentError("agent shutting down")
        if time.monotonic() > self._deadline + (self._job.paused if self._job else 0.0):
            raise DeadlineExceeded("download deadline exceeded (the agent's --download-deadline)")
        self._w.write(data)

    def reset(self) -> None:
        self._w.reset()

    def tell(self) -> int:
        return self._w.tell()


def _pause(job: Job, seconds: float) -> None:
    job.paused += seconds


class _JobThrottle:
    """The agent's limiter as one job sees it: time spent waiting is the job's pause, and a wait
    for the daily cap shows in the job's state."""

    def __init__(self, limiter: Limiter, job: Job) -> None:
        self._limiter = limiter
        self._job = job

    def acquire(self, n: int) -> int:
        start = time.monotonic()
        try:
            return self._limiter.acquire(n)
        except Stopped as err:
            raise dl.PermanentError("agent shutting down") from err
        finally:
            self._job.paused += time.monotonic() - start

    def refund(self, n: int) -> None:
        self._limiter.refund(n)


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
        self.denied = Counter("edgewise_agent_denied_requests", "Requests refused by authentication "
                              "or authorization", ["status"], registry=r)
        self.cache_bytes = Gauge("edgewise_agent_cache_bytes", "Bytes held in the cache", registry=r)
        self.source_bytes = Counter("edgewise_agent_source_bytes", "Bytes downloaded from sources (outside the "
                                    "site; within the bandwidth budget)", registry=r)
        self.peer_bytes = Counter("edgewise_agent_peer_bytes", "Bytes fetched from a peer agent of the site",
                                  registry=r)
        self.peer_fallbacks = Counter("edgewise_agent_peer_fallbacks", "Fills that fell back from a peer agent "
                                      "to the source", registry=r)
        self.budget_rate = Gauge("edgewise_agent_bandwidth_bytes_per_second", "The site's byte rate for source "
                                 "downloads (0: no limit)", registry=r)
        self.budget_daily = Gauge("edgewise_agent_bandwidth_daily_bytes", "The site's daily cap (0: no cap)",
                                  registry=r)
        self.daily_used = Gauge("edgewise_agent_bandwidth_used_today_bytes", "Source bytes counted against "
                                "today's cap", registry=r)
        self.trust_refusals = Counter("edgewise_agent_trust_refusals", "Artifacts refused by attestation "
                                      "checks (fills and uses), by reason", ["reason"], registry=r)
        self.cap_waiting = Gauge("edgewise_agent_bandwidth_waiting_until_seconds", "While downloads wait for "
                                 "the daily cap to reset: when (Unix time); 0 otherwise", registry=r)

    def watch(self, telemetry: Callable[[], Telemetry]) -> None:
        """Export the node's power and temperature, read at each scrape (cheap sysfs reads)."""
        self.registry.register(_TelemetryCollector(telemetry))


class _TelemetryCollector(Collector):
    """Power and temperature gauges, present only while the hardware gives a reading: an absent
    series, not a 0, says "unavailable" (the reason is in GET /v1/telemetry)."""

    def __init__(self, telemetry: Callable[[], Telemetry]) -> None:
        self._telemetry = telemetry

    def collect(self) -> Any:
        t = self._telemetry()
        power = GaugeMetricFamily("edgewise_agent_power_watts", "Power drawn by the node (the input rail or "
                                  "RAPL), in watts", labels=["source"])
        if t.power.watts is not None:
            power.add_metric([t.power.source], t.power.watts)
        temp = GaugeMetricFamily("edgewise_agent_temperature_celsius", "Temperature of each sensor of the node, "
                                 "in degrees Celsius", labels=["sensor"])
        for s in t.temperature.sensors:
            temp.add_metric([s.name], s.celsius)
        yield power
        yield temp

    def describe(self) -> Any:
        return []  # collected on demand only: registering reads nothing


class Agent:
    """The agent's state: the cache, downloads in flight, prefetch jobs, who may call, metrics."""

    def __init__(
        self, cache: NodeCache, *, verifier: Verifier, policy: Policy,
        destinations: Destinations | None = None, file_root: Path | None = None, attempts: int = 5,
        base_delay: float = 0.5, timeout: float = 30.0, limits: Limits = Limits(),
        telemetry: NodeTelemetry | None = None,
        peer_token_file: Path | None = None, trust: NodeTrust | None = None, plan_signer: Signer | None = None,
    ) -> None:
        self.cache = cache
        self.trust = trust  # None: digests only, as before trust was configurable
        self.plan_signer = plan_signer  # this node's key: it attests the TensorRT plans it keeps
        self.verifier = verifier
        self.policy = policy
        self.file_root = file_root
        self.attempts = attempts
        self.base_delay = base_delay
        self.timeout = timeout
        self.limits = limits
        self.jobs: dict[str, Job] = {}
        self.metrics = Metrics()
        self.telemetry = telemetry or NodeTelemetry()
        self._telemetry_lock = threading.Lock()  # scrapes and requests read from different threads
        self.metrics.watch(self.read_telemetry)
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._uploads = 0  # plan uploads in progress: bounded like downloads
        self._stop = threading.Event()
        # Downloads get threads of their own: reads of cached files (which hash and stat in the
        # default executor) never queue behind a slow uplink.
        self._pool = ThreadPoolExecutor(max_workers=limits.download_workers, thread_name_prefix="download")
        self.openers = dl.guarded_openers(destinations or Destinations())
        self.peer_token_file = peer_token_file
        # What the operator said last about this node's site: its budget and whom to fetch from.
        self.site = ""
        self.peers: tuple[str, ...] = ()
        self.limiter = Limiter(limits.budget, sleep=self._stop.wait)

    def configure_site(self, site: str, budget: Budget, peers: tuple[str, ...]) -> None:
        """The operator's word on this node's site (with every prefetch): it applies to later fills."""
        if (site, budget, peers) != (self.site, self.limiter.budget, self.peers):
            log.info("site %r: budget %s, peers %s", site, budget.to_wire(), list(peers) or "(none: the source)")
        self.site, self.peers = site, peers
        self.limiter.set_budget(budget)

    def read_telemetry(self) -> Telemetry:
        with self._telemetry_lock:
            return self.telemetry.read()

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def busy(self, sha256: str) -> bool:
        """True when `sha256` would be a new download beyond the queue's bound (joining one is free)."""
        return sha256 not in self._inflight and len(self._inflight) >= self.limits.max_queued

    def stuck(self) -> list[Job]:
        """Downloads running past their deadline while every download worker is taken."""
        now = time.monotonic()
        running = [j for j in self.jobs.values() if j.state == "downloading" and j.started is not None]
        if len(running) < self.limits.download_workers:
            return []
        return [j for j in running if now - (j.started or now) - j.paused > self.limits.download_deadline]

    def check_use(self, digest: str, source: str, *, staging: bool = False) -> Verdict | None:
        """Whether a cached artifact may be used now: its cached attestation against the keys in force and
        the source the caller pins (offline). None when trust is off; TrustRefused when it may not.

        `staging` (a prefetch): a caller that pins no source only asks for the artifact to be there, as
        a fill that pins none does; each use pins one."""
        if self.trust is None:
            return None
        try:
            return judge(self.trust, digest, self.cache.attestation(digest), digest, source)
        except TrustRefused as err:
            if staging and not source and err.verdict.reason is Reason.SOURCE_NOT_PINNED:
                return err.verdict
            self.metrics.trust_refusals.labels(err.kind).inc()
            log.warning("refused to serve %s: %s", digest, err)
            raise

    def _verify_fill(self, job: Job, w: Writer, peer: str = "") -> None:
        """Before the bytes in `w` become a cache entry: their attestation — from the peer that delivered
        them (it cached it with them), else from beside the source — checked here and kept with them.
        Nothing is committed when this raises.

        A fill that pins no source (a prefetch that does not say) caches an artifact whose attestation is
        genuine and its own; the source is then checked at each use, which must pin one."""
        if self.trust is None:
            return
        w.check_digest(job.sha256)  # wrong bytes are a DigestMismatch as without trust (a peer's: try the source)
        envelope = peer_fetch.attestation(peer, self.peer_token_file, job.sha256, self.timeout) if peer else None
        if envelope is None:  # a site's nodes but its source node may have no uplink: the peer's comes first
            envelope = attestation_of(job.uri, openers=self.openers, attempts=self.attempts, timeout=self.timeout,
                                      base_delay=self.base_delay)
        try:
            judge(self.trust, w.hexdigest(), envelope, job.sha256, job.source)
        except TrustRefused as err:
            if job.source or err.verdict.reason is not Reason.SOURCE_NOT_PINNED:
                raise
        if envelope is not None:
            self.cache.put_attestation(job.sha256, envelope)

    async def ensure(self, sha256: str, uri: str, model: str | None, namespace: str = "",
                     for_peer: bool = False, source: str = "") -> Job | None:
        """Make `sha256` cached, downloading it from `uri` once however many ask; None if it was."""
        if self.cache.has(sha256) and await asyncio.to_thread(self.cache.verify, sha256):
            return None
        task = self._inflight.get(sha256)
        if task is None:
            job = Job(sha256=sha256, uri=uri, model=model, namespace=namespace, for_peer=for_peer,
                      source=source)
            self._remember(job)
            task = asyncio.get_running_loop().create_task(self._fill(job))
            self._inflight[sha256] = task
            task.add_done_callback(lambda _t: self._inflight.pop(sha256, None))
        await asyncio.shield(task)  # a client hanging up does not cancel the fill
        return self.jobs.get(sha256)

    def _remember(self, job: Job) -> None:
        self.jobs.pop(job.sha256, None)  # a digest asked for again is the newest job, not the oldest
        self.jobs[job.sha256] = job
        while len(self.jobs) > MAX_JOBS_KEPT:
            self.jobs.pop(next(iter(self.jobs)))

    async def _fill(self, job: Job) -> None:
        refusal = source_allowed(job.uri, self.file_root)
        if refusal:
            job.state, job.error, job.error_kind = "failed", refusal, "refused"
            return
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._fill_blocking, job)
        except Exception as err:  # noqa: BLE001 - a job reports every failure, the agent goes on
            kind = next((k for cls, k in FAILURE_KINDS if isinstance(err, cls)), "internal")
            if isinstance(err, TrustRefused):
                kind = err.kind
                self.metrics.trust_refusals.labels(kind).inc()
            error = str(err)
            if kind == "internal":  # a bug: its words go to the log, callers get its type
                log.exception("fill of %s failed", job.sha256)
                error = type(err).__name__
            job.state, job.error, job.error_kind = "failed", error, kind
        else:
            job.state = "ready"
        finally:
            job.writer = job.limiter = None
            self.metrics.cache_bytes.set(self.cache.total_bytes())
        if job.state == "failed":
            self.metrics.failures.labels(job.error_kind).inc()
            log.warning("could not cache %s from %s: %s", job.sha256, job.uri, job.error)
        else:
            log.info("cached %s from %s", job.sha256, job.uri)

    def _fill_blocking(self, job: Job) -> None:
        job.state, job.started = "downloading", time.monotonic()
        deadline = job.started + self.limits.download_deadline
        for peer in () if job.for_peer else self.peers:
            if self._from_peer(job, peer, deadline):
                return
        job.via, job.limiter = "source", self.limiter
        with (tracing.span("agent.download", {"edgewise.sha256": job.sha256, "edgewise.model": job.model or "",
                                              "edgewise.scheme": dl.scheme_of(job.uri)}) as span,
              self.cache.writer() as w):
            job.writer = w
            dl.download(
                job.uri, _GuardedSink(w, self._stop, deadline, job), attempts=self.attempts,
                base_delay=self.base_delay, timeout=self.timeout, openers=self.openers,
                sleep=lambda s: self._stop.wait(min(s, max(0.0, deadline + job.paused - time.monotonic()))),
                on_retry=lambda n, err: log.info("retry %d of %s: %s", n, job.uri, err),
                throttle=_JobThrottle(self.limiter, job),
            )
            self.metrics.downloaded_bytes.inc(w.size)
            span.set_attribute("edgewise.bytes", w.size)
            self.metrics.source_bytes.inc(w.size)
            self._verify_fill(job, w)
            try:
                self.cache.commit(w, job.sha256, model=job.model)
            except DigestMismatch as err:  # the real digest goes to the node's log only, never to callers
                log.warning("%s hashed to sha256 %s, not to the digest asked for", job.uri, err.actual)
                raise

    def _from_peer(self, job: Job, peer: str, deadline: float) -> bool:
        """Fill `job` from a peer agent of the site; False when the source must do it instead."""
        job.via = f"peer {peer}"
        with self.cache.writer() as w:
            job.writer = w
            try:
                peer_fetch.fetch(peer, self.peer_token_file, sha256=job.sha256, uri=job.uri,
                                 model=job.model or "", sink=_GuardedSink(w, self._stop, deadline, job),
                                 stop=self._stop, timeout=self.timeout, waited=lambda s: _pause(job, s))
                self._verify_fill(job, w, peer)
                self.cache.commit(w, job.sha256, model=job.model)
            except (peer_fetch.PeerError, DigestMismatch, TrustRefused) as err:  # the source may do better
                if isinstance(err, TrustRefused):
                    self.metrics.trust_refusals.labels(err.kind).inc()
                if self._stop.is_set():
                    raise dl.PermanentError("agent shutting down") from err
                log.warning("peer %s could not deliver %s (%s): from the source instead", peer, job.sha256, err)
                self.metrics.peer_fallbacks.inc()
                return False
            self.metrics.downloaded_bytes.inc(w.size)
            self.metrics.peer_bytes.inc(w.size)
            return True


# ---- HTTP ----------------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


def _too_many(what: str) -> web.Response:
    return _error(429, f"the agent has too many {what}; retry later", headers={"Retry-After": "10"})


def _background(app: web.Application, coro: Coroutine[Any, Any, Any]) -> None:
    """Run `coro` as a task of the app: referenced until done, cancelled at shutdown."""
    task = asyncio.get_running_loop().create_task(coro)
    app["background"].add(task)
    task.add_done_callback(app["background"].discard)


def requires(*roles: Role) -> Callable[[Handler], Handler]:
    """Authenticate the bearer token (TokenReview) and authorize one of `roles`; the caller is
    put into request["caller"]."""
    def wrap(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            agent: Agent = request.app["agent"]
            token = bearer_token(request.headers.get("Authorization", ""))
            if not token:
                agent.metrics.denied.labels("401").inc()
                return _error(401, f"send a ServiceAccount token with audience {contract.AGENT_AUDIENCE} as "
                                   "'Authorization: Bearer <token>'",
                              headers={"WWW-Authenticate": "Bearer"})
            try:
                caller = await agent.verifier.verify(token)
            except VerifierUnavailable as err:
                log.warning("cannot authenticate a caller: %s", err)
                return _error(503, "the agent cannot reach the apiserver to check the token; retry")
            if caller is None:
                agent.metrics.denied.labels("401").inc()
                return _error(401, f"token not valid for audience {contract.AGENT_AUDIENCE}")
            if not agent.policy.allows(caller, roles):
                agent.metrics.denied.labels("403").inc()
                log.info("refused %s %s to %s", request.method, request.path, caller.describe())
                return _error(403, f"{caller.describe()} may not {request.method} {request.path} on node "
                                   f"{agent.policy.node_name}: only the operator and this node's pods may")
            request["caller"] = caller
            return await handler(request)
        return guarded
    return wrap


def _model_key(agent: Agent, caller: Caller, model: str | None, namespace: str | None = None) -> str:
    """The name a use is recorded under: `<namespace>/<model>`, the namespace the caller's own
    (a pod's) or, for the operator, the model's. ValueError on a name that is no model name."""
    if not model:
        return ""
    if not MODEL_NAME_RE.match(model):
        raise ValueError(f"model {model!r} is not a model name (letters, digits, '.', '_', '-'; at most 253)")
    namespace = _caller_namespace(agent, caller) or namespace
    if not namespace or not NAMESPACE_RE.match(namespace):
        return ""  # the operator staged without a namespace: nothing to pin it under
    return f"{namespace}/{model}"


def _serve_file(agent: Agent, digest: str) -> web.StreamResponse:
    path = agent.cache.path(digest)
    try:
        size = path.stat().st_size
    except FileNotFoundError:  # evicted between lookup and now: rare, and a retry refills it
        return _error(503, f"sha256 {digest} was evicted while being requested; retry")
    agent.metrics.hits.inc()
    agent.metrics.served_bytes.inc(size)
    headers = {SHA256_HEADER: digest, "ETag": f'"{digest}"', "Content-Type": "application/octet-stream",
               "Cache-Control": "private, max-age=31536000, immutable"}
    return web.FileResponse(path, headers=headers)


def _caller_namespace(agent: Agent, caller: Caller) -> str:
    """The namespace a caller acts in: a pod's own; "" for the operator (it sees every job)."""
    return caller.namespace if Role.NODE_POD in agent.policy.roles(caller) else ""


def _sees(agent: Agent, caller: Caller, job: Job) -> bool:
    namespace = _caller_namespace(agent, caller)
    return not namespace or namespace == job.namespace


def _plan_key(caller: Caller, key: str) -> str:
    """Plans are kept per namespace: a plan built by one tenant's pod is never loaded by
    another's (their pods build and upload their own). The suffix keeps the key a plan key."""
    return f"{key}-ns.{caller.namespace}"


def _job_error(agent: Agent, caller: Caller, job: Job) -> web.Response:
    # An attestation refused is a 403 like a refused source; bytes that hash wrong stay a 502 (a bad upstream).
    status = 403 if job.error_kind in ATTESTATION_KINDS else \
        {"refused": 403, "too_large": 507, "deadline": 504}.get(job.error_kind, 502)
    message = job.error if _sees(agent, caller, job) else f"the download of {job.sha256} failed ({job.error_kind})"
    return _error(status, message, kind=job.error_kind)


@requires(Role.NODE_POD, Role.PEER)
async def get_artifact(request: web.Request) -> web.StreamResponse:
    agent: Agent = request.app["agent"]
    key = request.match_info["key"]
    if Role.NODE_POD not in agent.policy.roles(request["caller"]):
        return await _get_for_peer(agent, key)
    uri = request.query.get("uri", "")
    source = request.query.get("source", "")
    try:
        model = _model_key(agent, request["caller"], request.query.get("model"))
    except ValueError as err:
        return _error(400, str(err))
    if PLAN_KEY_RE.match(key):
        internal = _plan_key(request["caller"], key)
        digest = agent.cache.resolve(internal) if PLAN_KEY_RE.match(internal) else None
        if digest is None or not await asyncio.to_thread(agent.cache.verify, digest):
            agent.metrics.misses.inc()
            return _error(404, f"no plan cached under {key}")
        agent.cache.touch(digest)
        return _serve_file(agent, digest)
    try:
        digest = normalize_digest(key)
    except ValueError as err:
        return _error(400, f"{err}; or a plan key plan-<sha256>-sm<cc>-trt<version>-<precision>")
    if agent.cache.has(digest) and await asyncio.to_thread(agent.cache.verify, digest):
        refused = _refusal(agent, digest, source)
        if refused is not None:
            return refused
        agent.cache.touch(digest, model or None)  # in memory: a read does not rewrite the index
        return _serve_file(agent, digest)
    agent.metrics.misses.inc()
    if not uri:
        return _error(404, f"sha256 {digest} is not cached; pass ?uri= to fetch it from its source")
    if agent.busy(digest):
        return _too_many("downloads queued")
    caller = request["caller"]
    job = await agent.ensure(digest, uri, model or None, _caller_namespace(agent, caller), source=source)
    if job is not None and job.state == "failed":
        return _job_error(agent, caller, job)
    refused = _refusal(agent, digest, source)
    if refused is not None:
        return refused
    agent.cache.touch(digest, model or None)
    return _serve_file(agent, digest)


def _refusal(agent: Agent, digest: str, source: str) -> web.Response | None:
    """403 with the reason when the cached artifact may not be used (see Agent.check_use); else None."""
    try:
        agent.check_use(digest, source)
    except TrustRefused as err:
        return _error(403, str(err), kind=err.kind)
    return None


@requires(Role.NODE_POD, Role.PEER)
async def get_attestation(request: web.Request) -> web.Response:
    agent: Agent = request.app["agent"]
    try:
        digest = normalize_digest(request.match_info["sha256"])
    except ValueError as err:
        return _error(400, str(err))
    envelope = agent.cache.attestation(digest) if agent.cache.has(digest) else None
    if envelope is None:
        return _error(404, f"no attestation cached for sha256 {digest}")
    return web.Response(body=envelope, content_type="application/json")


async def _get_for_peer(agent: Agent, key: str) -> web.StreamResponse:
    """A peer agent reads a cached artifact by digest: no plans, no fill (it asks with a prefetch)."""
    try:
        digest = normalize_digest(key)
    except ValueError as err:
        return _error(400, f"peers read artifacts by digest: {err}")
    if agent.cache.has(digest) and await asyncio.to_thread(agent.cache.verify, digest):
        return _serve_file(agent, digest)
    return _error(404, f"sha256 {digest} is not cached here; stage it with POST {contract.AGENT_PREFETCH_PATH}")


@requires(Role.NODE_POD)
async def put_artifact(request: web.Request) -> web.Response:
    agent: Agent = request.app["agent"]
    caller: Caller = request["caller"]
    asked = request.match_info["key"]
    model_digest = plan_model_digest(asked)
    if model_digest is None:
        return _error(405, "only TensorRT plans (plan-… keys) can be uploaded; artifacts come from sources")
    try:
        expected = normalize_digest(request.headers.get(SHA256_HEADER, ""))
    except ValueError as err:
        return _error(400, f"header {SHA256_HEADER}: {err}")
    key = _plan_key(caller, asked)
    if not PLAN_KEY_RE.match(key):
        return _error(400, f"plan key {asked!r} is too long")
    existing = agent.cache.resolve(key)
    replacing = existing if existing is not None and _unattested_plan(agent, asked, existing) else None
    if existing is not None and replacing is None:
        return _error(409, f"a plan is already cached under {asked}; plans are never replaced",
                      uploadedBy=agent.cache.plan_uploader(key))
    if not agent.cache.has(model_digest):
        return _error(409, f"the model {model_digest} of this plan is not cached on this node: a plan is "
                           "accepted only for a model this node's agent delivered")
    uploader = f"{caller.namespace}/{caller.pod}"
    if agent._uploads >= agent.limits.download_workers:
        return _too_many("plan uploads in progress")
    agent._uploads += 1
    try:
        return await _store_plan(agent, request, key, asked, expected, uploader, replacing)
    finally:
        agent._uploads -= 1


def _unattested_plan(agent: Agent, asked: str, digest: str) -> bool:
    """A cached plan this agent's own key does not vouch for (kept before the agent had a key, or its attestation
    edited behind its back): pods that check plans refuse it and build their own, so the next upload replaces it
    rather than every pod of the node building again. Without a key, plans are written once, as ever."""
    if agent.plan_signer is None:
        return False
    verdict = own_plan_verdict(agent.plan_signer, asked, digest, agent.cache.attestation(digest))
    if verdict is None or verdict.ok:
        return False
    log.warning("plan %s (%s) is not attested by this node's key (%s: %s): an upload replaces it", asked, digest,
                verdict.reason.value, verdict.message)
    return True


async def _store_plan(agent: Agent, request: web.Request, key: str, asked: str, expected: str,
                      uploader: str, replacing: str | None = None) -> web.Response:
    with agent.cache.writer() as w:
        try:
            async with asyncio.timeout(agent.limits.download_deadline):  # a trickling upload ends too
                async for chunk in request.content.iter_chunked(CHUNK):
                    if w.size + len(chunk) > MAX_PLAN_BYTES:
                        return _error(413, f"plan larger than {MAX_PLAN_BYTES} bytes")
                    w.write(chunk)  # small local writes; fsync happens off the loop in commit
        except CacheFull as err:
            return _error(413, str(err), kind="too_large")
        except TimeoutError:
            return _error(408, "the plan upload took longer than the agent's --download-deadline")
        try:
            await asyncio.to_thread(agent.cache.commit, w, expected, plan_key=key, uploader=uploader,
                                    replacing=replacing)
        except DigestMismatch as err:
            agent.metrics.failures.labels("digest_mismatch").inc()
            return _error(422, str(err), kind="digest_mismatch")
        except PlanExists as err:
            return _error(409, str(err), uploadedBy=agent.cache.plan_uploader(key))
    agent.metrics.cache_bytes.set(agent.cache.total_bytes())
    log.info("stored plan %s (%s) uploaded by %s", key, expected, uploader)
    answer = {"key": asked, "sha256": expected, "uploadedBy": uploader}
    if agent.plan_signer is not None:  # which node built it, from which ONNX, with which TensorRT
        envelope = attest_plan(agent.plan_signer, asked, expected, agent.policy.node_name)
        if envelope is not None:
            await asyncio.to_thread(agent.cache.put_attestation, expected, envelope)
            answer["attestedBy"] = agent.plan_signer.key_id
    return web.json_response(answer, status=201)


@requires(Role.OPERATOR)  # it names every tenant's models: not for pods
async def list_artifacts(request: web.Request) -> web.Response:
    agent: Agent = request.app["agent"]
    return web.json_response({
        "artifacts": agent.cache.entries(), "totalBytes": agent.cache.total_bytes(),
        "maxBytes": agent.cache.max_bytes, "keepPerModel": agent.cache.keep_per_model,
    })


def _site_of(body: dict[str, Any]) -> tuple[str, Budget, tuple[str, ...]] | None:
    """The operator's site fields of a prefetch (None when it sent none); ValueError if malformed."""
    if "budget" not in body and "peers" not in body and "site" not in body:
        return None
    peers = body.get("peers") or []
    if not isinstance(peers, list) or not all(isinstance(p, str) and p for p in peers) or len(peers) > 8:
        raise ValueError("peers must be a list of at most 8 agent addresses")
    return str(body.get("site") or ""), Budget.from_wire(body.get("budget")), tuple(peers)


@requires(Role.NODE_POD, Role.OPERATOR, Role.PEER)
async def post_prefetch(request: web.Request) -> web.Response:
    agent: Agent = request.app["agent"]
    roles = agent.policy.roles(request["caller"])
    try:
        body = await request.json()
        uri = str(body["uri"])
        digest = normalize_digest(str(body["sha256"]))
        model = _model_key(agent, request["caller"], body.get("model") or None, body.get("namespace"))
        source = normalize_digest(str(body["sourceSha256"])) if body.get("sourceSha256") else ""
        site = _site_of(body) if Role.OPERATOR in roles else None  # only the operator says what the site is
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        return _error(400, f'want JSON {{"uri": …, "sha256": …, "model": …, "namespace": …}}: {err}')
    if site is not None:
        agent.configure_site(*site)
    location = f"{contract.AGENT_PREFETCH_PATH}/{digest}"
    if agent.cache.has(digest):
        try:
            agent.check_use(digest, source, staging=True)
        except TrustRefused as err:  # what is cached may not run: say why, like a failed fill
            return web.json_response({"sha256": digest, "state": "failed", "errorKind": err.kind,
                                      "error": str(err)}, headers={"Location": location})
        agent.cache.touch(digest, model or None)
        return web.json_response({"sha256": digest, "state": "ready"}, headers={"Location": location})
    refusal = source_allowed(uri, agent.file_root)
    if refusal:
        return _error(403, refusal, kind="refused")
    if agent.busy(digest):
        return _too_many("downloads queued")
    caller = request["caller"]
    # A peer's request is served from the source: peers never chain (and never loop).
    for_peer = roles == {Role.PEER}
    _background(request.app, agent.ensure(digest, uri, model or None, _caller_namespace(agent, caller), for_peer,
                                          source))
    await asyncio.sleep(0)  # let the job register, so the status below is not 404
    job = agent.jobs.get(digest)
    view = job.view(_sees(agent, caller, job)) if job else {"sha256": digest, "state": "queued"}
    return web.json_response(view, status=202, headers={"Location": location})


@requires(Role.NODE_POD, Role.OPERATOR, Role.PEER)
async def get_prefetch(request: web.Request) -> web.Response:
    agent: Agent = request.app["agent"]
    try:
        digest = normalize_digest(request.match_info["sha256"])
    except ValueError as err:
        return _error(400, str(err))
    job = agent.jobs.get(digest)
    if job is not None and (job.state != "ready" or agent.cache.has(digest)):  # ready: says where from
        return web.json_response(job.view(_sees(agent, request["caller"], job)))
    if agent.cache.has(digest):
        return web.json_response({"sha256": digest, "state": "ready"})
    return _error(404, f"no prefetch of {digest} and not cached", state="unknown")


@requires(Role.OPERATOR)
async def get_telemetry(request: web.Request) -> web.Response:
    """The node's power and temperature for canary analysis; a reading the hardware does not give is
    null with a reason, never a guess."""
    agent: Agent = request.app["agent"]
    reading = await asyncio.to_thread(agent.read_telemetry)
    return web.json_response({"node": agent.policy.node_name, **reading.to_json()})


async def healthz(request: web.Request) -> web.Response:
    agent: Agent = request.app["agent"]
    stuck = agent.stuck()
    if stuck:
        return web.json_response({"status": "stuck", "artifacts": agent.cache.count(),
                                  "stuckDownloads": [j.sha256 for j in stuck]}, status=503)
    return web.json_response({"status": "ok", "artifacts": agent.cache.count(), "bandwidth": _bandwidth(agent)})


def _bandwidth(agent: Agent) -> dict[str, Any]:
    """The budget in force and whether downloads wait for the daily cap (in /healthz and job views)."""
    limiter = agent.limiter
    return {"site": agent.site, **limiter.budget.to_wire(), "usedToday": limiter.used_today,
            "waitingUntil": _rfc3339(limiter.waiting_until), "peers": list(agent.peers)}


async def metrics(request: web.Request) -> web.Response:
    agent: Agent = request.app["agent"]
    agent.metrics.cache_bytes.set(agent.cache.total_bytes())
    budget, m = agent.limiter.budget, agent.metrics
    m.budget_rate.set(budget.bytes_per_second or 0)
    m.budget_daily.set(budget.daily_bytes or 0)
    m.daily_used.set(agent.limiter.used_today)
    m.cap_waiting.set(agent.limiter.waiting_until or 0)
    body = generate_latest(agent.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(agent: Agent, *, scrub_on_start: bool = True) -> web.Application:
    app = web.Application(client_max_size=1 << 16)  # JSON bodies; plan uploads are streamed
    app["agent"] = agent
    app["background"] = set()
    artifact = contract.AGENT_ARTIFACT_PATH
    app.router.add_get("/v1/artifacts", list_artifacts)
    app.router.add_get(artifact, get_artifact)
    app.router.add_put(artifact, put_artifact)
    app.router.add_post(contract.AGENT_PREFETCH_PATH, post_prefetch)
    app.router.add_get(contract.AGENT_PREFETCH_PATH + "/{sha256}", get_prefetch)
    app.router.add_get(contract.AGENT_ATTESTATION_PATH, get_attestation)
    app.router.add_get(contract.AGENT_TELEMETRY_PATH, get_telemetry)
    app.router.add_get(contract.AGENT_HEALTH_PATH, healthz)
    app.router.add_get("/metrics", metrics)

    async def flush_uses() -> None:
        while True:
            await asyncio.sleep(agent.limits.index_flush)
            await asyncio.to_thread(agent.cache.flush)

    async def sample_telemetry() -> None:
        while True:  # RAPL gives power only as a difference: keep a recent baseline for requests
            try:
                await asyncio.to_thread(agent.read_telemetry)
            except Exception:  # noqa: BLE001 - a sensor bug must not stop the cache; requests report it
                log.exception("reading power and temperature failed")
            await asyncio.sleep(agent.limits.telemetry_interval)

    async def start(app: web.Application) -> None:
        # Serve at once; blobs not yet re-hashed are verified on their first request instead.
        if scrub_on_start:
            _background(app, asyncio.to_thread(_scrub, agent))
        _background(app, flush_uses())
        _background(app, sample_telemetry())

    async def shutdown(app: web.Application) -> None:
        agent.stop()  # download threads see it on their next chunk and give up
        for task in list(app["background"]):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        agent.cache.flush()
        close = getattr(agent.verifier, "close", None)
        if close is not None:
            await close()

    app.on_startup.append(start)
    app.on_shutdown.append(shutdown)
    return app


def _scrub(agent: Agent) -> None:
    bad = agent.cache.scrub()
    if bad:
        log.warning("deleted %d cached blobs whose bytes no longer match their digest: %s", len(bad), bad)


@dataclass(frozen=True)
class Config:
    host: str
    port: int
    cache_dir: Path
    max_bytes: int | None
    keep_per_model: int
    max_models: int
    file_root: Path | None
    attempts: int
    timeout: float
    scrub_on_start: bool
    limits: Limits
    destinations: Destinations
    policy: Policy
    sysfs_root: Path = Path("/sys")
    peer_token_file: Path | None = None
    trust: NodeTrust | None = None  # the pinned attestation keys; None: digests only
    plan_signer: Signer | None = None  # this node's key for the plans it keeps; None: plans are not attested


def run(config: Config, verifier: Verifier) -> None:
    """Open the cache (dropping half-written files), then serve until SIGTERM/SIGINT."""
    c = config
    tracing.configure("edgewise-agent")  # only when OTEL_* asks for traces and OpenTelemetry is installed
    cache = NodeCache(c.cache_dir, max_bytes=c.max_bytes, keep_per_model=c.keep_per_model,
                      max_models=c.max_models)
    cache.evict()  # a smaller budget than last time applies at once
    agent = Agent(cache, verifier=verifier, policy=c.policy, destinations=c.destinations,
                  file_root=c.file_root, attempts=c.attempts, timeout=c.timeout, limits=c.limits,
                  telemetry=NodeTelemetry(c.sysfs_root), peer_token_file=c.peer_token_file, trust=c.trust,
                  plan_signer=c.plan_signer)
    log.info("agent of node %s on %s:%d, cache %s (%d bytes, budget %s), operator %s, allowed hosts %s",
             c.policy.node_name, c.host, c.port, c.cache_dir, cache.total_bytes(), c.max_bytes,
             sorted(c.policy.operator_users) or "(none)", sorted(c.destinations.allow_hosts) or "(none)")
    if c.trust is not None:
        log.info("artifacts must be attested by one of %d trusted key(s) %s%s", len(c.trust.keys),
                 [k[:16] for k in c.trust.keys.ids()], ", from signed sources" if c.trust.require_signed_source else "")
    web.run_app(build_app(agent, scrub_on_start=c.scrub_on_start), host=c.host, port=c.port,
                print=None, access_log=None)
