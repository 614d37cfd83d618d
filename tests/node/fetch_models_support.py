"""Small ONNX graphs for the fetcher and config tests, built with onnx.helper (no weights downloaded)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # readable by older onnxruntime/TensorRT parsers too


def model_bytes(graph: onnx.GraphProto) -> bytes:
    """The checked, serialized model of `graph` at the opset and IR version every test model uses."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model.SerializeToString()


def mlp(batch: str | int = "N", features: int = 4, classes: int = 3, seed: int = 0) -> bytes:
    """x[batch, features] -> relu(x @ W + b) -> y[batch, classes]; `seed` changes the weights (and digest)."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((features, classes)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["z"]),
         helper.make_node("Relu", ["z"], ["y"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, classes])],
        initializer=[w, b],
    )
    return model_bytes(graph)


def mixed_types() -> bytes:
    """Inputs of several Triton types (INT64 ids, BOOL mask, FP16 scale), two outputs."""
    graph = helper.make_graph(
        [helper.make_node("Cast", ["ids"], ["ids_f"], to=TensorProto.FLOAT16),
         helper.make_node("Mul", ["ids_f", "scale"], ["scores"]),
         helper.make_node("Not", ["mask"], ["inverted"])],
        "mixed",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 8]),
         helper.make_tensor_value_info("mask", TensorProto.BOOL, ["N", 8]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT16, ["N", 1])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT16, ["N", 8]),
         helper.make_tensor_value_info("inverted", TensorProto.BOOL, ["N", 8])],
    )
    return model_bytes(graph)


def dynamic_sequence() -> bytes:
    """tokens[N, S]: a dynamic dimension beyond the batch, which a TensorRT plan cannot take as is."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["tokens"], ["out"])],
        "seq",
        [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["N", "S"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", "S"])],
    )
    return model_bytes(graph)
