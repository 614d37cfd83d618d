"""The served model as the server sees it, whatever runs it: tensors, spec, model directory.

`ModelSpec` is plain data derived once from the loaded model; everything that answers
metadata, config or validation questions reads the spec, never the runtime. `ServedModel`
is what a runtime offers the server; one module per runtime implements it
(`onnxruntime_model`, `openvino_model`) and `backends` picks one by name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgewise import contract
from edgewise.node.serve import dtypes

log = logging.getLogger(__name__)

# Sizes tried for dynamic non-batch dimensions during warm-up. 1 is the rule; CNNs that
# down- and up-sample (detection heads, U-Nets) need a multiple of their stride, so the
# warm-up falls back to the next size instead of failing a model that serves fine.
WARMUP_DIM_LADDER = (1, 32, 224)


@dataclass(frozen=True)
class ServedTensor:
    """A tensor as the server takes and gives it on the wire, as the runtime reports it.

    Not the graph's declaration (edgewise.shared.tensors.TensorSpec): the wire type decides how
    each request is decoded, and unsupported types are refused when the model loads."""

    name: str
    dtype: dtypes.DType
    shape: tuple[int, ...]  # -1 marks a dynamic dimension

    @property
    def datatype(self) -> str:
        return self.dtype.triton

    def describe(self) -> str:
        return f"'{self.name}' ({self.datatype} {format_shape(self.shape)})"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    inputs: tuple[ServedTensor, ...]
    outputs: tuple[ServedTensor, ...]
    max_batch_size: int = 0  # > 0: dim 0 is the batch dim and requests may be merged
    backend: str = "onnxruntime"  # the runtime that serves it (`edgewise serve --backend`)
    filename: str = contract.ONNX_FILENAME  # the file it was loaded from, inside its version directory

    def input(self, name: str) -> ServedTensor | None:
        return self._inputs_by_name.get(name)

    def output(self, name: str) -> ServedTensor | None:
        return self._outputs_by_name.get(name)

    @cached_property
    def _inputs_by_name(self) -> dict[str, ServedTensor]:
        return {t.name: t for t in self.inputs}

    @cached_property
    def _outputs_by_name(self) -> dict[str, ServedTensor]:
        return {t.name: t for t in self.outputs}


def format_shape(shape: Iterable[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def find_model_file(model_dir: Path, filenames: tuple[str, ...] = (contract.ONNX_FILENAME,)) -> tuple[Path, str]:
    """Return (path of the model file, version) for a plain or Triton-style model directory.

    `filenames` are the files the backend reads, in order of preference. A plain directory
    holding one is version "1" (Triton's first version). In a Triton layout,
    `<dir>/<version>/<file>`, the highest numeric version wins, like Triton's default
    `latest { num_versions: 1 }` policy.
    """
    plain = _model_file(model_dir, filenames)
    if plain is not None:
        return plain, contract.MODEL_VERSION_DIR
    versions = sorted(
        (int(p.name) for p in model_dir.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name)
         and _model_file(p, filenames) is not None),
    ) if model_dir.is_dir() else []
    if not versions:
        either = " or ".join(filenames)
        raise FileNotFoundError(
            f"no {either} in {model_dir} nor in a numeric version directory "
            f"({model_dir}/<version>/{filenames[0]})"
        )
    path = _model_file(model_dir / str(versions[-1]), filenames)
    assert path is not None
    return path, str(versions[-1])


def _model_file(directory: Path, filenames: tuple[str, ...]) -> Path | None:
    """The first of `filenames` in `directory`; an OpenVINO IR (.xml) counts only with its .bin
    beside it, which holds the weights."""
    for name in filenames:
        path = directory / name
        if path.is_file() and (path.suffix != ".xml" or path.with_suffix(".bin").is_file()):
            return path
    return None


def served_tensor(name: str, ort_type: str, shape: Iterable[Any]) -> ServedTensor:
    """From ONNX type names (`tensor(float)`) and dims as ONNX Runtime reports them: symbolic
    dims are strings or None, both dynamic (-1)."""
    dims = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)
    return ServedTensor(name, dtypes.from_ort(ort_type), dims)


def batchable(inputs: Iterable[ServedTensor], outputs: Iterable[ServedTensor]) -> bool:
    """Requests can be merged along dim 0 only if every tensor's dim 0 is dynamic."""
    return all(len(t.shape) >= 1 and t.shape[0] == -1 for t in (*inputs, *outputs))


def make_spec(
    name: str, version: str, inputs: tuple[ServedTensor, ...], outputs: tuple[ServedTensor, ...],
    max_batch_size: int, backend: str = "onnxruntime", filename: str = contract.ONNX_FILENAME,
) -> ModelSpec:
    """Build the spec, turning batching off (with a warning) for models that can't batch.

    Triton refuses to load such a model; a node runtime that crash-loops because a
    profile enables batching for every model of a class would be worse.
    """
    if max_batch_size > 0 and not batchable(inputs, outputs):
        log.warning("model %s has a fixed first dimension; dynamic batching disabled", name)
        max_batch_size = 0
    return ModelSpec(name, version, inputs, outputs, max(0, max_batch_size), backend, filename)


def golden_inputs(spec: ModelSpec, dynamic_dim: int = 1) -> dict[str, np.ndarray]:
    """Deterministic warm-up inputs from the input signature.

    Batch and other dynamic dims become 1 (or `dynamic_dim` for non-batch dims when the
    model rejects 1); values are zeros, valid for embeddings (index 0 always exists),
    masks and images alike.
    """
    out: dict[str, np.ndarray] = {}
    for t in spec.inputs:
        shape = tuple(
            (1 if i == 0 else dynamic_dim) if d == -1 else d for i, d in enumerate(t.shape)
        )
        if t.datatype == "BYTES":
            out[t.name] = np.full(shape, b"edgewise", dtype=object)
        else:
            out[t.name] = np.zeros(shape, dtype=t.dtype.numpy)
    return out


class ServedModel(Protocol):
    """A loaded model the server runs: its wire signature, and how to run it.

    `run` may be called from up to `--instances` threads at once (the batcher's pool, or the
    event loop for a lone request), so an implementation keeps per-execution state per
    thread. Errors a request's values cause are `InferError(INVALID_ARGUMENT)`."""

    inputs: tuple[ServedTensor, ...]
    outputs: tuple[ServedTensor, ...]

    def run(
        self, inputs: Mapping[str, np.ndarray], output_names: list[str] | None = None, quiet: bool = False,
    ) -> dict[str, np.ndarray]: ...

    def warm_up(self, spec: ModelSpec) -> dict[str, np.ndarray]: ...


def warm_up(run: Callable[[dict[str, np.ndarray]], object], spec: ModelSpec) -> dict[str, np.ndarray]:
    """Answer golden inputs through `run` or raise; returns the inputs the model answered.

    The server reports ready only after this returns.
    """
    errors = []
    for dim in WARMUP_DIM_LADDER:
        feed = golden_inputs(spec, dim)
        try:
            run(feed)
        except Exception as err:  # noqa: BLE001 - each runtime raises its own classes
            errors.append(f"dynamic dims={dim}: {err}")
            continue
        log.info("warm-up answered with %s", {k: list(v.shape) for k, v in feed.items()})
        return feed
    raise RuntimeError("model failed warm-up with golden inputs: " + " | ".join(errors))

