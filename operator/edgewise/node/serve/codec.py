"""Tensor data on the wire: raw little-endian buffers, length-prefixed BYTES, and JSON lists.

Shared by HTTP (binary-tensor extension and JSON `data`) and gRPC (`raw_*_contents`).
Raw buffers decode with `np.frombuffer`, so a binary input is a view of the request
body, not a copy. Every size mismatch raises an `InferError` naming the expected size.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgewise.node.serve.dtypes import DType
from edgewise.node.serve.errors import InferError, invalid

_LEN = struct.Struct("<I")


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)  # 1 for a scalar's empty shape


def _count_error(name: str, got: str, count: int, shape: Sequence[int]) -> InferError:
    return invalid(f"input '{name}' has {got} BYTES elements, expected {count} for shape {list(shape)}")


def decode_raw(name: str, dtype: DType, shape: Sequence[int], buf: bytes | memoryview) -> np.ndarray:
    """Decode one tensor's raw buffer (little-endian, row-major; BYTES length-prefixed)."""
    count = element_count(shape)
    if dtype.triton == "BYTES":
        return decode_bytes(name, buf, count, shape).reshape(shape)
    expected = count * dtype.itemsize
    if len(buf) != expected:
        raise invalid(f"input '{name}' got {len(buf)} bytes of {dtype.triton} data, expected {expected} "
                      f"for shape {list(shape)}")
    return np.frombuffer(buf, dtype=dtype.wire, count=count).reshape(shape)


def decode_bytes(name: str, buf: bytes | memoryview, count: int, shape: Sequence[int] = ()) -> np.ndarray:
    """Triton's BYTES encoding: each element is a 4-byte little-endian length, then the bytes.

    Stops at the first element beyond `count`: a buffer of millions of empty elements under
    a small declared shape costs no more than the shape says.
    """
    view = memoryview(buf)
    items: list[bytes] = []
    offset = 0
    while offset < len(view):
        if len(items) == count:
            raise _count_error(name, f"more than {count}", count, shape or [count])
        if offset + 4 > len(view):
            raise invalid(f"input '{name}': truncated BYTES element length at offset {offset}")
        (n,) = _LEN.unpack_from(view, offset)
        offset += 4
        if offset + n > len(view):
            raise invalid(f"input '{name}': BYTES element of {n} bytes overruns the buffer "
                          f"at offset {offset}")
        items.append(bytes(view[offset:offset + n]))
        offset += n
    if len(items) != count:
        raise _count_error(name, str(len(items)), count, shape or [count])
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


def encode_raw(arr: np.ndarray, dtype: DType) -> bytes:
    if dtype.triton == "BYTES":
        return encode_bytes(arr)
    return np.ascontiguousarray(arr, dtype=dtype.wire).tobytes()


def encode_bytes(arr: np.ndarray) -> bytes:
    parts: list[bytes] = []
    for item in arr.reshape(-1):
        b = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(_LEN.pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def decode_json(name: str, dtype: DType, shape: Sequence[int], data: Any) -> np.ndarray:
    """Decode JSON `data` (flat or nested lists, row-major) into the declared shape."""
    count = element_count(shape)
    try:
        if dtype.triton == "BYTES":
            flat = _flatten(data)
            arr = np.empty(len(flat), dtype=object)
            arr[:] = [s.encode("utf-8") if isinstance(s, str) else _reject_bytes_item(name, s) for s in flat]
        elif dtype.triton == "BOOL":
            flat = _flatten(data)
            if not all(isinstance(v, bool) for v in flat):
                raise invalid(f"input '{name}' is BOOL: its JSON data must be true/false values")
            arr = np.asarray(flat, dtype=np.bool_)
        else:
            arr = _numbers(name, dtype, data)
    except (TypeError, ValueError, OverflowError, RecursionError) as err:
        raise invalid(f"input '{name}': JSON data is not a list of {dtype.triton} values: {err}") from None
    if arr.size != count:
        raise invalid(f"input '{name}' has {arr.size} elements of JSON data, expected {count} "
                      f"for shape {list(shape)}")
    return arr.reshape(shape)


def _numbers(name: str, dtype: DType, data: Any) -> np.ndarray:
    """JSON numbers as `dtype`, refusing what a cast would silently change: strings ("1.5"),
    booleans, nulls, fractions for integer types, integers out of range."""
    raw = np.asarray(data)  # numpy infers int64, float64, bool, str or object without converting
    if raw.size == 0:
        return raw.astype(dtype.numpy).reshape(-1)
    kind = raw.dtype.kind
    if kind in "iuf" and _has_bool(data):  # numpy reads a `true` among numbers as 1
        raise invalid(f"input '{name}' is {dtype.triton}: its JSON data must be numbers, not true/false")
    if dtype.numpy.kind == "f":
        if kind not in "iuf":
            raise invalid(f"input '{name}' is {dtype.triton}: its JSON data must be numbers")
        return raw.astype(dtype.numpy).reshape(-1)
    if kind in "iu":
        low, high = raw.min(), raw.max()
    else:  # float64 or object: fractions, or integers beyond int64 (fine for UINT64)
        flat = _flatten(data)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
            raise invalid(f"input '{name}' is {dtype.triton}: its JSON data must be integers")
        low, high = min(flat), max(flat)
        raw = np.asarray(flat, dtype=object)
    info = np.iinfo(dtype.numpy)
    if low < info.min or high > info.max:
        raise invalid(f"input '{name}' is {dtype.triton}: its JSON data must be integers from "
                      f"{info.min} to {info.max}, got {low if low < info.min else high}")
    return raw.astype(dtype.numpy).reshape(-1)


def _has_bool(data: Any) -> bool:
    """One pass in C over a flat list (numpy accepted `data`, so its rows are regular)."""
    flat = data if isinstance(data, list) and not isinstance(data[0], list) else _flatten(data)
    return bool in map(type, flat)


def _reject_bytes_item(name: str, value: Any) -> bytes:
    raise invalid(f"input '{name}' is BYTES: its JSON data must be strings, got {type(value).__name__}")


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def encode_json(name: str, arr: np.ndarray, dtype: DType) -> list[Any]:
    """A flat JSON list, as Triton returns it; BYTES must be UTF-8 to travel as JSON."""
    if dtype.triton == "BYTES":
        try:
            return [b.decode("utf-8") if isinstance(b, bytes) else str(b) for b in arr.reshape(-1)]
        except UnicodeDecodeError:
            raise invalid(f"output '{name}' holds non-UTF-8 bytes; "
                          "request it with binary_data=true") from None
    return arr.reshape(-1).tolist()
