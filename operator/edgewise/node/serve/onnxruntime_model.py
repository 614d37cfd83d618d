"""The ONNX Runtime backend: a session plus the conversions the wire format needs (BYTES <-> str).

The only module that touches ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edgewise.node.serve import model
from edgewise.node.serve.errors import InferError, Status
from edgewise.node.serve.model import ModelSpec, served_tensor


class OnnxModel:
    """An ONNX Runtime session on the CPU execution provider; implements `model.ServedModel`."""

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
        return model.warm_up(lambda feed: self.run(feed, quiet=True), spec)


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
