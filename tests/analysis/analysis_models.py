"""Small generated ONNX models for the analysis tests: a good one, a slow one, a wrong one.

All three map x[N, 64] to y[N, 10]. `slow` computes exactly what `good` computes, plus a
chain of 512x512 matrix products whose result is multiplied by zero and added: same
outputs (the golden check passes), measurably slower (the latency check fails). `wrong`
has good's graph with other weights: as fast and healthy as good, but its outputs differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

FEATURES, HIDDEN, CLASSES = 64, 32, 10
OPSET, IR_VERSION = 17, 8
SLOW_WIDTH, SLOW_DEPTH = 512, 16  # ~4.6 GFLOP per request: ~40 ms on one core


def _weights(seed: int) -> list[TensorProto]:
    rng = np.random.default_rng(seed)
    return [
        numpy_helper.from_array(rng.standard_normal((FEATURES, HIDDEN)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.standard_normal(HIDDEN).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((HIDDEN, CLASSES)).astype(np.float32), "W2"),
        numpy_helper.from_array(rng.standard_normal(CLASSES).astype(np.float32), "b2"),
    ]


def _mlp_nodes(out: str) -> list[onnx.NodeProto]:
    return [
        helper.make_node("MatMul", ["x", "W1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "W2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], [out]),
    ]


def _burn_nodes(into: str, out: str) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    """Nodes computing `out = into + 0 * sum(tanh(... tanh(outer(x P) W) ... W))`.

    The chain depends on the input, so ONNX Runtime cannot fold it away; tanh keeps it
    finite, so multiplying by zero leaves `into` unchanged.
    """
    rng = np.random.default_rng(99)
    inits = [
        numpy_helper.from_array(rng.standard_normal((FEATURES, SLOW_WIDTH)).astype(np.float32) / 8, "P"),
        numpy_helper.from_array(
            (rng.standard_normal((SLOW_WIDTH, SLOW_WIDTH)) / np.sqrt(SLOW_WIDTH)).astype(np.float32), "Wb"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "P"], ["p"]),  # [N, W]
        helper.make_node("Transpose", ["p"], ["pt"], perm=[1, 0]),  # [W, N]
        helper.make_node("MatMul", ["pt", "p"], ["z0"]),  # [W, W], input-dependent
    ]
    for i in range(SLOW_DEPTH):
        nodes += [helper.make_node("MatMul", [f"z{i}", "Wb"], [f"m{i}"]),
                  helper.make_node("Tanh", [f"m{i}"], [f"z{i + 1}"])]
    nodes += [
        helper.make_node("ReduceSum", [f"z{SLOW_DEPTH}"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", [into, "nothing"], [out]),
    ]
    return nodes, inits


def _save(nodes: list[onnx.NodeProto], inits: list[TensorProto], name: str, path: Path) -> Path:
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", CLASSES])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path / "model.onnx")
    return path


def good(path: Path) -> Path:
    return _save(_mlp_nodes("y"), _weights(1), "good", path)


def wrong(path: Path) -> Path:
    return _save(_mlp_nodes("y"), _weights(2), "wrong", path)


def slow(path: Path) -> Path:
    burn, burn_inits = _burn_nodes("y_fast", "y")
    return _save(_mlp_nodes("y_fast") + burn, _weights(1) + burn_inits, "slow", path)


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
