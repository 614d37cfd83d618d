"""The operator's liveness: is the work loop doing its work? Pure; kopf's probe (handlers.py) serves it.

kopf's own liveness endpoint only proves the event loop answers HTTP. The reconciles run in worker
threads, so the loop can answer while every worker hangs on a call that never returns, or while
keys wait forever: that operator looks alive and does nothing. This judges what matters: each
worker task is running, none has been on one key past a limit, and no queued key has waited past
a limit. A restart (liveness) is the remedy for all three; the queue and status survive it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WorkerState:
    index: int
    alive: bool  # its task has not ended
    key: str | None  # the key it reconciles now, or None when idle
    busy_seconds: float  # how long it has been on that key
    error: str = ""  # why its task ended, if it raised


@dataclass(frozen=True)
class Work:
    workers: tuple[WorkerState, ...]
    queued: int
    oldest_queued_seconds: float


@dataclass(frozen=True)
class Limits:
    max_reconcile_seconds: float  # one key longer than this: the worker is stuck
    max_queue_age_seconds: float  # a key waiting longer than this: the loop does not keep up, or is stuck


@dataclass(frozen=True)
class Health:
    problems: tuple[str, ...]
    report: dict[str, Any]  # what the probe answers, healthy or not

    @property
    def healthy(self) -> bool:
        return not self.problems


def judge(work: Work, limits: Limits) -> Health:
    problems = []
    if not work.workers:
        problems.append("no worker is running")
    for w in work.workers:
        if not w.alive:
            problems.append(f"worker {w.index} stopped{': ' + w.error if w.error else ''}")
        elif w.key is not None and w.busy_seconds > limits.max_reconcile_seconds:
            problems.append(f"worker {w.index} stuck on {w.key} for {w.busy_seconds:.0f}s "
                            f"(limit {limits.max_reconcile_seconds:.0f}s)")
    if work.oldest_queued_seconds > limits.max_queue_age_seconds:
        problems.append(f"the oldest of {work.queued} queued key(s) has waited {work.oldest_queued_seconds:.0f}s "
                        f"(limit {limits.max_queue_age_seconds:.0f}s)")
    report = {
        "healthy": not problems,
        "problems": problems,
        "workers": [{"index": w.index, "alive": w.alive, "key": w.key,
                     "busySeconds": round(w.busy_seconds, 1) if w.key is not None else 0.0} for w in work.workers],
        "queued": work.queued,
        "oldestQueuedSeconds": round(work.oldest_queued_seconds, 1),
    }
    return Health(problems=tuple(problems), report=report)
