"""The golden-input check: stored inputs whose outputs a new version must reproduce.

It catches the model that is fast and healthy but wrong (wrong weights, a broken
quantization, a swapped output). Inputs come from a .npz; they are sent with tritonclient
to one canary pod, and the outputs are compared, by cosine similarity per sample, with
either the outputs a stable pod gives for the same inputs or the `expected__<output>`
arrays stored in the same file. Both providers run it; it needs no Prometheus.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import tritonclient.http.aio as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from edgewise.analysis.provider import GoldenFile, PodEndpoint
from edgewise.core.analysis import GoldenResult, OutputSimilarity

EXPECTED_PREFIX = "expected__"
MAX_PODS_TRIED = 3  # per cohort: a few unreachable pods must not turn one check into many timeouts


@dataclass(frozen=True)
class GoldenSet:
    inputs: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]

    @property
    def samples(self) -> int:
        first = next(iter(self.inputs.values()))
        return int(first.shape[0]) if first.ndim else 1


def load(path: str | Path) -> GoldenSet:
    """Read a golden .npz: model inputs by name, plus optional `expected__<output>` arrays."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    inputs = {k: v for k, v in arrays.items() if not k.startswith(EXPECTED_PREFIX)}
    expected = {k.removeprefix(EXPECTED_PREFIX): v
                for k, v in arrays.items() if k.startswith(EXPECTED_PREFIX)}
    if not inputs:
        raise ValueError(f"{path}: no input arrays (only {EXPECTED_PREFIX}* arrays)")
    return GoldenSet(inputs, expected)


def cosine_per_sample(actual: np.ndarray, reference: np.ndarray) -> float:
    """Worst cosine similarity over samples (rows along dim 0); 1.0 for two all-zero rows.

    Comparing per sample, not over the flattened tensor, keeps one badly wrong sample from
    hiding among many right ones.
    """
    if actual.shape != reference.shape:
        raise ValueError(f"shape {list(actual.shape)} differs from reference {list(reference.shape)}")
    a = actual.astype(np.float64).reshape(actual.shape[0] if actual.ndim > 1 else 1, -1)
    b = reference.astype(np.float64).reshape(a.shape)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(both_zero, 1.0, (a * b).sum(axis=1) / (na * nb))
    cos = np.nan_to_num(cos, nan=0.0)  # one side zero, the other not: as different as it gets
    return float(cos.min())


class Unreachable(Exception):
    """The pod did not answer (connection refused, timeout, not ready): not its model's fault."""


class GoldenChecker:
    """Runs the golden check; caches the parsed .npz by path and modification time."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        self._cache: dict[str, tuple[float, GoldenSet]] = {}

    def _load(self, path: str) -> GoldenSet:
        mtime = os.stat(path).st_mtime
        cached = self._cache.get(path)
        if cached is None or cached[0] != mtime:
            cached = (mtime, load(path))
            self._cache[path] = cached
        return cached[1]

    async def check(self, golden: GoldenFile, model_name: str, canary: Sequence[PodEndpoint],
                    stable: Sequence[PodEndpoint]) -> GoldenResult:
        try:
            gs = self._load(golden.path)
        except (OSError, ValueError) as err:
            return GoldenResult(reference="", error=f"cannot read golden inputs: {err}")
        reference_name = "stored expected outputs" if gs.expected else "stable pod"

        try:
            pod, actual = await self._first_answer(canary, model_name, gs)
        except InferenceServerException as err:
            return await self._canary_refused(err, gs, model_name, stable, reference_name)
        except Unreachable as err:
            return GoldenResult(reference=reference_name, samples=gs.samples,
                                error=f"no canary pod answered: {err}")

        if gs.expected:
            reference = gs.expected
        else:
            try:
                ref_pod, reference = await self._first_answer(stable, model_name, gs)
            except (InferenceServerException, Unreachable) as err:
                return GoldenResult(reference=reference_name, samples=gs.samples,
                                    error=f"no stable pod answered: {err}")
            reference_name = f"stable pod {ref_pod.name}"

        similarities = []
        for name, ref in sorted(reference.items()):
            if name not in actual:
                return GoldenResult(reference=reference_name, samples=gs.samples, canary_error=True,
                                    error=f"canary pod {pod.name} returned no output {name!r}")
            try:
                similarities.append(OutputSimilarity(name, cosine_per_sample(actual[name], ref)))
            except ValueError as err:
                return GoldenResult(reference=reference_name, samples=gs.samples, canary_error=True,
                                    error=f"output {name!r} of canary pod {pod.name}: {err}")
        return GoldenResult(reference=reference_name, samples=gs.samples, outputs=tuple(similarities))

    async def _canary_refused(self, err: InferenceServerException, gs: GoldenSet, model_name: str,
                              stable: Sequence[PodEndpoint], reference_name: str) -> GoldenResult:
        """The canary answered the golden inputs with an error: its fault, or the file's?

        If a stable pod refuses the same inputs, the golden file is what is wrong (a
        different input name or shape): reported, but not held against the canary.
        """
        why = f"{err.message()} (status {err.status()})"
        try:
            await self._first_answer(stable, model_name, gs)
        except InferenceServerException as stable_err:
            return GoldenResult(reference=reference_name, samples=gs.samples,
                                error=f"golden inputs refused by canary ({why}) and by stable "
                                      f"({stable_err.message()})")
        except Unreachable:
            pass  # nothing to tell them apart: the inputs are declared valid for the model
        return GoldenResult(reference=reference_name, samples=gs.samples, canary_error=True, error=why)

    async def _first_answer(self, pods: Sequence[PodEndpoint], model_name: str,
                            gs: GoldenSet) -> tuple[PodEndpoint, dict[str, np.ndarray]]:
        """Outputs of the first of (at most MAX_PODS_TRIED) pods that answers.

        Raises InferenceServerException when a pod answered with an error (its model's
        fault), Unreachable when none answered at all.
        """
        errors = []
        for pod in pods[:MAX_PODS_TRIED]:
            try:
                return pod, await asyncio.wait_for(self._infer(pod, model_name, gs), self.timeout_s)
            except InferenceServerException as err:
                if err.status() in ("503", None):  # not ready (or no HTTP answer): try another
                    errors.append(f"{pod.name}: {err.message()}")
                    continue
                raise
            except (aiohttp.ClientError, OSError, TimeoutError) as err:
                errors.append(f"{pod.name}: {type(err).__name__} {err}".strip())
        raise Unreachable("; ".join(errors) or "no pod")

    async def _infer(self, pod: PodEndpoint, model_name: str, gs: GoldenSet) -> dict[str, np.ndarray]:
        inputs = []
        for name, arr in gs.inputs.items():
            inp = httpclient.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
            inp.set_data_from_numpy(arr, binary_data=True)
            inputs.append(inp)
        async with httpclient.InferenceServerClient(pod.http_url, conn_timeout=self.timeout_s) as client:
            result = await client.infer(model_name, inputs)
        outputs = result.get_response().get("outputs", [])
        return {o["name"]: result.as_numpy(o["name"]) for o in outputs}
