"""fp16 ONNX for GPU targets (TensorRT builds its plan from it on the device), via onnxconverter-common.

Inputs and outputs stay fp32 (`keep_io_types`) so clients and the accuracy gate see the same
interface as the original. A graph output that other nodes also consume (MiniLM's token
embeddings feed its pooling) is first split off through an Identity: otherwise the converter
casts it back to fp32 for the output and its fp16 consumers get fp32 (a type error at load).
`Cast` joins the op block list when the graph has Casts: exported
transformers cast masks and shapes, and converting those Casts' targets to fp16 produces
type errors (measured on MiniLM).
"""

from __future__ import annotations

from pathlib import Path

import onnx

from edgewise.optimize.inspect import ModelInfo, resolve_nodes


def block_lists(info: ModelInfo, keep_float: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(op types, node names) left in fp32, and keep-float entries that matched nothing. Pure."""
    from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST

    ops = list(DEFAULT_OP_BLOCK_LIST)
    if info.op_counts.get("Cast") or info.kind == "transformer":
        ops.append("Cast")
    nodes, unknown = resolve_nodes(info, keep_float)
    return ops, nodes, unknown


def detach_outputs(model: onnx.ModelProto) -> int:
    """Give every graph output that nodes also consume its own Identity; returns how many. Mutates `model`."""
    outputs = {o.name for o in model.graph.output}
    consumed = {i for n in model.graph.node for i in n.input} & outputs
    for name in sorted(consumed):
        internal = f"{name}__edgewise_internal"
        for node in model.graph.node:
            node.input[:] = [internal if i == name else i for i in node.input]
            node.output[:] = [internal if o == name else o for o in node.output]
        model.graph.node.append(onnx.helper.make_node("Identity", [internal], [name], name=f"{name}__output"))
    return len(consumed)


def convert(src: Path, dst: Path, info: ModelInfo, keep_float: list[str], notes: list[str]) -> list[str]:
    """Write the fp16 model to `dst`; returns the nodes kept in fp32 by name."""
    from onnxconverter_common import float16

    ops, nodes, unknown = block_lists(info, keep_float)
    if unknown:
        notes.append(f"keep-float entries matching no node or operator type: {unknown}")
    model = onnx.load(str(src))
    detach_outputs(model)
    converted = float16.convert_float_to_float16(
        model, keep_io_types=True, op_block_list=ops, node_block_list=nodes or None)
    onnx.save(converted, str(dst))
    return nodes
