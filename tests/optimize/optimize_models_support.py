"""Small ONNX models for the optimizer tests, built with onnx.helper (no weights downloaded).

- `transformer`: token ids → embedding (Gather) → two attention-free "blocks" of MatMul/Gelu-ish
  layers with residuals and LayerNormalization → mean-pooled sentence vector. MatMul-heavy.
- `cnn`: image → Conv/Relu stack → GlobalAveragePool → Gemm → Softmax class probabilities.
  Conv-heavy, with a classifier head, so top-1 agreement applies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
VOCAB = 200
HIDDEN = 64
SEQ = 12


def _save(graph: onnx.GraphProto, path: Path, opset: int = OPSET) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _w(rng: np.random.Generator, name: str, *shape: int, scale: float | None = None) -> onnx.TensorProto:
    scale = scale if scale is not None else 1.0 / np.sqrt(shape[0])
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def transformer(path: Path, layers: int = 2, seed: int = 0) -> Path:
    """ids[N, S] (int64) → embeddings → `layers` × (LayerNorm(x + W2·relu(W1·x))) → mean → vec[N, HIDDEN]."""
    rng = np.random.default_rng(seed)
    inits = [_w(rng, "embedding", VOCAB, HIDDEN, scale=1.0),
             numpy_helper.from_array(np.ones(HIDDEN, np.float32), "ln_scale"),
             numpy_helper.from_array(np.zeros(HIDDEN, np.float32), "ln_bias")]
    nodes = [helper.make_node("Gather", ["embedding", "ids"], ["h0"], name="embed")]
    x = "h0"
    for i in range(layers):
        inits += [_w(rng, f"w1_{i}", HIDDEN, 4 * HIDDEN), _w(rng, f"w2_{i}", 4 * HIDDEN, HIDDEN)]
        nodes += [
            helper.make_node("MatMul", [x, f"w1_{i}"], [f"up{i}"], name=f"up_proj_{i}"),
            helper.make_node("Relu", [f"up{i}"], [f"act{i}"], name=f"act_{i}"),
            helper.make_node("MatMul", [f"act{i}", f"w2_{i}"], [f"down{i}"], name=f"down_proj_{i}"),
            helper.make_node("Add", [x, f"down{i}"], [f"res{i}"], name=f"residual_{i}"),
            helper.make_node("LayerNormalization", [f"res{i}", "ln_scale", "ln_bias"], [f"h{i + 1}"],
                             name=f"norm_{i}", axis=-1),
        ]
        x = f"h{i + 1}"
    nodes.append(helper.make_node("ReduceMean", [x], ["vec"], name="pool", axes=[1], keepdims=0))
    graph = helper.make_graph(
        nodes, "tiny-transformer",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "S"])],
        [helper.make_tensor_value_info("vec", TensorProto.FLOAT, ["N", HIDDEN])],
        initializer=inits)
    return _save(graph, path)


def cnn(path: Path, channels: int = 16, classes: int = 10, size: int | str = "H", opset: int = OPSET,
        seed: int = 0) -> Path:
    """x[N, 3, H, W] → 3 × Conv+Relu → GlobalAveragePool → Flatten → Gemm → Softmax → probs[N, classes]."""
    rng = np.random.default_rng(seed)
    inits = []
    nodes = []
    x, cin = "x", 3
    for i in range(3):
        inits += [_w(rng, f"conv{i}_w", channels, cin, 3, 3, scale=np.sqrt(2.0 / (cin * 9))),
                  numpy_helper.from_array((rng.standard_normal(channels) * 0.1).astype(np.float32), f"conv{i}_b")]
        nodes += [helper.make_node("Conv", [x, f"conv{i}_w", f"conv{i}_b"], [f"c{i}"], name=f"conv{i}",
                                   pads=[1, 1, 1, 1], strides=[2, 2] if i else [1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        x, cin = f"r{i}", channels
    inits += [_w(rng, "fc_w", classes, channels, scale=4.0), numpy_helper.from_array(
        np.zeros(classes, np.float32), "fc_b")]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"),
              helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
              helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1)]
    width = size if isinstance(size, int) else "W"
    graph = helper.make_graph(
        nodes, "tiny-cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, width])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes])],
        initializer=inits)
    return _save(graph, path, opset)


def token_batches(samples: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"ids": rng.integers(0, VOCAB, size=(samples, SEQ)).astype(np.int64)}


def images(samples: int, size: int = 32, seed: int = 1) -> dict[str, np.ndarray]:
    """Smooth-ish images with structure (gradients plus blobs), not white noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((samples, 3, size, size), np.float32)
    for i in range(samples):
        for c in range(3):
            cy, cx = rng.uniform(0, 1, 2)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) * rng.uniform(5, 30))
            out[i, c] = rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy + 2 * blob - 0.5
    return {"x": out}


def batched_matmul(path: Path, seed: int = 0) -> Path:
    """x[N, 32] → MatMul 32×48 → Reshape [N, 2, 3, 8] → MatMul with 3-D weights [2, 8, 4] (`bmm`).

    ONNX Runtime quantizes `bmm` per channel without complaint, then its DynamicQuantizeMatMul
    kernel refuses the per-channel zero points of 3-D weights when run: an operator that
    can't be quantized, found only by running the result.
    """
    rng = np.random.default_rng(seed)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W1"], ["h"], name="proj"),
         helper.make_node("Reshape", ["h", "shape"], ["h3"], name="split"),
         helper.make_node("MatMul", ["h3", "W2"], ["y"], name="bmm")],
        "batched",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 3, 4])],
        initializer=[_w(rng, "W1", 32, 48), numpy_helper.from_array(np.array([-1, 2, 3, 8], np.int64), "shape"),
                     _w(rng, "W2", 2, 8, 4)])
    return _save(graph, path)
