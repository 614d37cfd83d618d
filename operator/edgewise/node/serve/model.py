"""The served model: where its file is, what its tensors look like, and how to run it.

`ModelSpec` is plain data derived once from the ONNX Runtime session; everything that
answers metadata, config or validation questions reads the spec, never the session.
`OnnxModel` is the only object that touches ONNX Runtime.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from edgewise import contract
from edgewise.node.serve import dtypes
from edgewise.node.serve.errors import InferError, Status

log = logging.getLogger(__name__)

PLATFORM = "onnxruntime_onnx"  # Triton's platform name for the ONNX Runtime backend
BACKEND = "onnxruntime"

# Sizes tried for dynamic non-batch dimensions during warm-up. 1 is the rule; CNNs that
# down- and up-sample (detection heads, U-Nets) need a multiple of their stride, so the
# warm-up falls back to the next size instead of failing a model that serves fine.
WARMUP_DIM_LADDER = (1, 32, 224)


@dataclass(frozen=True)
class ServedTensor:
    """A tensor as the server takes and gives it on the wire, from ONNX Runtime's session.

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


def find_model_file(model_dir: Path) -> tuple[Path, str]:
    """Return (path of model.onnx, version) for a plain or Triton-style model directory.

    A plain directory holding model.onnx is version "1" (Triton's first version). In a
    Triton layout, `<dir>/<version>/model.onnx`, the highest numeric version wins, like
    Triton's default `latest { num_versions: 1 }` policy.
    """
    plain = model_dir / contract.ONNX_FILENAME
    if plain.is_file():
        return plain, contract.MODEL_VERSION_DIR
    versions = sorted(
        (int(p.name) for p in model_dir.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name)
         and (p / contract.ONNX_FILENAME).is_file()),
    ) if model_dir.is_dir() else []
    if not versions:
        raise FileNotFoundError(
            f"no {contract.ONNX_FILENAME} in {model_dir} nor in a numeric version directory "
            f"({model_dir}/<version>/{contract.ONNX_FILENAME})"
        )
    return model_dir / str(versions[-1]) / contract.ONNX_FILENAME, str(versions[-1])


def served_tensor(name: str, ort_type: str, shape: Iterable[Any]) -> ServedTensor:
    """ONNX Runtime reports symbolic dims as strings or None; both are dynamic (-1)."""
    dims = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)
    return ServedTensor(name, dtypes.from_ort(ort_type), dims)


def batchable(inputs: Iterable[ServedTensor], outputs: Iterable[ServedTensor]) -> bool:
    """Requests can be merged along dim 0 only if every tensor's dim 0 is dynamic."""
    return all(len(t.shape) >= 1 and t.shape[0] == -1 for t in (*inputs, *outputs))


def make_spec(
    name: str, version: str, inputs: tuple[ServedTensor, ...], outputs: tuple[ServedTensor, ...],
    max_batch_size: int,
) -> ModelSpec:
    """Build the spec, turning batching off (with a warning) for models that can't batch.

    Triton refuses to load such a model; a node runtime that crash-loops because a
    profile enables batching for every model of a class would be worse.
    """
    if max_batch_size > 0 and not batchable(inputs, outputs):
        log.warning("model %s has a fixed first dimension; dynamic batching disabled", name)
        max_batch_size = 0
    return ModelSpec(name, version, inputs, outputs, max(0, max_batch_size))


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


class OnnxModel:
    """An ONNX Runtime session plus the conversions the wire format needs (BYTES <-> str)."""

    def __init__(self, path: Path, threads: int = 0, spinning: bool = False, spin_us: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's default, one per core
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: warm-up probes may fail on purpose
        # Spinning intra-op threads burn the cores the event loop needs to parse the next
        # requests (and that neighbours on a small edge box need); off unless asked for.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning or spin_us else "0")
        if spin_us > 0:
            # Bounded: hot across the microsecond gaps between a run's operators, asleep between requests.
            options.add_session_config_entry("session.intra_op.spin_duration_us", str(spin_us))
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._quiet = ort.RunOptions()
        self._quiet.log_severity_level = 4
        self.inputs = tuple(served_tensor(i.name, i.type, i.shape) for i in self._session.get_inputs())
        self.outputs = tuple(served_tensor(o.name, o.type, o.shape) for o in self._session.get_outputs())
        self._output_names = [t.name for t in self.outputs]
        self._string_inputs = {t.name for t in self.inputs if t.datatype == "BYTES"}
        self._string_outputs = {t.name for t in self.outputs if t.datatype == "BYTES"}

    def run(
        self, inputs: Mapping[str, np.ndarray], output_names: list[str] | None = None, quiet: bool = False,
    ) -> dict[str, np.ndarray]:
        """Run the session; thread-safe (ONNX Runtime allows concurrent Run calls)."""
        feed = {k: _to_ort_strings(v) if k in self._string_inputs else v for k, v in inputs.items()}
        names = output_names or self._output_names
        try:
            values = self._session.run(names, feed, self._quiet if quiet else None)
        except Exception as err:  # noqa: BLE001 - ONNX Runtime raises its own classes
            raise _run_error(err) from err
        return {
            n: _to_bytes(v) if n in self._string_outputs else v for n, v in zip(names, values, strict=True)
        }

    def warm_up(self, spec: ModelSpec) -> dict[str, np.ndarray]:
        """Answer golden inputs or raise; returns the inputs the model answered.

        The server reports ready only after this returns.
        """
        errors = []
        for dim in WARMUP_DIM_LADDER:
            feed = golden_inputs(spec, dim)
            try:
                self.run(feed, quiet=True)
            except Exception as err:  # noqa: BLE001 - ONNX Runtime raises its own classes
                errors.append(f"dynamic dims={dim}: {err}")
                continue
            log.info("warm-up answered with %s", {k: list(v.shape) for k, v in feed.items()})
            return feed
        raise RuntimeError("model failed warm-up with golden inputs: " + " | ".join(errors))


def _run_error(err: Exception) -> InferError:
    """Inputs that pass the signature check can still break a kernel (an out-of-range token
    id, a spatial size a resize can't take): that is the request's fault, so a 4xx."""
    kind = type(err).__name__
    if kind in ("InvalidArgument", "Fail", "InvalidProtobuf"):
        return InferError(Status.INVALID_ARGUMENT, f"the model failed on this input: {err}")
    return InferError(Status.INTERNAL, f"ONNX Runtime error ({kind}): {err}")


def _to_ort_strings(arr: np.ndarray) -> np.ndarray:
    """ONNX Runtime string tensors take str; the wire carries bytes."""
    return np.vectorize(lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b),
                        otypes=[object])(arr) if arr.size else arr.astype(object)


def _to_bytes(arr: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda s: s.encode("utf-8") if isinstance(s, str) else bytes(s),
                        otypes=[object])(arr) if arr.size else arr.astype(object)
