"""ONNX Runtime graph optimizations, applied offline so a node loads a ready graph.

`basic` (constant folding, redundant-node elimination, Conv+BN/Add/Mul fusions) keeps
standard ONNX operators, so the result runs on any provider and on TensorRT. `extended`
adds ONNX Runtime's contrib fusions (Gelu, LayerNorm, Attention, QDQ→QLinear), which only
ONNX Runtime runs: use it for onnxruntime targets alone. `all` would add layout
transforms specific to the CPU that ran it and is deliberately not offered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Level = Literal["basic", "extended"]


def optimize_graph(src: Path, dst: Path, level: Level = "basic") -> None:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }[level]
    opts.optimized_model_filepath = str(dst)
    opts.log_severity_level = 3
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
