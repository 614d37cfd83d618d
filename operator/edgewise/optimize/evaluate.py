"""Measure an artifact against its original on this machine: agreement, latency, size.

Agreement is computed per sample on every float output: cosine similarity of the flattened
sample, the largest absolute error, and for classifier outputs the share of samples whose
argmax is unchanged. The gate reads the minimum over samples and outputs: one badly
degraded input is what a canary would hit.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgewise.optimize.data import Samples, batches, count
from edgewise.optimize.errors import TechniqueFailed
from edgewise.optimize.gates import Agreement
from edgewise.optimize.inspect import ModelInfo

EPS = 1e-12


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


def latency_ms(sess, sample: Samples, runs: int = 20, warmup: int = 5) -> float:  # noqa: ANN001
    """Median wall time of one inference of `sample`, in milliseconds."""
    for _ in range(warmup):
        sess.run(None, sample)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, sample)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


@dataclass(frozen=True)
class Latency:
    before_ms: float
    after_ms: float
    batch: int
    threads: int

    @property
    def ratio(self) -> float:
        return self.after_ms / self.before_ms if self.before_ms > 0 else float("nan")


def compare_latency(original: Path, artifact: Path, arrays: Samples, batch: int = 1, threads: int = 2,
                    runs: int = 20, rounds: int = 3, warmup: int = 5) -> Latency:
    """Latency of both models on the same inputs, interleaved in rounds so load noise hits both alike.

    Each round alternates which model goes first; the best round's median counts for each.
    """
    sample = next(batches(arrays, batch)) if count(arrays) >= batch else \
        {k: np.concatenate([v] * (batch // count(arrays) + 1))[:batch] for k, v in arrays.items()}
    a, b = session(original, threads), session(artifact, threads)
    before, after = [], []
    for i in range(rounds):
        if i % 2:
            after.append(latency_ms(b, sample, runs, warmup))
            before.append(latency_ms(a, sample, runs, warmup))
        else:
            before.append(latency_ms(a, sample, runs, warmup))
            after.append(latency_ms(b, sample, runs, warmup))
    return Latency(before_ms=min(before), after_ms=min(after), batch=batch, threads=threads)
