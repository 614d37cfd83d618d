"""What kind of model this is: inputs, opset, and whether its weights sit in MatMuls or convolutions.

The kind decides the int8 technique (see `choose`): dynamic quantization suits
MatMul-heavy models (transformers); convolutional models need static QDQ, because
dynamic int8 turns Conv into ConvInteger, which ONNX Runtime runs 7–18× slower.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import onnx

from edgewise.optimize.errors import NotOnnxError
from edgewise.shared.tensors import TensorSpec

Kind = Literal["transformer", "convolutional", "other"]

MATMUL_OPS = frozenset({"MatMul", "Gemm"})
CONV_OPS = frozenset({"Conv", "ConvTranspose"})
WEIGHT_OPS = MATMUL_OPS | CONV_OPS
# A last node of one of these kinds, with a [batch, classes] float output, makes a classifier.
CLASSIFIER_HEADS = frozenset({"Softmax", "LogSoftmax", "Gemm", "MatMul", "Add"})


@dataclass(frozen=True)
class ModelInfo:
    """Facts about a model that the choices depend on."""

    opset: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    op_counts: dict[str, int]
    matmul_weights: int  # parameters in initializers feeding MatMul/Gemm
    conv_weights: int  # parameters in initializers feeding Conv/ConvTranspose
    weight_nodes: tuple[str, ...]  # names of MatMul/Gemm/Conv nodes with initializer weights, in graph order
    node_ops: dict[str, str] = field(default_factory=dict)  # node name -> op type
    classifier_outputs: tuple[str, ...] = ()
    vocab_sizes: dict[str, int] = field(default_factory=dict)  # int input -> rows of the table it indexes

    @property
    def kind(self) -> Kind:
        """Where most weights are: MatMul/Gemm → transformer (MLP-like too), Conv → convolutional."""
        if self.conv_weights == 0 and self.matmul_weights == 0:
            return "other"
        return "convolutional" if self.conv_weights >= self.matmul_weights else "transformer"

    @property
    def first_last_weight_nodes(self) -> tuple[str, ...]:
        """The precision-sensitive ends of the network: first and last weight-bearing node."""
        if not self.weight_nodes:
            return ()
        return tuple(dict.fromkeys((self.weight_nodes[0], self.weight_nodes[-1])))


def load(path: str | Path) -> onnx.ModelProto:
    """Load and check a model; anything that is not a valid ONNX model raises NotOnnxError."""
    p = Path(path)
    if not p.is_file():
        raise NotOnnxError(f"{p}: no such file")
    try:
        model = onnx.load(str(p), load_external_data=True)
    except Exception as err:  # noqa: BLE001 - protobuf raises several kinds for garbage
        raise NotOnnxError(f"{p.name} is not an ONNX model: {type(err).__name__}: {err}") from err
    if not model.graph.node or not model.opset_import:
        raise NotOnnxError(f"{p.name} is not an ONNX model: no graph nodes or no opset")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise NotOnnxError(f"{p.name} is not a valid ONNX model: {str(err).splitlines()[0]}") from err
    return model


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    return TensorSpec.of(value)


def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def analyze(model: onnx.ModelProto) -> ModelInfo:
    """Pure: read the facts off a loaded model."""
    graph = model.graph
    init_sizes = {t.name: _numel(t.dims) for t in graph.initializer}
    init_dims = {t.name: tuple(t.dims) for t in graph.initializer}
    # Constant nodes hold weights too in some exporters.
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            init_sizes[node.output[0]] = _numel(node.attribute[0].t.dims)
            init_dims[node.output[0]] = tuple(node.attribute[0].t.dims)
    init_names = {t.name for t in graph.initializer}
    graph_inputs = [i for i in graph.input if i.name not in init_names]

    matmul = conv = 0
    weight_nodes: list[str] = []
    node_ops: dict[str, str] = {}
    vocab: dict[str, int] = {}
    input_names = {i.name for i in graph_inputs}
    for node in graph.node:
        node_ops[node.name] = node.op_type
        if node.op_type in WEIGHT_OPS and len(node.input) > 1 and node.input[1] in init_sizes:
            params = init_sizes[node.input[1]]
            if node.op_type in CONV_OPS:
                conv += params
            else:
                matmul += params
            weight_nodes.append(node.name)
        # Gather(table, ids) on a graph input: ids must stay below the table's row count.
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] in input_names \
                and node.input[0] in init_dims and init_dims[node.input[0]]:
            rows = init_dims[node.input[0]][0]
            vocab[node.input[1]] = min(rows, vocab.get(node.input[1], rows))

    producers = {out: node for node in graph.node for out in node.output}
    classifiers = tuple(
        o.name for o in graph.output
        if (spec := _spec(o)).is_float and spec.shape is not None and len(spec.shape) == 2
        and isinstance(spec.shape[1], int) and spec.shape[1] >= 2
        and o.name in producers and producers[o.name].op_type in CLASSIFIER_HEADS
    )
    return ModelInfo(
        opset=opset_of(model),
        inputs=tuple(_spec(i) for i in graph_inputs),
        outputs=tuple(_spec(o) for o in graph.output),
        op_counts=dict(Counter(n.op_type for n in graph.node)),
        matmul_weights=matmul,
        conv_weights=conv,
        weight_nodes=tuple(weight_nodes),
        node_ops=node_ops,
        classifier_outputs=classifiers,
        vocab_sizes=vocab,
    )


def resolve_nodes(info: ModelInfo, names_or_ops: list[str] | tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Map a keep-float list (node names or op types, e.g. `Softmax`) to node names.

    Returns (node names, entries that matched nothing) so the caller can say which were ignored.
    """
    found: list[str] = []
    unknown: list[str] = []
    for entry in names_or_ops:
        if entry in info.node_ops:
            found.append(entry)
        elif matches := [n for n, op in info.node_ops.items() if op == entry]:
            found.extend(matches)
        else:
            unknown.append(entry)
    return list(dict.fromkeys(found)), unknown


def _numel(dims: object) -> int:
    n = 1
    for d in dims:  # type: ignore[attr-defined]
        n *= int(d)
    return n
