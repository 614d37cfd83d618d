"""The protocol-neutral core both front ends (HTTP, gRPC) call.

It knows the one model this process serves, whether it is ready, and how to run an
inference end to end: resolve the model, let the front end decode and validate against
the spec, queue on the batcher, let the front end encode, and charge the statistics.
Keeping the statistics here means HTTP and gRPC requests are counted the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from edgewise.node.serve import config as describe
from edgewise.node.serve import limits, validate
from edgewise.node.serve.batcher import Batcher, Outputs
from edgewise.node.serve.errors import InferError, Status
from edgewise.node.serve.model import ModelSpec
from edgewise.node.serve.stats import ModelStats

R = TypeVar("R")


@dataclass
class Decoded:
    """A request after decoding and validation against the spec."""

    inputs: dict[str, np.ndarray]
    batch: int
    outputs: list[str] | None  # None: every output
    wire: Any = None  # front-end options the encoder needs (request id, binary outputs)


@dataclass(frozen=True)
class Settings:
    model_name: str
    max_queue_delay_us: int = 0
    instances: int = 1
    threads: int = 0
    limits: limits.Limits = limits.DEFAULT
    device: str = "CPU"  # the OpenVINO device and CPU precision, reported in the openvino backend's config
    precision: str = "f32"


# Requests whose decoding walks more bytes than this (JSON, BYTES tensors, typed gRPC contents)
# are decoded on the decode thread, not the event loop: decoding megabytes of JSON takes
# seconds, and health probes must not wait for all of it (they still wait for json.loads itself,
# which holds the interpreter lock until it returns). Below it decoding takes a few milliseconds
# at worst, and usually far less than the thread handoff would cost.
OFFLOAD_BYTES = 64 * 1024


class InferenceService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stats = ModelStats()
        self.spec: ModelSpec | None = None
        self.ready = False
        self._batcher: Batcher | None = None
        # One thread: large decodes queue behind each other instead of taking every core
        # from the model; the loop answers between the decode's Python steps (not during one
        # long C call such as json.loads).
        self._decoder = ThreadPoolExecutor(1, thread_name_prefix="edgewise-decode")

    def on_decoder(self, fn: Callable[..., R], *args: Any) -> asyncio.Future[R]:
        """Run `fn` on the decode thread (see OFFLOAD_BYTES)."""
        return asyncio.get_running_loop().run_in_executor(self._decoder, fn, *args)

    def close(self) -> None:
        """After the listeners closed: no decode can still be wanted."""
        self._decoder.shutdown(wait=False, cancel_futures=True)

    def attach(self, spec: ModelSpec, batcher: Batcher) -> None:
        """Called once the model answered its warm-up; from now on the server is ready."""
        self.spec = spec
        self._batcher = batcher
        self.ready = True

    def model(self, name: str, version: str = "") -> ModelSpec:
        """The spec of the requested model, or NOT_FOUND / UNAVAILABLE."""
        if self.spec is None:
            if name != self.settings.model_name:
                raise validate.unknown_model(name, self.settings.model_name)
            raise InferError(Status.UNAVAILABLE, f"model '{name}' is not ready: it is loading and warming up")
        validate.check_model(self.spec, name, version)
        return self.spec

    def model_ready(self, name: str, version: str = "") -> bool:
        try:
            self.model(name, version)
        except InferError:
            return False
        return self.ready

    def server_metadata(self) -> dict[str, Any]:
        return describe.server_metadata()

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        return describe.model_metadata(self.model(name, version))

    def model_config(self, name: str, version: str = "") -> dict[str, Any]:
        s = self.settings
        return describe.model_config(self.model(name, version), s.max_queue_delay_us, s.instances, s.threads,
                                     s.device, s.precision)

    def statistics(self, name: str = "", version: str = "") -> dict[str, Any]:
        """Triton's statistics response; an empty name means every model (here: the one)."""
        if self.spec is None:
            return {"model_stats": []}
        spec = self.model(name, version) if name else self.spec
        return {"model_stats": [self.stats.to_triton(spec.name, spec.version)]}

    def repository_index(self) -> list[dict[str, str]]:
        state = "READY" if self.ready else "LOADING"
        version = self.spec.version if self.spec else ""
        return [{"name": self.settings.model_name, "version": version, "state": state}]

    def submit(
        self, name: str, version: str,
        decode: Callable[[ModelSpec], Decoded],
        encode: Callable[[ModelSpec, Decoded, Outputs], R],
        reply: Callable[[R | BaseException], None], client: object = None, size: int = 0,
    ) -> Callable[[], None]:
        """Start one request; `reply` gets the encoded answer or the error. Returns a canceller.

        Errors found before the model runs (unknown model, bad input) raise at once, unless
        decoding walks over OFFLOAD_BYTES (`size`): then it runs on the decode thread and its
        errors reach `reply`. Failures after the model is resolved count as
        Triton `fail`s, a request cancelled by its client too. `reply` may be called before
        this returns (a request run on the event loop); `client` identifies the connection,
        see `Batcher.submit`.
        """
        start = time.perf_counter_ns()
        spec = self.model(name, version)
        # Not `self.ready`: while draining (not ready) a request whose body was still arriving
        # at SIGTERM is answered; the batcher refuses once it is closed.
        if self._batcher is None:
            raise InferError(Status.UNAVAILABLE, f"model '{name}' is not ready")
        batcher = self._batcher
        finished = False
        job: Any = None

        def done(request: Decoded, outputs: Outputs | BaseException) -> None:
            nonlocal finished
            finished = True
            result: R | BaseException
            if isinstance(outputs, BaseException):
                result = outputs
            else:
                try:
                    result = encode(spec, request, outputs)
                except Exception as err:  # noqa: BLE001 - the encoder's failure is this request's answer
                    result = err
            self.stats.record_request(not isinstance(result, BaseException), time.perf_counter_ns() - start)
            reply(result)

        def cancel() -> None:
            nonlocal finished
            if not finished:
                finished = True
                if job is not None:
                    job.cancel()
                self.stats.record_request(False, time.perf_counter_ns() - start)

        def queue(request: Decoded) -> None:
            nonlocal job
            job = batcher.submit(request.inputs, request.batch, request.outputs,
                                 lambda outputs: done(request, outputs), client)

        if size <= OFFLOAD_BYTES:
            try:
                queue(decode(spec))
            except BaseException:
                self.stats.record_request(False, time.perf_counter_ns() - start)
                raise
            return cancel

        def decoded(future: asyncio.Future[Decoded]) -> None:
            nonlocal finished
            if finished:  # cancelled by its client meanwhile, and counted then
                return
            try:
                queue(future.result())
            except BaseException as err:  # noqa: BLE001 - a bad request, or shutting down: its answer
                finished = True
                self.stats.record_request(False, time.perf_counter_ns() - start)
                reply(err)

        self.on_decoder(decode, spec).add_done_callback(decoded)
        return cancel

    async def infer(
        self, name: str, version: str,
        decode: Callable[[ModelSpec], Decoded],
        encode: Callable[[ModelSpec, Decoded, Outputs], R], size: int = 0,
    ) -> R:
        """`submit` for callers that await (gRPC); cancelling the await cancels the request."""
        answer: asyncio.Future[R] = asyncio.get_running_loop().create_future()

        def reply(result: R | BaseException) -> None:
            if answer.done():
                return
            if isinstance(result, BaseException):
                answer.set_exception(result)
            else:
                answer.set_result(result)

        cancel = self.submit(name, version, decode, encode, reply, size=size)
        try:
            return await answer
        except asyncio.CancelledError:
            cancel()
            raise

