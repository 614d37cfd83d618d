"""One table for the names every tensor type has: ONNX Runtime's, OpenVINO's, Triton's and numpy's.

Triton's wire names (FP32, BYTES, ...) are what clients send; ONNX Runtime reports
`tensor(float)`, OpenVINO `f32`; model configs say `TYPE_FP32`. Keeping them in one place
means a type is either supported everywhere or rejected at model load with a clear message.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class DType:
    triton: str  # KServe-V2 / Triton wire name
    numpy: np.dtype

    @property
    def config(self) -> str:
        """Triton's ModelConfig DataType enum name: TYPE_ + the wire name, but strings are TYPE_STRING."""
        return "TYPE_STRING" if self.triton == "BYTES" else f"TYPE_{self.triton}"

    # Per request, so computed once per type (cached_property writes the instance dict,
    # which a frozen dataclass allows).
    @cached_property
    def itemsize(self) -> int:
        """Bytes per element on the wire; 0 for BYTES (length-prefixed)."""
        return 0 if self.numpy == np.object_ else self.numpy.itemsize

    @cached_property
    def wire(self) -> np.dtype:
        """The numpy type of raw wire data: little-endian, whatever the host's byte order."""
        return self.numpy.newbyteorder("<")


_TABLE: dict[str, DType] = {
    "tensor(float)": DType("FP32", np.dtype(np.float32)),
    "tensor(float16)": DType("FP16", np.dtype(np.float16)),
    "tensor(double)": DType("FP64", np.dtype(np.float64)),
    "tensor(int8)": DType("INT8", np.dtype(np.int8)),
    "tensor(int16)": DType("INT16", np.dtype(np.int16)),
    "tensor(int32)": DType("INT32", np.dtype(np.int32)),
    "tensor(int64)": DType("INT64", np.dtype(np.int64)),
    "tensor(uint8)": DType("UINT8", np.dtype(np.uint8)),
    "tensor(uint16)": DType("UINT16", np.dtype(np.uint16)),
    "tensor(uint32)": DType("UINT32", np.dtype(np.uint32)),
    "tensor(uint64)": DType("UINT64", np.dtype(np.uint64)),
    "tensor(bool)": DType("BOOL", np.dtype(np.bool_)),
    "tensor(string)": DType("BYTES", np.dtype(np.object_)),
}

BY_TRITON: dict[str, DType] = {d.triton: d for d in _TABLE.values()}


def from_ort(ort_type: str) -> DType:
    """Map an ONNX Runtime type string; unsupported types fail the model load, not a request."""
    try:
        return _TABLE[ort_type]
    except KeyError:
        supported = ", ".join(sorted(_TABLE))
        raise ValueError(f"unsupported ONNX tensor type {ort_type!r}; supported: {supported}") from None


# OpenVINO element type names (`ov.Type.get_type_name()`) of the numeric wire types.
_OPENVINO: dict[str, DType] = {
    "f32": BY_TRITON["FP32"], "f16": BY_TRITON["FP16"], "f64": BY_TRITON["FP64"],
    "i8": BY_TRITON["INT8"], "i16": BY_TRITON["INT16"], "i32": BY_TRITON["INT32"], "i64": BY_TRITON["INT64"],
    "u8": BY_TRITON["UINT8"], "u16": BY_TRITON["UINT16"], "u32": BY_TRITON["UINT32"], "u64": BY_TRITON["UINT64"],
    "boolean": BY_TRITON["BOOL"],
}


def from_openvino(type_name: str, tensor: str) -> DType:
    """Map an OpenVINO element type of `tensor`; strings and other types fail the model load.

    OpenVINO 2026.4 reads ONNX string tensors on the CPU, but a process that ran one aborts
    at exit (`free(): invalid pointer`), and the GPU and NPU plugins have none: such a model
    belongs on the onnxruntime backend."""
    if type_name == "string":
        raise ValueError(f"tensor {tensor!r} is a string (BYTES) tensor; the openvino backend serves "
                         f"numeric tensors only: serve this model with --backend onnxruntime")
    try:
        return _OPENVINO[type_name]
    except KeyError:
        supported = ", ".join(sorted(_OPENVINO))
        raise ValueError(f"tensor {tensor!r} has OpenVINO element type {type_name!r}, which the wire "
                         f"protocol cannot carry; supported: {supported}") from None
