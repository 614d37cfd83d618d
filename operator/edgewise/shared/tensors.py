"""A graph input or output as an ONNX file declares it: what the optimizer inspects and Triton configs describe.

Kept as declared: the ONNX element type and each dimension's size, or its symbolic name when
dynamic (so messages can say `ids: int64[N, S]`). Views for each reader are derived from it:
`dims` with -1 for dynamic dimensions (Triton, trtexec), `triton_type` (config.pbtxt), `dtype`
(numpy's name). The model server's per-request view, with wire types, is node/serve/model.py's
`ServedTensor`, built from ONNX Runtime's session.

`onnx` is imported only where a value is read from a graph: the node agent's image has no onnx.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

# ONNX TensorProto.DataType value -> Triton DataType name.
ONNX_TO_TRITON = {
    1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16",
    6: "TYPE_INT32", 7: "TYPE_INT64", 8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16",
    11: "TYPE_FP64", 12: "TYPE_UINT32", 13: "TYPE_UINT64", 16: "TYPE_BF16",
}
FLOAT_TYPES = frozenset({1, 10, 11, 16})  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
INT32, INT64 = 6, 7


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output; dims are ints, or strings for symbolic (dynamic) dims."""

    name: str
    elem_type: int  # onnx.TensorProto.DataType
    shape: tuple[int | str, ...] | None  # None: rank unknown

    @classmethod
    def of(cls, value: onnx.ValueInfoProto) -> TensorSpec:
        tt = value.type.tensor_type
        shape: tuple[int | str, ...] | None = None
        if tt.HasField("shape"):
            shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim)
        return cls(value.name, tt.elem_type, shape)

    @property
    def dims(self) -> tuple[int, ...]:
        """The shape with -1 for every dynamic dimension; () when the rank is unknown."""
        return tuple(d if isinstance(d, int) else -1 for d in self.shape or ())

    @property
    def triton_type(self) -> str:
        """Triton's DataType name (TYPE_FP32, …); ValueError for a type Triton has no name for."""
        try:
            return ONNX_TO_TRITON[self.elem_type]
        except KeyError:
            raise ValueError(f"{self.name}: ONNX element type {self.elem_type} has no Triton type") from None

    @property
    def dtype(self) -> str:
        """numpy's name of the element type (float32, int64, …)."""
        from onnx import helper

        return helper.tensor_dtype_to_np_dtype(self.elem_type).name

    @property
    def is_float(self) -> bool:
        return self.elem_type in FLOAT_TYPES

    def describe(self) -> str:
        dims = "?" if self.shape is None else "[" + ", ".join(str(d) for d in self.shape) + "]"
        return f"{self.name}: {self.dtype}{dims}"
