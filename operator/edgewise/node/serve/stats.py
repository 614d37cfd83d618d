"""Per-model counters in the shape of Triton's statistics extension.

One `ModelStats` is the single source of truth: the statistics endpoints (HTTP JSON,
gRPC `ModelStatisticsResponse`) render it with `to_triton`, and the Prometheus collector
reads the same counters, so the two views never disagree. All updates happen on the
event loop thread, so no lock is needed.

Semantics follow Triton: `inference_count` counts inferences (a batch-4 request counts
4), `execution_count` counts model executions (a merged batch counts 1); queue and
compute durations are added per request, so a request merged into a batch is charged
the whole batch's compute time, as Triton does.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from typing import Any

# Upper bounds (seconds) of the request latency histogram; edge models answer in ms.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def to_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(frozen=True)
class ExecutionTimes:
    """What one model execution (a batch) cost, measured on the worker thread."""

    batch_size: int
    compute_input_ns: int
    compute_infer_ns: int
    compute_output_ns: int


@dataclass
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class ModelStats:
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    pending: int = 0  # requests waiting in the queue, not yet executing
    batches: dict[int, BatchStats] = field(default_factory=dict)
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))

    def record_execution(self, times: ExecutionTimes) -> None:
        self.execution_count += 1
        self.inference_count += times.batch_size
        b = self.batches.setdefault(times.batch_size, BatchStats())
        b.compute_input.add(times.compute_input_ns)
        b.compute_infer.add(times.compute_infer_ns)
        b.compute_output.add(times.compute_output_ns)

    def record_request_compute(self, queue_ns: int, times: ExecutionTimes) -> None:
        """Charge one request its queue time and its batch's compute times."""
        self.queue.add(queue_ns)
        self.compute_input.add(times.compute_input_ns)
        self.compute_infer.add(times.compute_infer_ns)
        self.compute_output.add(times.compute_output_ns)

    def record_request(self, ok: bool, duration_ns: int) -> None:
        (self.success if ok else self.fail).add(duration_ns)
        if ok:
            self.last_inference_ms = int(time.time() * 1000)
            self.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS_S, duration_ns / 1e9)] += 1

    def to_triton(self, name: str, version: str) -> dict[str, Any]:
        """One entry of Triton's `model_stats` list (HTTP JSON; also parsed into gRPC)."""
        zero = Duration().to_dict()
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.to_dict(),
                "fail": self.fail.to_dict(),
                "queue": self.queue.to_dict(),
                "compute_input": self.compute_input.to_dict(),
                "compute_infer": self.compute_infer.to_dict(),
                "compute_output": self.compute_output.to_dict(),
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": b.compute_input.to_dict(),
                    "compute_infer": b.compute_infer.to_dict(),
                    "compute_output": b.compute_output.to_dict(),
                }
                for size, b in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }
