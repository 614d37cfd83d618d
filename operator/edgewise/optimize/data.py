"""Calibration and validation inputs: a `.npz` whose arrays are named after the model's inputs.

Axis 0 of every array counts samples; the other axes are one sample's shape (its batch
dimension included when the model has a fixed batch of 1 is not required: a sample is
`array[i:i+1]`). `check` refuses data that doesn't match the model and says what was
expected and what was given, so a wrong file never silently calibrates a wrong model.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgewise.optimize.errors import CalibrationMismatch
from edgewise.optimize.inspect import ModelInfo
from edgewise.shared.tensors import TensorSpec

Samples = dict[str, np.ndarray]

# Sizes of synthetic inputs for symbolic dims other than the batch (no data given).
SYNTHETIC_SEQUENCE = 16
SYNTHETIC_SPATIAL = 64


def load_npz(path: str | Path) -> Samples:
    try:
        with np.load(str(path), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise CalibrationMismatch(f"{Path(path).name}: not a readable .npz file: {err}") from err


def _kind(dtype: np.dtype) -> str:
    return "float" if np.issubdtype(dtype, np.floating) else "int" if np.issubdtype(dtype, np.integer) \
        else "bool" if dtype == np.bool_ else str(dtype)


def check(info: ModelInfo, arrays: Samples, max_samples: int | None = None) -> Samples:
    """Validate `arrays` against the model's inputs; return them cast to the inputs' dtypes.

    Pure. Raises CalibrationMismatch with expected vs given names, ranks, dims and types.
    """
    expected = {s.name: s for s in info.inputs}
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise CalibrationMismatch(
            f"calibration inputs do not match the model: expected {sorted(expected)}, got {sorted(arrays)}"
            + (f"; missing {missing}" if missing else "") + (f"; unexpected {extra}" if extra else ""))
    counts = {name: a.shape[0] if a.ndim else 0 for name, a in arrays.items()}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise CalibrationMismatch(f"every calibration array needs the same, non-zero number of samples "
                                  f"on axis 0; got {counts}")
    out: Samples = {}
    for name, spec in expected.items():
        arr = arrays[name]
        if spec.shape is not None:
            _check_shape(spec, arr)
        want = np.dtype(spec.dtype)
        if _kind(arr.dtype) != _kind(want):
            raise CalibrationMismatch(f"input {name!r}: expected {want.name}, got {arr.dtype.name}")
        out[name] = arr[:max_samples].astype(want, copy=False)
    return out


def _check_shape(spec: TensorSpec, arr: np.ndarray) -> None:
    shape = spec.shape or ()
    # A sample is arr[i:i+1]: its shape must be the model's with the batch dim replaced by 1.
    if arr.ndim != len(shape):
        raise CalibrationMismatch(
            f"input {spec.name!r}: expected rank {len(shape)} {spec.describe()}, "
            f"got shape {list(arr.shape)} (axis 0 counts samples and stands for the batch dim)")
    for axis, (want, got) in enumerate(zip(shape, arr.shape, strict=True)):
        if axis == 0:
            if isinstance(want, int) and want not in (0, 1):
                raise CalibrationMismatch(
                    f"input {spec.name!r}: the model's batch dim is fixed at {want}; samples are fed one "
                    f"at a time, which needs batch 1 or a dynamic batch")
            continue
        if isinstance(want, int) and want > 0 and want != got:
            raise CalibrationMismatch(
                f"input {spec.name!r}: expected {spec.describe()}, got shape {list(arr.shape)} "
                f"(axis {axis} is {got}, the model wants {want})")


def synthesize(info: ModelInfo, samples: int, seed: int = 0) -> Samples:
    """Random inputs shaped like the model's, when no data is given (agreement is then indicative only).

    Integer inputs that index an embedding table stay below its row count; other integer
    inputs are 0/1 (masks, token types).
    """
    rng = np.random.default_rng(seed)
    out: Samples = {}
    for spec in info.inputs:
        dims = [samples] + [_concrete(d, axis, len(spec.shape or ())) for axis, d in
                            enumerate(spec.shape or ()) if axis > 0]
        dtype = np.dtype(spec.dtype)
        if np.issubdtype(dtype, np.floating):
            out[spec.name] = rng.standard_normal(dims).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            high = info.vocab_sizes.get(spec.name, 2)
            out[spec.name] = rng.integers(0, high, size=dims).astype(dtype)
            if spec.name not in info.vocab_sizes:
                out[spec.name][...] = 1  # masks: attend to everything
        else:
            out[spec.name] = np.ones(dims, dtype=dtype)
    return out


def _concrete(dim: int | str, axis: int, rank: int) -> int:
    if isinstance(dim, int) and dim > 0:
        return dim
    return SYNTHETIC_SPATIAL if rank == 4 and axis >= 2 else SYNTHETIC_SEQUENCE


def batches(arrays: Samples, size: int) -> Iterator[Samples]:
    """Consecutive slices of `size` samples (the last may be shorter)."""
    n = next(iter(arrays.values())).shape[0]
    for start in range(0, n, size):
        yield {name: a[start:start + size] for name, a in arrays.items()}


def count(arrays: Samples) -> int:
    return next(iter(arrays.values())).shape[0]
