"""The OpenVINO backend: a model compiled for one OpenVINO device, run through a pool of infer requests.

The only module that touches OpenVINO, and only inside functions, so the ONNX Runtime image
(no openvino) can import it. It reads what the onnxruntime backend reads (`model.onnx`) and
OpenVINO IR (`model.xml` beside its `model.bin`).
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgewise import contract
from edgewise.node.serve import dtypes, model
from edgewise.node.serve.errors import InferError, Status
from edgewise.node.serve.model import ModelSpec, ServedTensor
from edgewise.shared.openvino_settings import compile_properties

log = logging.getLogger(__name__)

IR_FILENAME = "model.xml"  # Triton's default file name for its openvino backend
# ONNX first: it is what Edgewise ships for openvino classes; an IR left beside it by hand
# must not win over a freshly fetched artifact.
FILENAMES = (contract.ONNX_FILENAME, IR_FILENAME)


def device_problem(asked: str, available: Sequence[str]) -> str | None:
    """Why `asked` cannot run here, or None. OpenVINO lists numbered devices when a node has
    several (GPU.0, GPU.1); AUTO picks among whatever is there."""
    if asked == "AUTO":
        return None if available else "device AUTO has nothing to choose from: OpenVINO sees no device"
    if any(d == asked or d.startswith(asked + ".") for d in available):
        return None
    return (f"device {asked} is not available on this node; OpenVINO sees: {', '.join(available) or 'none'}; "
            f"schedule the pod on a node with the device, requesting its Intel device plugin resource, "
            f"or serve with --device CPU")


def unavailable(device: str) -> str | None:
    """Why the openvino backend cannot serve on `device` in this process, or None."""
    try:
        import openvino as ov
    except ImportError:
        return ("the openvino backend needs the openvino package, which this image lacks: "
                "use the edgewise/node-openvino image (or pip install openvino)")
    return device_problem(device, ov.Core().available_devices)


# What OpenVINO computes 64-bit tensors in: the CPU plugin takes INT64 and UINT64 as 32-bit
# integers (2**40 becomes 0) and FP64 as f32 (1e300 becomes 3.4e38), silently. A request
# holding such values would get a wrong answer; it gets a 400 saying why instead.
_INT32 = np.iinfo(np.int32)
_NARROWED = {
    np.dtype(np.int64): ("INT64", _INT32.min, _INT32.max, "32-bit integers"),
    np.dtype(np.uint64): ("UINT64", 0, _INT32.max, "32-bit integers"),
    np.dtype(np.float64): ("FP64", float(np.finfo(np.float32).min), float(np.finfo(np.float32).max), "f32"),
}


def out_of_range(name: str, values: np.ndarray) -> str | None:
    """Why `values` of input `name` would be computed wrong by OpenVINO, or None."""
    narrowed = _NARROWED.get(values.dtype)
    if narrowed is None or values.size == 0:
        return None
    datatype, low, high, computed_as = narrowed
    finite = values[np.isfinite(values)] if datatype == "FP64" else values
    if finite.size == 0:
        return None
    smallest, largest = finite.min(), finite.max()
    if smallest >= low and largest <= high:
        return None
    bad = largest if largest > high else smallest
    return (f"input '{name}' holds the {datatype} value {bad}, outside {low}..{high}: OpenVINO computes "
            f"{datatype} as {computed_as}, so the answer would be wrong; send values in that range or "
            f"serve this model with --backend onnxruntime")


def _port_name(port: Any) -> str:
    """The tensor's name in the source model. Read before compiling: compiled ports may gain
    names of fused internal tensors (MiniLM's '461' becomes {'461', '/model/model.1/Div_output_0'})."""
    return str(min(port.get_names())) if port.get_names() else str(port.get_any_name())


def _served(name: str, port: Any) -> ServedTensor:
    shape = port.get_partial_shape()
    if shape.rank.is_dynamic:
        raise ValueError(f"tensor {name!r} has no fixed rank; the wire protocol needs one (export the "
                         f"model with a fixed number of dimensions)")
    dims = tuple(d.get_length() if d.is_static else -1 for d in shape)
    return ServedTensor(name, dtypes.from_openvino(port.get_element_type().get_type_name(), name), dims)


class OpenVinoModel:
    """Implements `model.ServedModel` with OpenVINO Runtime.

    An infer request holds one execution's buffers and is not thread-safe; the compiled
    model is. Each run borrows an idle request from the pool (a new one when all are busy,
    so the pool grows to the number of concurrent executions, `--instances`) and gives it back.
    """

    def __init__(
        self, path: Path, device: str = "CPU", threads: int = 0, instances: int = 1, precision: str = "f32",
    ) -> None:
        import openvino as ov

        self._core = ov.Core()
        source = self._core.read_model(str(path))
        self.inputs = tuple(_served(_port_name(p), p) for p in source.inputs)
        self.outputs = tuple(_served(_port_name(p), p) for p in source.outputs)
        properties = compile_properties(device, threads, max(1, instances), precision)
        self._compiled = self._core.compile_model(source, device, properties)
        self._output_names = [t.name for t in self.outputs]
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        log.info("compiled for %s with %s; running on %s", device, properties,
                 self._compiled.get_property("EXECUTION_DEVICES"))

    def run(
        self, inputs: Mapping[str, np.ndarray], output_names: list[str] | None = None, quiet: bool = False,
    ) -> dict[str, np.ndarray]:
        """Thread-safe: each concurrent run has an infer request of its own."""
        for name, values in inputs.items():
            problem = out_of_range(name, values)
            if problem:
                raise InferError(Status.INVALID_ARGUMENT, problem)
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self._compiled.create_infer_request()
        try:
            # Outputs come back in the source model's order, copied: the request's buffers are reused.
            values = request.infer(dict(inputs)).to_tuple()
        except Exception as err:  # noqa: BLE001 - OpenVINO raises RuntimeError for nearly everything
            raise _run_error(err) from err  # the request is dropped: its state is unknown
        self._idle.put(request)
        wanted = output_names or self._output_names
        got = dict(zip(self._output_names, values, strict=True))
        return {n: got[n] for n in wanted}

    def warm_up(self, spec: ModelSpec) -> dict[str, np.ndarray]:
        return model.warm_up(lambda feed: self.run(feed, quiet=True), spec)


def _run_error(err: Exception) -> InferError:
    """Inputs that pass the signature check can still break a kernel (a reshape the input's size
    does not fit, a spatial size a resize cannot take): the request's fault, so a 4xx. OpenVINO
    raises RuntimeError for those, with its source locations on lines of their own."""
    if isinstance(err, RuntimeError):
        lines = [line.strip() for line in str(err).splitlines()]
        reason = " ".join(line for line in lines if line and not line.startswith("Exception from"))
        return InferError(Status.INVALID_ARGUMENT, f"the model failed on this input: {reason or err}")
    return InferError(Status.INTERNAL, f"OpenVINO error ({type(err).__name__}): {err}")
