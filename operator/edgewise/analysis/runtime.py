"""The `runtime` analysis provider (the default): reads the pods themselves, needs no Prometheus.

Per interval and class it samples at most `sample_size` canary and as many stable pods
(rendezvous hashing, so the same pods are read each interval), reads them concurrently
under a bounded semaphore — Triton's statistics extension with tritonclient, and the
:8002 metrics for the latency histogram, resident memory and process start time — and
turns the difference with the previous reading of the same pod into rates and latencies.

Previous readings live in memory only: after an operator restart the first reading of a
pod is a new baseline, and a class whose canary pods were all just baselined is
inconclusive for one interval. Pods on NotReady nodes are deferred without being
contacted; pods that do not answer in time are deferred too: neither passes nor fails.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import tritonclient.http.aio as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from edgewise import contract
from edgewise.analysis.golden import GoldenChecker
from edgewise.analysis.provider import AnalysisTarget, PodEndpoint
from edgewise.core.analysis import (
    DeferredPod,
    Measurement,
    PodDelta,
    PodSample,
    aggregate,
    delta,
    sample,
)

RSS_METRIC = "process_resident_memory_bytes"
START_METRIC = "process_start_time_seconds"


@dataclass(frozen=True)
class MetricsReading:
    """What the :8002 scrape adds to the statistics: histogram, memory, process start."""

    latency_buckets: tuple[tuple[float, float], ...] = ()
    memory_bytes: float | None = None
    start_time: float | None = None


def parse_metrics(text: str, model_name: str) -> MetricsReading:
    """The parts of a Prometheus exposition the analysis uses (pure, for tests).

    Histogram buckets of `contract.LATENCY_HISTOGRAM` are summed over the model's
    versions (a pod serves one, but a reload may briefly show two).
    """
    buckets: dict[float, float] = {}
    memory = start = None
    for family in text_string_to_metric_families(text):
        if family.name == contract.LATENCY_HISTOGRAM:
            for s in family.samples:
                if s.name.endswith("_bucket") and s.labels.get("model", model_name) == model_name:
                    bound = float(s.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + s.value
        elif family.name == RSS_METRIC and family.samples:
            memory = family.samples[0].value
        elif family.name == START_METRIC and family.samples:
            start = family.samples[0].value
    return MetricsReading(tuple(sorted(buckets.items())), memory, start)


def stats_counters(stats: dict, model_name: str) -> dict[str, float]:
    """Cumulative counters from Triton's statistics JSON, summed over the model's versions."""
    out = {"success": 0.0, "failure": 0.0, "inference_count": 0.0, "exec_count": 0.0,
           "request_duration_us": 0.0}
    entries = [e for e in stats.get("model_stats", []) if e.get("name") == model_name]
    if not entries:
        raise LookupError(f"model {model_name!r} not in the statistics")
    for e in entries:
        inf = e.get("inference_stats", {})
        ok, fail = inf.get("success", {}), inf.get("fail", {})
        out["success"] += ok.get("count", 0)
        out["failure"] += fail.get("count", 0)
        out["inference_count"] += e.get("inference_count", 0)
        out["exec_count"] += e.get("execution_count", 0)
        out["request_duration_us"] += (ok.get("ns", 0) + fail.get("ns", 0)) / 1000
    return out


class RuntimeProvider:
    """Reads Triton-protocol statistics and metrics from a bounded sample of pods."""

    name = "runtime"

    def __init__(self, concurrency: int = 8, timeout_s: float = 5.0, golden: GoldenChecker | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.golden = golden or GoldenChecker(timeout_s=timeout_s * 2)
        self._clock = clock
        self._last: dict[tuple[str, str], PodSample] = {}  # (target.key, pod uid) -> last reading

    async def measure(self, target: AnalysisTarget) -> Measurement:
        deferred = [DeferredPod(p.name, f"node {p.node or '?'} NotReady", canary=True)
                    for p in target.canary if not p.node_ready]
        deferred += [DeferredPod(p.name, f"node {p.node or '?'} NotReady", canary=False)
                     for p in target.stable if not p.node_ready]
        canary = sample([p for p in target.canary if p.node_ready], target.sample_size,
                        f"{target.key}/canary", key=_uid)
        stable = sample([p for p in target.stable if p.node_ready], target.sample_size,
                        f"{target.key}/stable", key=_uid)

        sem = asyncio.Semaphore(self.concurrency)  # per class: the operator measures classes one at a time
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as session:
            readings = await asyncio.gather(*(self._read(sem, session, p, target.model_name)
                                              for p in (*canary, *stable)))

        canary_deltas: list[PodDelta] = []
        stable_deltas: list[PodDelta] = []
        baselined: list[str] = []
        answered: list[PodEndpoint] = []
        for i, (pod, reading) in enumerate(zip((*canary, *stable), readings, strict=True)):
            is_canary = i < len(canary)
            if isinstance(reading, str):
                deferred.append(DeferredPod(pod.name, f"no answer: {reading}", canary=is_canary))
                continue
            if is_canary:
                answered.append(pod)
            prev = self._last.get((target.key, pod.uid))
            self._last[(target.key, pod.uid)] = reading
            if prev is None:
                if is_canary:
                    baselined.append(pod.name)
                continue
            (canary_deltas if is_canary else stable_deltas).append(delta(prev, reading))
        self._forget_gone(target)

        golden = None
        if target.golden is not None:
            # Pods that just answered first: the likeliest to answer again.
            order = answered + [p for p in canary if p not in answered]
            golden = await self.golden.check(target.golden, target.model_name, order, stable)

        return Measurement(
            canary=aggregate(canary_deltas, [p.health() for p in target.canary]),
            stable=aggregate(stable_deltas, [p.health() for p in target.stable]),
            golden=golden,
            deferred=tuple(deferred),
            baselined=tuple(baselined),
            provider=self.name,
            seconds=max((d.seconds for d in canary_deltas), default=None),
        )

    def _forget_gone(self, target: AnalysisTarget) -> None:
        """Drop readings of pods no longer in the class, so memory follows the fleet, not its history."""
        present = {p.uid for p in (*target.canary, *target.stable)}
        for key in [k for k in self._last if k[0] == target.key and k[1] not in present]:
            del self._last[key]

    async def _read(self, sem: asyncio.Semaphore, session: aiohttp.ClientSession, pod: PodEndpoint,
                    model_name: str) -> PodSample | str:
        """One pod's counters, or why it did not answer (a string: the pod is deferred)."""
        async with sem:
            try:
                async with asyncio.timeout(self.timeout_s):
                    stats, metrics = await asyncio.gather(
                        self._stats(pod, model_name), self._metrics(session, pod, model_name),
                        return_exceptions=True)
            except TimeoutError:
                return f"timed out after {self.timeout_s:g}s"
            at = self._clock()
        if isinstance(stats, BaseException):
            return _describe(stats)
        # The statistics are required; the metrics only add latency detail and memory.
        m = metrics if isinstance(metrics, MetricsReading) else MetricsReading()
        return PodSample(pod=pod.name, uid=pod.uid, at=at, **stats, latency_buckets=m.latency_buckets,
                         restarts=pod.restarts, ready=pod.ready, memory_bytes=m.memory_bytes,
                         start_time=m.start_time)

    async def _stats(self, pod: PodEndpoint, model_name: str) -> dict[str, float]:
        async with httpclient.InferenceServerClient(pod.http_url, conn_timeout=self.timeout_s) as client:
            return stats_counters(await client.get_inference_statistics(model_name), model_name)

    async def _metrics(self, session: aiohttp.ClientSession, pod: PodEndpoint,
                       model_name: str) -> MetricsReading:
        async with session.get(pod.metrics_url) as resp:
            resp.raise_for_status()
            return parse_metrics(await resp.text(), model_name)


def _uid(pod: PodEndpoint) -> str:
    return pod.uid


def _describe(err: BaseException) -> str:
    if isinstance(err, InferenceServerException):
        return f"{err.message()} (status {err.status()})"
    return f"{type(err).__name__}: {err}".rstrip(": ")

