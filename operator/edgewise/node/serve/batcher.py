"""Dynamic batching: queue requests, merge compatible ones along dim 0, run them off the loop.

Model executions run on a thread pool with `instances` workers (ONNX Runtime releases
the GIL), so the event loop keeps parsing requests while the model computes. While every
instance is busy, new requests wait in the queue; when one frees up the collector takes
as many compatible queued requests as fit in `max_batch_size`, waiting at most
`max_queue_delay_us` (counted from the oldest request's arrival, as Triton does) for
more to arrive. With `max_batch_size == 0` each request runs alone.

A request that finds the server idle (one instance, nothing queued or running, no other
request seen for a while) and a model that answers in a few milliseconds runs right on
the event loop: no thread handoff, no wake-ups, the answer written in the same callback.
On a small CPU those hops cost a tenth of a MiniLM inference. As soon as requests overlap,
everything goes through the queue and the pool again, where batching can merge them.

Requests are compatible when every input has the same dtype and the same dims after
dim 0 (e.g. the same sequence length). If a merged batch fails, each of its requests is
retried alone, so one bad request cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from edgewise.node.serve.errors import InferError, Status
from edgewise.node.serve.stats import ExecutionTimes, ModelStats

log = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]
RunFn = Callable[[Mapping[str, np.ndarray], list[str] | None], Outputs]
Reply = Callable[[Outputs | BaseException], None]

# Running on the event loop blocks it: only for models this quick (the last execution), so
# health probes and metric scrapes never wait long behind one.
INLINE_MAX_S = 0.02
# After requests overlapped, keep using the queue this long: under steady load an idle
# moment is a gap between batches, not the start of single-request traffic.
OVERLAP_MEMORY_S = 0.5
_ANONYMOUS = object()  # a request run on the loop without a client identity


@dataclass
class _Job:
    inputs: Mapping[str, np.ndarray]
    batch: int
    outputs: list[str] | None
    reply: Reply  # called once, on the event loop thread, with the outputs or the error
    enqueued_ns: int  # perf_counter_ns, comparable across threads
    deadline: float  # loop.time() by which the collector stops waiting for company
    cancelled: bool = False

    @cached_property
    def key(self) -> Hashable:
        """What must agree for two requests to merge; only looked at when there are two."""
        return tuple(sorted((n, a.dtype.str, a.shape[1:]) for n, a in self.inputs.items()))

    def cancel(self) -> None:
        """The client is gone: skip the request if it is still queued, drop its answer otherwise."""
        self.cancelled = True


@dataclass
class _Outcome:
    result: Outputs | BaseException
    queue_ns: int
    times: ExecutionTimes


# Per request outcomes, and the executions (batches) that ran, for the statistics.
_Executed = tuple[list[_Outcome], list[ExecutionTimes]]


class Batcher:
    def __init__(
        self, run: RunFn, stats: ModelStats, max_batch_size: int = 0, max_queue_delay_us: int = 0,
        instances: int = 1,
    ) -> None:
        self._run = run
        self._stats = stats
        self._max_batch = max(0, max_batch_size)
        self._delay_s = max(0, max_queue_delay_us) / 1e6
        self._executor = ThreadPoolExecutor(max(1, instances), thread_name_prefix="edgewise-infer")
        self._instances = max(1, instances)
        self._free = self._instances  # instances not executing a batch
        self._last_run_s = float("inf")  # wall time of the last execution; unknown at first
        self._overlap_at = float("-inf")  # loop.time() when requests last overlapped
        self._after_inline: object = None  # the client whose request just ran on the loop
        self._freed = asyncio.Event()
        self._queue: deque[_Job] = deque()
        self._queued_items = 0  # sum of batch sizes waiting, to know when a batch is full
        self._arrived = asyncio.Event()
        self._inflight: set[Future[_Executed]] = set()
        self._closing = False
        self._draining = False  # still taking requests, but none waits for company
        self._collector: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._collector = asyncio.get_running_loop().create_task(self._collect(), name="edgewise-batcher")

    def submit(self, inputs: Mapping[str, np.ndarray], batch: int, outputs: list[str] | None,
               reply: Reply, client: object = None) -> _Job:
        """Queue one validated request; `reply` gets its outputs (all, or `outputs`) or its error.

        When the request runs on the loop, `reply` is called before this returns. `client`
        (a connection) tells a client's next request from others that waited meanwhile.
        """
        if self._closing:
            raise InferError(Status.UNAVAILABLE, "server is shutting down; retry on another replica")
        loop = asyncio.get_running_loop()
        now = loop.time()
        job = _Job(inputs, batch, outputs, reply, time.perf_counter_ns(), now + self._delay_s)
        # Waited behind a run on the loop: queue it with the others that did, to merge them.
        waited = self._after_inline not in (None, client)
        if waited or self._queue or self._free < self._instances:
            self._overlap_at = now
        if not waited and not self._queue and self._free > 0 and (
                self._max_batch == 0 or self._delay_s == 0 or batch >= self._max_batch):
            # Nothing to wait for and an instance is free: skip the collector's hop, and the
            # pool's too when the server has been answering one request at a time.
            if self._inline_ok(now):
                self._run_inline(loop, job, client)
            else:
                self._dispatch(loop, [job])
            return job
        self._queue.append(job)
        self._queued_items += batch
        self._stats.pending += 1
        self._arrived.set()
        return job

    def _inline_ok(self, now: float) -> bool:
        return (self._instances == 1 and self._last_run_s <= INLINE_MAX_S
                and now - self._overlap_at > OVERLAP_MEMORY_S)

    def _run_inline(self, loop: asyncio.AbstractEventLoop, job: _Job, client: object) -> None:
        executed = self._execute([job])  # the loop waits: nothing can look at the instance meanwhile
        # Other clients' requests that arrived meanwhile were waiting: they are read in the
        # loop's next pass and count as overlapping (the same client's next request does not:
        # it was sent after this answer). Two passes on, this is cleared.
        self._after_inline = client if client is not None else _ANONYMOUS
        loop.call_soon(loop.call_soon, self._clear_after_inline)
        self._deliver([job], executed)

    def _clear_after_inline(self) -> None:
        self._after_inline = None

    def drain(self) -> None:
        """Shutting down: keep taking requests (bodies still arriving finish), but run what is
        queued at once instead of waiting for a batch to fill."""
        self._draining = True
        self._arrived.set()

    async def close(self) -> None:
        """Stop taking requests, run everything queued now (no more waiting), then stop the pool."""
        self._closing = True
        self._arrived.set()
        if self._collector is not None:
            await self._collector
        if self._inflight:
            await asyncio.gather(*(asyncio.wrap_future(f) for f in self._inflight), return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def _collect(self) -> None:
        """Wait for requests, then for company (up to the delay), then for a free instance.

        Requests keep queueing while every instance is busy, so the batch taken when
        one frees up holds all that fit: under load batches grow even with no delay.
        """
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
            await self._wait_for_company(loop)
            while self._free == 0:
                self._freed.clear()
                await self._freed.wait()
            jobs = self._take()
            if jobs:  # else every queued request was cancelled by its client
                self._dispatch(loop, jobs)

    def _dispatch(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job]) -> None:
        """Run a batch on a free instance; _finish frees it.

        The worker schedules _finish itself: one pass of the loop after the batch is done,
        where an asyncio future wrapped around the pool's would take two.
        """
        self._free -= 1
        done = self._executor.submit(self._execute, jobs)
        self._inflight.add(done)
        done.add_done_callback(lambda fut: loop.call_soon_threadsafe(self._finish, loop, jobs, fut))

    def _batch_due(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether the oldest queued request should leave now: no batching, a full batch, its
        delay over (at once with no delay), or closing. With nothing queued nothing waits."""
        return (not self._queue or self._closing or self._draining or self._max_batch == 0
                or self._queued_items >= self._max_batch or loop.time() >= self._queue[0].deadline)

    async def _wait_for_company(self, loop: asyncio.AbstractEventLoop) -> None:
        while not self._batch_due(loop):
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), self._queue[0].deadline - loop.time())
            except TimeoutError:
                return

    def _take(self) -> list[_Job]:
        """Pop the oldest live request and every compatible one that still fits the batch."""
        taken: list[_Job] = []
        kept: deque[_Job] = deque()
        total = 0
        while self._queue:
            job = self._queue.popleft()
            if job.cancelled:  # by its client, while queued
                self._dequeued(job)
                continue
            if not taken or (
                job.key == taken[0].key and total + job.batch <= self._max_batch
            ):
                taken.append(job)
                total += job.batch
                self._dequeued(job)
                if self._max_batch == 0 or total >= self._max_batch:
                    break
            else:
                kept.append(job)
        kept.extend(self._queue)
        self._queue = kept
        return taken

    def _dequeued(self, job: _Job) -> None:
        self._queued_items -= job.batch
        self._stats.pending -= 1

    def _execute(self, jobs: list[_Job]) -> _Executed:
        """Worker thread: merge, run, split. Falls back to one run per request on failure."""
        if len(jobs) > 1:
            try:
                return self._execute_merged(jobs)
            except Exception:  # noqa: BLE001 - isolate the bad request below
                pass
        outcomes: list[_Outcome] = []
        executions: list[ExecutionTimes] = []
        for job in jobs:
            start = time.perf_counter_ns()
            try:
                result: Outputs | BaseException = self._run(job.inputs, job.outputs)
            except Exception as err:  # noqa: BLE001 - handed to the waiting request
                result = err
            end = time.perf_counter_ns()
            self._last_run_s = (end - start) / 1e9
            times = ExecutionTimes(job.batch, 0, end - start, 0)
            outcomes.append(_Outcome(result, start - job.enqueued_ns, times))
            if not isinstance(result, BaseException):
                executions.append(times)
        return outcomes, executions

    def _execute_merged(self, jobs: list[_Job]) -> _Executed:
        t0 = time.perf_counter_ns()
        feed = {name: np.concatenate([j.inputs[name] for j in jobs]) for name in jobs[0].inputs}
        wanted = None
        if all(j.outputs is not None for j in jobs):
            wanted = sorted({n for j in jobs for n in j.outputs or ()})
        t1 = time.perf_counter_ns()
        merged = self._run(feed, wanted)
        t2 = time.perf_counter_ns()
        self._last_run_s = (t2 - t1) / 1e9
        total = sum(j.batch for j in jobs)
        for name, value in merged.items():
            if value.ndim == 0 or value.shape[0] != total:
                raise InferError(Status.INTERNAL, f"output '{name}' has shape {list(value.shape)}; "
                                 f"dim 0 must be the batch size {total} to split a merged batch")
        results: list[Outputs] = []
        offset = 0
        for j in jobs:
            results.append({n: v[offset:offset + j.batch] for n, v in merged.items()})
            offset += j.batch
        t3 = time.perf_counter_ns()
        times = ExecutionTimes(total, t1 - t0, t2 - t1, t3 - t2)
        return [_Outcome(r, t0 - j.enqueued_ns, times) for r, j in zip(results, jobs, strict=True)], [times]

    def _finish(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job], fut: Future[_Executed]) -> None:
        """Event loop thread: free the instance, give it the next batch, then answer.

        The next batch goes first when nothing is left to wait for: the model computes
        while this thread writes the answers, instead of after.
        """
        self._inflight.discard(fut)
        self._free += 1
        self._freed.set()
        if self._queue and self._batch_due(loop):
            jobs_next = self._take()
            if jobs_next:
                self._dispatch(loop, jobs_next)
        try:
            executed = fut.result()
        except BaseException as err:  # noqa: BLE001 - the pool itself failed
            for job in jobs:
                self._reply(job, err)
            return
        self._deliver(jobs, executed)

    def _deliver(self, jobs: list[_Job], executed: _Executed) -> None:
        """Record statistics and answer each request."""
        outcomes, executions = executed
        for times in executions:
            self._stats.record_execution(times)
        for job, outcome in zip(jobs, outcomes, strict=True):
            if not isinstance(outcome.result, BaseException):
                self._stats.record_request_compute(outcome.queue_ns, outcome.times)
            self._reply(job, outcome.result)

    @staticmethod
    def _reply(job: _Job, result: Outputs | BaseException) -> None:
        if job.cancelled:
            return
        try:
            job.reply(result)
        except Exception:  # noqa: BLE001 - one front end's bug must not lose the other answers
            log.exception("answering a request failed")
