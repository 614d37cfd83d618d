"""The operator's work probe: stuck workers, dead workers and old queued keys make it unhealthy."""

from __future__ import annotations

import asyncio

from edgewise.api.settings import OperatorSettings
from edgewise.controller.health import Limits, Work, WorkerState, judge
from edgewise.controller.queue import WorkQueue

LIMITS = Limits(max_reconcile_seconds=60, max_queue_age_seconds=120)


def idle(index: int) -> WorkerState:
    return WorkerState(index=index, alive=True, key=None, busy_seconds=0)


def test_idle_workers_and_an_empty_queue_are_healthy_and_say_so() -> None:
    health = judge(Work(workers=(idle(0), idle(1)), queued=0, oldest_queued_seconds=0), LIMITS)
    assert health.healthy and health.report["healthy"] is True
    assert health.report["workers"] == [{"index": 0, "alive": True, "key": None, "busySeconds": 0.0},
                                        {"index": 1, "alive": True, "key": None, "busySeconds": 0.0}]


def test_a_worker_on_one_key_past_the_limit_is_stuck() -> None:
    busy = WorkerState(index=1, alive=True, key="ModelKey(namespace='a', name='m')", busy_seconds=61)
    health = judge(Work(workers=(idle(0), busy), queued=0, oldest_queued_seconds=0), LIMITS)
    assert not health.healthy
    assert health.problems == ("worker 1 stuck on ModelKey(namespace='a', name='m') for 61s (limit 60s)",)
    within = WorkerState(index=1, alive=True, key="k", busy_seconds=59)
    assert judge(Work(workers=(within,), queued=0, oldest_queued_seconds=0), LIMITS).healthy


def test_a_worker_whose_task_ended_is_dead_and_the_error_is_named() -> None:
    dead = WorkerState(index=0, alive=False, key=None, busy_seconds=0, error="RuntimeError('boom')")
    health = judge(Work(workers=(dead, idle(1)), queued=0, oldest_queued_seconds=0), LIMITS)
    assert health.problems == ("worker 0 stopped: RuntimeError('boom')",)


def test_a_key_waiting_past_the_limit_is_unhealthy_and_none_at_all_too() -> None:
    old = judge(Work(workers=(idle(0),), queued=3, oldest_queued_seconds=121), LIMITS)
    assert old.problems == ("the oldest of 3 queued key(s) has waited 121s (limit 120s)",)
    assert old.report["oldestQueuedSeconds"] == 121 and old.report["queued"] == 3
    assert judge(Work(workers=(), queued=0, oldest_queued_seconds=0), LIMITS).problems == ("no worker is running",)


def test_the_queue_ages_only_keys_that_wait_for_a_worker() -> None:
    now = [100.0]

    async def go() -> None:
        q = WorkQueue(clock=lambda: now[0])
        assert q.oldest_queued_seconds() == 0.0
        q.add("a")
        now[0] = 105.0
        q.add("b")
        q.add("a")  # coalesced: keeps its first time
        now[0] = 110.0
        assert (q.queued(), q.oldest_queued_seconds()) == (2, 10.0)
        assert await q.get() == "a"  # taken by a worker: no longer waiting
        assert (q.queued(), q.oldest_queued_seconds()) == (1, 5.0)
        q.add("a")  # re-added while processed: waits again, from now
        now[0] = 112.0
        assert q.oldest_queued_seconds() == 7.0
        await q.get()
        q.done("a")
        await q.get()
        assert (q.queued(), q.oldest_queued_seconds()) == (0, 0.0)

    asyncio.run(go())


def test_the_limits_are_settings_with_defaults() -> None:
    s = OperatorSettings.from_env({"EDGEWISE_PROBE_MAX_RECONCILE_SECONDS": "30"})
    assert (s.probe_max_reconcile_seconds, s.probe_max_queue_age_seconds) == (30, 600)
