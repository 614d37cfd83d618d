"""Prometheus metrics under Triton's names, so one dashboard covers Triton and edgewise nodes.

Triton exposes its counters without the `_total` suffix that prometheus-client writes into
the HELP/TYPE lines of every counter, so the Triton families are rendered here, from
`ModelStats` at scrape time: names, types and labels (model, version) match Triton's, and
the hot path only bumps integers. The request latency histogram has no Triton equivalent
and gets its own name (contract.LATENCY_HISTOGRAM); it and the process metrics (RSS, CPU)
come from prometheus-client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from edgewise import contract
from edgewise.node.serve.stats import LATENCY_BUCKETS_S, ModelStats

LABELS = ("model", "version")

# (Triton metric name, help text, how to read it from ModelStats)
_COUNTERS: tuple[tuple[str, str, Callable[[ModelStats], int]], ...] = (
    ("nv_inference_request_success", "Number of successful inference requests, all batch sizes",
     lambda s: s.success.count),
    ("nv_inference_request_failure", "Number of failed inference requests, all batch sizes",
     lambda s: s.fail.count),
    ("nv_inference_count", "Number of inferences performed (does not include cached requests)",
     lambda s: s.inference_count),
    ("nv_inference_exec_count", "Number of model executions performed (does not include cached requests)",
     lambda s: s.execution_count),
    ("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds",
     lambda s: (s.success.ns + s.fail.ns) // 1000),
    ("nv_inference_queue_duration_us", "Cumulative inference queuing duration in microseconds",
     lambda s: s.queue.ns // 1000),
    ("nv_inference_compute_input_duration_us", "Cumulative compute input duration in microseconds",
     lambda s: s.compute_input.ns // 1000),
    ("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in microseconds",
     lambda s: s.compute_infer.ns // 1000),
    ("nv_inference_compute_output_duration_us",
     "Cumulative inference compute output duration in microseconds",
     lambda s: s.compute_output.ns // 1000),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def triton_text(name: str, version: str, stats: ModelStats) -> str:
    """The nv_inference_* families in Prometheus text format, as Triton writes them."""
    labels = f'{{model="{_label(name)}",version="{_label(version)}"}}'
    lines = []
    for metric, doc, read in _COUNTERS:
        lines += [f"# HELP {metric} {doc}", f"# TYPE {metric} counter", f"{metric}{labels} {read(stats)}"]
    pending = "nv_inference_pending_request_count"
    lines += [f"# HELP {pending} Instantaneous number of pending requests awaiting execution per-model.",
              f"# TYPE {pending} gauge", f"{pending}{labels} {stats.pending}"]
    return "\n".join(lines) + "\n"


class HistogramCollector(Collector):
    """The latency histogram of the served model, read from `ModelStats` at each scrape."""

    def __init__(self, current: Callable[[], tuple[str, str, ModelStats] | None]) -> None:
        self._current = current

    def collect(self) -> Iterator[Metric]:
        found = self._current()
        if found is not None:  # still loading: no per-model series yet, as in Triton
            yield _histogram([found[0], found[1]], found[2])


def _histogram(labels: list[str], stats: ModelStats) -> Metric:
    h = HistogramMetricFamily(
        contract.LATENCY_HISTOGRAM,
        "Latency of successful inference requests in seconds, arrival to response.", labels=LABELS)
    cumulative, buckets = 0, []
    for bound, count in zip((*LATENCY_BUCKETS_S, float("inf")), stats.latency_buckets, strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    h.add_metric(labels, buckets, stats.success.ns / 1e9)
    return h


def metrics_app(current: Callable[[], tuple[str, str, ModelStats] | None]) -> web.Application:
    """Triton serves metrics at /metrics on port 8002; so does this."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(HistogramCollector(current))
    ProcessCollector(registry=reg)

    async def handler(request: web.Request) -> web.Response:
        found = current()
        triton = triton_text(*found).encode() if found is not None else b""
        body = triton + generate_latest(reg)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handler)
    return app
