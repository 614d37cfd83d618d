"""The work loop: keys in, reconciles out, with retries, resync and write accounting."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edgewise.controller.health import Work, WorkerState
from edgewise.controller.metrics import OperatorMetrics
from edgewise.controller.queue import WorkQueue
from edgewise.controller.reconcile import Reconciler

log = logging.getLogger("edgewise.controller")

MAX_BACKOFF = 300.0


@dataclass(frozen=True)
class ModelKey:
    namespace: str
    name: str


@dataclass(frozen=True)
class ProfileKey:
    namespace: str
    name: str


ALL = "all-models-and-profiles"  # nodes changed, or periodic resync
AGENT = "node-agent"


class Controller:
    def __init__(self, reconciler: Reconciler, namespaces: Iterable[str] | None = None,
                 metrics: OperatorMetrics | None = None) -> None:
        self.reconciler = reconciler
        self.namespaces = list(namespaces or [])
        self.queue = WorkQueue()
        self.failures: Counter[Hashable] = Counter()
        self._nodes: dict[str, object] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._busy: dict[int, tuple[Hashable, float]] = {}  # worker → (key, monotonic start)
        self.metrics = metrics or OperatorMetrics()
        self.metrics.watch_queue(self.queue.queued, self.queue.oldest_queued_seconds)

    # -- what handlers call (in the event loop) ------------------------------------------------------

    def model_changed(self, namespace: str, name: str) -> None:
        self.queue.add(ModelKey(namespace, name))

    def profile_changed(self, namespace: str, name: str) -> None:
        self.queue.add(ProfileKey(namespace, name))

    def node_changed(self, event_type: str | None, name: str, labels: Mapping[str, str],
                     taints: list[Any]) -> None:
        """Re-plan everything when a node appears, disappears, or its labels or taints change.

        Status-only updates (heartbeats, conditions) are ignored: they arrive all
        the time from every node and change no classification.
        """
        if event_type == "DELETED":
            if self._nodes.pop(name, None) is not None:
                self.queue.add(ALL)
            return
        signature = (tuple(sorted(labels.items())), repr(taints))
        if self._nodes.get(name) != signature:
            self._nodes[name] = signature
            self.queue.add(ALL)

    def agent_changed(self) -> None:
        self.queue.add(AGENT)

    # -- the loops ---------------------------------------------------------------------------------

    async def run(self, workers: int, resync_seconds: float) -> None:
        self._workers = [asyncio.create_task(self._worker(i)) for i in range(workers)]
        tasks = [*self._workers]
        tasks.append(asyncio.create_task(self._resync(resync_seconds)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            self.queue.close()

    async def _resync(self, interval: float) -> None:
        while True:
            self.queue.add(AGENT)
            self.queue.add(ALL)
            await asyncio.sleep(interval)

    async def _worker(self, index: int) -> None:
        while True:
            key = await self.queue.get()
            self._busy[index] = (key, time.monotonic())
            requeue: float | None = None
            follow: list[Hashable] = []
            kind, started = _kind(key), time.monotonic()
            try:
                requeue, follow = await asyncio.to_thread(self._handle, key)
                self.failures.pop(key, None)
            except Exception as err:  # noqa: BLE001 - one bad object must not stop the operator
                self.metrics.reconcile_errors.labels(kind).inc()
                self.failures[key] += 1
                requeue = min(2.0 ** self.failures[key], MAX_BACKOFF)
                log.warning("reconciling %s failed (attempt %d, retry in %.0fs): %s", key,
                            self.failures[key], requeue, err, exc_info=log.isEnabledFor(logging.DEBUG))
            finally:
                self._busy.pop(index, None)
                self.queue.done(key)
                self.metrics.reconcile_seconds.labels(kind).observe(time.monotonic() - started)
            for k in follow:
                self.queue.add(k)
            if requeue is not None:
                self.queue.add_after(key, requeue)
            if self.queue.pending() == 0:
                totals = self.reconciler.totals
                log.info("queue drained: writes since start=%d %s",
                         sum(n for v, n in totals.items() if v != "event"), dict(totals))

    def work(self) -> Work:
        """What the liveness probe judges (controller/health.py): each worker, and the queue's oldest key."""
        now = time.monotonic()
        workers = []
        for index, task in enumerate(self._workers):
            key, since = self._busy.get(index, (None, now))
            stopped = task.done() and not task.cancelled() and task.exception() is not None
            workers.append(WorkerState(index=index, alive=not task.done(), key=None if key is None else str(key),
                                       busy_seconds=now - since,
                                       error=repr(task.exception()) if stopped else ""))
        return Work(workers=tuple(workers), queued=self.queue.queued(),
                    oldest_queued_seconds=self.queue.oldest_queued_seconds())

    def _handle(self, key: Hashable) -> tuple[float | None, list[Hashable]]:
        """Blocking work for one key (in a thread): (retry after, keys to queue next)."""
        r = self.reconciler
        if isinstance(key, ModelKey):
            return r.model(key.namespace, key.name), []
        if isinstance(key, ProfileKey):
            return None, [ModelKey(key.namespace, m) for m in r.profile(key.namespace, key.name)]
        if key == AGENT:
            r.agent()
            return None, []
        if key == ALL:
            r.buckets()
            follow: list[Hashable] = []
            scopes: list[str | None] = [*self.namespaces] or [None]
            for ns in scopes:
                follow += [ModelKey(m.metadata.namespace, m.metadata.name) for m in r.read.models(ns)]
                follow += [ProfileKey(p.metadata.namespace, p.metadata.name) for p in r.read.profiles(ns)]
            return None, follow
        raise ValueError(f"unknown key {key!r}")


def _kind(key: Hashable) -> str:
    """The metrics' label for a key: model, profile, or the key itself (node-agent, all-models-and-profiles)."""
    if isinstance(key, ModelKey):
        return "model"
    if isinstance(key, ProfileKey):
        return "profile"
    return str(key)
