"""Small generated models and calibration data for the optimizer tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optimize_models_support as om
import pytest


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    np.savez(d / "tokens.npz", **om.token_batches(24))
    np.savez(d / "images.npz", **om.images(24))
    return {
        "transformer": om.transformer(d / "transformer.onnx"),
        "cnn": om.cnn(d / "cnn.onnx"),
        "cnn_opset11": om.cnn(d / "cnn11.onnx", opset=11),
        "batched": om.batched_matmul(d / "batched.onnx"),
        "tokens": d / "tokens.npz",
        "images": d / "images.npz",
    }
