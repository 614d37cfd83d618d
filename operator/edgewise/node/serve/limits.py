"""Bounds on the work one inference request may cause, checked before its data is decoded.

What a request costs is known from what it declares: the size of its JSON, and each input's
datatype and shape. Both front ends check those against two settings before touching the
tensor data, so a request of 16 million empty BYTES elements, or 60 MiB of JSON numbers, is
refused in microseconds instead of costing a minute of CPU and gigabytes of memory:

- `max_elements` (`--max-request-elements`): tensor elements per request, all inputs together;
- `max_memory` (`--max-request-memory`): an upper estimate of the memory decoding allocates.

The estimates are deliberately pessimistic (worst cases measured on CPython 3.11), so a
request under the limit cannot exceed it by much however it is shaped. Over-limit requests
get 413 / RESOURCE_EXHAUSTED with a message naming the limit and the flag that raises it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgewise.node.serve.codec import element_count
from edgewise.node.serve.errors import InferError, Status
from edgewise.node.serve.model import ModelSpec

DEFAULT_MAX_ELEMENTS = 1 << 24  # 16 Mi: one 64 MiB FP32 tensor, the default body limit's worth
DEFAULT_MAX_MEMORY = 256 << 20

# One BYTES element on its way through: the decoded bytes object and its slot, the str copy
# ONNX Runtime is fed, ONNX Runtime's own string, and the same again for an output string
# and its encoding. Measured: a request of 1M one-byte strings through an Identity model
# raised the server's peak memory by 340 MB.
BYTES_ELEMENT_COST = 384
# Parsing JSON allocates up to this many bytes per byte of text: `[],` (3 bytes) becomes an
# empty list (56 B) and a pointer (8 B); `{},` an empty dict (64 B) and a pointer.
JSON_COST = 24


@dataclass(frozen=True)
class Limits:
    max_elements: int = DEFAULT_MAX_ELEMENTS
    max_memory: int = DEFAULT_MAX_MEMORY

    def __post_init__(self) -> None:
        if self.max_elements < 1 or self.max_memory < 1:
            raise ValueError(f"request limits must be positive, got max_elements={self.max_elements} "
                             f"and max_memory={self.max_memory}")

    @property
    def max_json_bytes(self) -> int:
        return self.max_memory // JSON_COST


def too_large(message: str) -> InferError:
    return InferError(Status.TOO_LARGE, message)


def check_json(size: int, limits: Limits) -> None:
    """Refuse JSON whose parse alone could exceed the memory limit, before parsing it."""
    if size > limits.max_json_bytes:
        raise too_large(
            f"the request's JSON is {size} bytes; parsing JSON takes up to {JSON_COST} times its size "
            f"in memory, so at most {limits.max_json_bytes} bytes of JSON fit the limit of "
            f"{limits.max_memory} bytes per request (--max-request-memory). Send large tensors as "
            "binary data (the binary_data_size parameter; tritonclient's binary_data=True), "
            "or raise --max-request-memory")


def check_declared(spec: ModelSpec, declared: Sequence[tuple[str, str, Sequence[int]]], limits: Limits,
                   body_bytes: int) -> None:
    """Refuse a request whose declared inputs are too many elements or too much memory.

    Call after `validate.check_inputs`: names and datatypes are the model's, dims are >= 0.
    """
    elements = 0
    memory = body_bytes  # the request itself stays in memory until it is answered
    for name, _, shape in declared:
        t = spec.input(name)
        assert t is not None  # check_inputs proved it
        count = element_count(shape)
        elements += count
        memory += count * (BYTES_ELEMENT_COST if t.datatype == "BYTES" else t.dtype.itemsize)
    if elements > limits.max_elements:
        shapes = ", ".join(f"'{name}' {list(shape)}" for name, _, shape in declared)
        raise too_large(f"the request declares {elements} tensor elements ({shapes}), over the limit of "
                        f"{limits.max_elements} elements per request (--max-request-elements); "
                        "send smaller batches")
    if memory > limits.max_memory:
        raise too_large(f"decoding the request would take about {memory} bytes of memory ({body_bytes} "
                        f"bytes of request, {BYTES_ELEMENT_COST} bytes per BYTES element, the tensor "
                        f"size otherwise), over the limit of {limits.max_memory} bytes per request "
                        "(--max-request-memory); send smaller batches")


DEFAULT = Limits()
