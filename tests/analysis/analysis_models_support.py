"""Small generated ONNX models for the analysis tests: a good one, a slow one, a wrong one.

All three map x[N, 64] to y[N, 10]. `slow` computes exactly what `good` computes, plus a
chain of 512x512 matrix products whose result is multiplied by zero and added: same
outputs (the golden check passes), measurably slower (the latency check fails). `wrong`
has good's graph with other weights: as fast and healthy as good, but its outputs differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgewise.devcluster import demo_models
from edgewise.devcluster.demo_models import FEATURES


def good(model_dir: Path) -> Path:
    """`model_dir`/model.onnx with the good model; returns `model_dir`."""
    demo_models.good(model_dir / "model.onnx")
    return model_dir


def wrong(model_dir: Path) -> Path:
    demo_models.wrong(model_dir / "model.onnx")
    return model_dir


def slow(model_dir: Path) -> Path:
    demo_models.slow(model_dir / "model.onnx")
    return model_dir


def golden_inputs(samples: int = 8, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((samples, FEATURES)).astype(np.float32)


def write_golden(path: Path, model_dir: Path | None = None, samples: int = 8) -> Path:
    """A golden .npz: inputs `x`, plus `expected__y` computed locally when a model is given."""
    x = golden_inputs(samples)
    arrays = {"x": x}
    if model_dir is not None:
        session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
        arrays["expected__y"] = session.run(["y"], {"x": x})[0]
    np.savez(path, **arrays)
    return path
