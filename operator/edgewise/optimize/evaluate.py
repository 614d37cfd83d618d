"""Measure an artifact against its original on this machine: agreement and speed.

Agreement is computed per sample on every float output: cosine similarity of the flattened
sample, the largest absolute error, and for classifier outputs the share of samples whose
argmax is unchanged. The gate reads the minimum over samples and outputs: one badly
degraded input is what a canary would hit.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgewise.optimize import speed
from edgewise.optimize.data import Samples, batches, count
from edgewise.optimize.errors import TechniqueFailed
from edgewise.optimize.gates import Agreement
from edgewise.optimize.inspect import ModelInfo
from edgewise.optimize.speed import SpeedMeasurement

EPS = 1e-12



class Runnable(Protocol):
    """What the gates run: ONNX Runtime's InferenceSession, or `openvino_session.Session`."""

    def run(self, names: Sequence[str] | None, feed: Samples, /) -> Sequence[Any]: ...


# How a gate opens an artifact: (path, intra-op threads) -> a Runnable. ONNX Runtime's CPU
# provider by default; `openvino_session.session` for OpenVINO targets.
OpenSession = Callable[[Path, int], Runnable]


def session(path: Path, threads: int = 2):  # noqa: ANN201 - onnxruntime.InferenceSession
    """A CPU session; a model ONNX Runtime cannot load raises TechniqueFailed with its message."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 4  # failures are reported by the caller, with the node they name
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise TechniqueFailed(f"ONNX Runtime cannot load {path.name}: {err}") from err


def run_all(sess, arrays: Samples, batch_size: int, names: Sequence[str]) -> dict[str, np.ndarray]:  # noqa: ANN001
    """Outputs `names` for every sample, concatenated on axis 0."""
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for batch in batches(arrays, batch_size):
        for name, value in zip(names, sess.run(list(names), batch), strict=True):
            parts[name].append(np.asarray(value))
    return {n: np.concatenate(v, axis=0) if v[0].ndim else np.stack(v) for n, v in parts.items()}


def agreement(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
              classifier_outputs: Sequence[str] = ()) -> Agreement:
    """Pure: per-sample agreement of `candidate` with `reference` over the same float outputs."""
    cosines: list[np.ndarray] = []
    max_abs = 0.0
    top1: list[np.ndarray] = []
    samples = 0
    for name, ref in reference.items():
        ref64 = ref.astype(np.float64)
        got64 = candidate[name].astype(np.float64)
        if ref64.shape != got64.shape:
            raise TechniqueFailed(f"output {name!r} changed shape: {ref64.shape} -> {got64.shape}")
        n = ref64.shape[0] if ref64.ndim else 1
        samples = max(samples, n)
        a = ref64.reshape(n, -1)
        b = got64.reshape(n, -1)
        if a.shape[1] == 0:
            continue
        dot = (a * b).sum(axis=1)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        both_zero = (np.linalg.norm(a, axis=1) < EPS) & (np.linalg.norm(b, axis=1) < EPS)
        cos = np.where(both_zero, 1.0, dot / np.maximum(norms, EPS))
        cos = np.where(np.isfinite(b).all(axis=1), cos, -1.0)  # NaN/inf outputs disagree, loudly
        cosines.append(cos)
        max_abs = max(max_abs, float(np.nanmax(np.abs(a - b))) if np.isfinite(b).all() else float("inf"))
        if name in classifier_outputs:
            top1.append(a.argmax(axis=1) == b.argmax(axis=1))
    if not cosines:
        raise TechniqueFailed("the model has no float outputs to compare")
    all_cos = np.concatenate(cosines)
    top1_pct = float(np.concatenate(top1).mean() * 100.0) if top1 else None
    return Agreement(samples=samples, min_cosine=float(all_cos.min()), mean_cosine=float(all_cos.mean()),
                     max_abs_error=max_abs, top1_agreement_percent=top1_pct)


def float_outputs(info: ModelInfo) -> list[str]:
    return [o.name for o in info.outputs if o.is_float]


@dataclass(frozen=True)
class WallLatency:
    """Wall-clock latency, for benchmark reports (bench/optimize): decisions use `compare_latency`."""

    before_ms: float
    after_ms: float
    batch: int
    threads: int

    @property
    def ratio(self) -> float:
        return self.after_ms / self.before_ms if self.before_ms > 0 else float("nan")


def wall_ms(sess, sample: Samples, runs: int = 20, warmup: int = 5) -> float:  # noqa: ANN001
    """Median wall time of one inference of `sample`, in milliseconds."""
    for _ in range(warmup):
        sess.run(None, sample)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, sample)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def compare_wall_latency(original: Path, artifact: Path, arrays: Samples, batch: int = 1, threads: int = 2,
                         runs: int = 20, rounds: int = 3, warmup: int = 5,
                         open_session: OpenSession | None = None) -> WallLatency:
    """Wall-clock latency of both models with `threads` intra-op threads, interleaved in rounds, best round each.

    What a user of the model waits for, on an idle machine; it moves with the machine's load, so no
    decision is made on it (see `compare_latency`).
    """
    sample = _sample(arrays, batch)
    opener = open_session or session
    a, b = opener(original, threads), opener(artifact, threads)
    before, after = [], []
    for i in range(rounds):
        if i % 2:
            after.append(wall_ms(b, sample, runs, warmup))
            before.append(wall_ms(a, sample, runs, warmup))
        else:
            before.append(wall_ms(a, sample, runs, warmup))
            after.append(wall_ms(b, sample, runs, warmup))
    return WallLatency(before_ms=min(before), after_ms=min(after), batch=batch, threads=threads)


def _sample(arrays: Samples, batch: int) -> Samples:
    """One batch of `batch` samples, repeating the data when there are fewer."""
    if count(arrays) >= batch:
        return next(batches(arrays, batch))
    return {k: np.concatenate([v] * (batch // count(arrays) + 1))[:batch] for k, v in arrays.items()}


# CPU milliseconds a measuring round spends per model at least, so the timer's resolution and
# one-off stalls (a page fault) stay small against what is measured.
ROUND_CPU_MS = 20.0
MAX_RUNS_PER_ROUND = 200


def cpu_ms(sess, sample: Samples, runs: int) -> float:  # noqa: ANN001
    """CPU time of one inference of `sample` on this thread, in ms, averaged over `runs`.

    The session must have one intra-op thread, so that ONNX Runtime computes on the calling
    thread and `thread_time` sees all of the work and none of another process's.
    """
    start = time.thread_time()
    for _ in range(runs):
        sess.run(None, sample)
    return max((time.thread_time() - start) * 1000.0 / runs, 1e-6)


@dataclass(frozen=True)
class Latency:
    """What the speed measurement found, and how it was measured."""

    speed: SpeedMeasurement
    batch: int
    runs: int  # inferences per model per round
    threads: int = 1  # intra-op threads while measuring: one, so CPU time is the model's own

    @property
    def ratio(self) -> float:
        return self.speed.ratio


def compare_latency(original: Path, artifact: Path, arrays: Samples, batch: int = 1, limit: float = 1.0,
                    warmup: int = 3, min_rounds: int = speed.MIN_ROUNDS,
                    max_rounds: int = speed.MAX_ROUNDS, open_session: OpenSession | None = None) -> Latency:
    """CPU time per inference of both models on the same inputs, in interleaved rounds, against `limit`.

    See `speed`: the verdict does not depend on how busy this machine is, and it is
    `inconclusive` rather than a guess when the two cannot be told apart. `open_session` runs
    both in the target's runtime (ONNX Runtime by default).
    """
    sample = _sample(arrays, batch)
    opener = open_session or session
    a, b = opener(original, 1), opener(artifact, 1)
    for sess in (a, b):
        for _ in range(warmup):
            sess.run(None, sample)
    one = max(cpu_ms(a, sample, 1), cpu_ms(b, sample, 1))
    runs = max(1, min(MAX_RUNS_PER_ROUND, math.ceil(ROUND_CPU_MS / one)))

    def measure_round(original_first: bool) -> speed.Round:
        if original_first:
            before = cpu_ms(a, sample, runs)
            return speed.Round(before_ms=before, after_ms=cpu_ms(b, sample, runs))
        after = cpu_ms(b, sample, runs)
        return speed.Round(before_ms=cpu_ms(a, sample, runs), after_ms=after)

    result = speed.measure(measure_round, limit, min_rounds=min_rounds, max_rounds=max_rounds)
    return Latency(speed=result, batch=batch, runs=runs)
