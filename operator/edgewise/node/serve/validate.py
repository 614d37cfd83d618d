"""Check a request's declared tensors against the model before any data is decoded.

Pure functions over `ModelSpec`; every message names what the model expects, so a client
can fix its request from the error alone. Both protocols call these with the
(name, datatype, shape) triples their headers declare.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgewise.node.serve.errors import InferError, Status, invalid
from edgewise.node.serve.model import ModelSpec, format_shape

Declared = tuple[str, str, Sequence[int]]  # (name, datatype, shape) as the request states them


def unknown_model(name: str, served: str) -> InferError:
    return InferError(Status.NOT_FOUND, f"Request for unknown model: '{name}' is not found; "
                      f"this server serves '{served}'")


def check_model(spec: ModelSpec, name: str, version: str) -> None:
    if name != spec.name:
        raise unknown_model(name, spec.name)
    if version not in ("", spec.version):
        raise InferError(Status.NOT_FOUND, f"Request for unknown model: '{name}' version {version} "
                         f"is not found; available versions: {spec.version}")


def expected_inputs(spec: ModelSpec) -> str:
    return ", ".join(t.describe() for t in spec.inputs)


def check_inputs(spec: ModelSpec, declared: Sequence[Declared]) -> int:
    """Validate names, datatypes and shapes; return the request's batch size (1 if unbatched)."""
    seen: set[str] = set()
    batch_sizes: set[int] = set()
    for name, datatype, shape in declared:
        t = spec.input(name)
        if t is None:
            raise invalid(f"unexpected inference input '{name}' for model '{spec.name}'; "
                          f"expected inputs: {expected_inputs(spec)}")
        if name in seen:
            raise invalid(f"input '{name}' appears more than once in the request")
        seen.add(name)
        if datatype != t.datatype:
            raise invalid(f"inference input '{name}' data-type is '{datatype}', "
                          f"but model '{spec.name}' expects '{t.datatype}'")
        if not _shape_fits(t.shape, shape):
            raise invalid(f"unexpected shape for input '{name}' for model '{spec.name}'. "
                          f"Expected {format_shape(t.shape)}, got {format_shape(shape)}")
        if spec.max_batch_size > 0:
            batch_sizes.add(shape[0])
    missing = [t for t in spec.inputs if t.name not in seen]
    if missing:
        raise invalid(f"expected {len(spec.inputs)} inputs but got {len(seen)} inputs for model "
                      f"'{spec.name}'; missing: {', '.join(t.describe() for t in missing)}")
    if spec.max_batch_size == 0:
        return 1
    if len(batch_sizes) != 1:
        raise invalid(f"inputs of model '{spec.name}' disagree on the batch size (dim 0): "
                      f"{sorted(batch_sizes)}")
    batch = batch_sizes.pop()
    if not 1 <= batch <= spec.max_batch_size:
        raise invalid(f"inference request batch-size must be between 1 and {spec.max_batch_size} "
                      f"for '{spec.name}', got {batch}")
    return batch


def _shape_fits(expected: Sequence[int], got: Sequence[int]) -> bool:
    """Same rank, fixed dims equal, and no negative dims in a request (-1 is the model's wildcard)."""
    return len(expected) == len(got) and all(
        g >= 0 and (e == -1 or e == g) for e, g in zip(expected, got, strict=True))


def check_outputs(spec: ModelSpec, names: Sequence[str]) -> None:
    for name in names:
        if spec.output(name) is None:
            expected = ", ".join(f"'{t.name}'" for t in spec.outputs)
            raise invalid(f"unexpected inference output '{name}' for model '{spec.name}'; "
                          f"the model's outputs are: {expected}")
