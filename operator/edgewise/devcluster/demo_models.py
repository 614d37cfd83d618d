"""Small ONNX models for the demo (and tests): a classifier, the same one slowed down, a wrong one.

All map x[N, 64] → y[N, 10]. `slow` computes exactly what `good` computes plus a
chain of 512×512 products multiplied by zero: same outputs, ~40 ms slower per
request — the regression a canary must catch. `wrong` has other weights: fast,
healthy and wrong — only a golden-input check catches it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgewise.shared.digest import file_sha256

FEATURES, HIDDEN, CLASSES = 64, 32, 10
SLOW_WIDTH, SLOW_DEPTH = 512, 16


def _weights(seed: int) -> list[TensorProto]:
    rng = np.random.default_rng(seed)
    return [
        numpy_helper.from_array(rng.standard_normal((FEATURES, HIDDEN)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.standard_normal(HIDDEN).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((HIDDEN, CLASSES)).astype(np.float32), "W2"),
        numpy_helper.from_array(rng.standard_normal(CLASSES).astype(np.float32), "b2"),
    ]


def _mlp(out: str) -> list[onnx.NodeProto]:
    return [
        helper.make_node("MatMul", ["x", "W1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "W2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], [out]),
    ]


def _burn(into: str, out: str) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    # Input-dependent (so not constant-folded), finite (tanh), and multiplied by zero: pure cost.
    rng = np.random.default_rng(99)
    inits = [
        numpy_helper.from_array(rng.standard_normal((FEATURES, SLOW_WIDTH)).astype(np.float32) / 8, "P"),
        numpy_helper.from_array((rng.standard_normal((SLOW_WIDTH, SLOW_WIDTH)) / np.sqrt(SLOW_WIDTH))
                                .astype(np.float32), "Wb"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
    ]
    nodes = [helper.make_node("MatMul", ["x", "P"], ["p"]), helper.make_node("Transpose", ["p"], ["pt"], perm=[1, 0]),
             helper.make_node("MatMul", ["pt", "p"], ["z0"])]
    for i in range(SLOW_DEPTH):
        nodes += [helper.make_node("MatMul", [f"z{i}", "Wb"], [f"m{i}"]),
                  helper.make_node("Tanh", [f"m{i}"], [f"z{i + 1}"])]
    nodes += [helper.make_node("ReduceSum", [f"z{SLOW_DEPTH}"], ["total"], keepdims=0),
              helper.make_node("Mul", ["total", "zero"], ["nothing"]),
              helper.make_node("Add", [into, "nothing"], [out])]
    return nodes, inits


def _save(nodes: list[onnx.NodeProto], inits: list[TensorProto], name: str, path: Path) -> Path:
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", FEATURES])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", CLASSES])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def good(path: Path) -> Path:
    return _save(_mlp("y"), _weights(1), "good", path)


def wrong(path: Path) -> Path:
    return _save(_mlp("y"), _weights(2), "wrong", path)


def slow(path: Path) -> Path:
    burn, inits = _burn("y_fast", "y")
    return _save(_mlp("y_fast") + burn, _weights(1) + inits, "slow", path)


def golden(path: Path, samples: int = 8, seed: int = 5) -> Path:
    """Golden inputs `x` (no stored outputs: the canary is compared with a stable pod)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=np.random.default_rng(seed).standard_normal((samples, FEATURES)).astype(np.float32))
    return path


def sha256(path: Path) -> str:
    return file_sha256(path)
