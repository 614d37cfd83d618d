"""int8 quantization with onnxruntime's tools: dynamic (MatMul/Gemm) and static QDQ (calibrated).

What is done here on purpose, each measured on real models:
- `quant_pre_process` (shape inference + ORT basic optimizations) first; some exporters' graphs
  break symbolic shape inference, so it is retried with `skip_symbolic_shape=True`.
- Per-channel QDQ needs QuantizeLinear's `axis` (opset 13): older models are upgraded first.
- Dynamic quantization never touches Conv: ConvInteger is many times slower than fp32.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx import version_converter

from edgewise.optimize.choose import CalibrateMethod, Candidate
from edgewise.optimize.data import Samples, batches
from edgewise.optimize.errors import TechniqueFailed
from edgewise.optimize.inspect import ModelInfo, analyze, opset_of, resolve_nodes

log = logging.getLogger(__name__)

PER_CHANNEL_MIN_OPSET = 13
# Everything ONNX Runtime quantizes dynamically except Conv. Gather covers embedding tables:
# a transformer's vocabulary embedding is ~2/3 of MiniLM's bytes, so without it int8 is 0.77x, not 0.26x.
DYNAMIC_OPS = ["MatMul", "Gemm", "Gather", "Attention", "LSTM", "EmbedLayerNormalization"]
PERCENTILE = 99.999  # of |activation|; tighter clips outliers that carry signal in detection maps
CALIB_SAMPLES_PER_COLLECT = 8  # bounds the calibrator's memory: it holds every activation of a collection


@dataclass
class QuantizeResult:
    """What a quantization step did, for the report."""

    excluded_nodes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def preprocess(src: Path, dst: Path, notes: list[str]) -> Path:
    """Shape inference and basic graph optimization before quantization; returns the model to quantize.

    Runs with the work directory as cwd: when symbolic shape inference gives up, onnxruntime
    saves its partial model (with a uuid-named external data file) into the current directory.
    The pipeline runs in a worker process of its own, so changing cwd here is safe.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with contextlib.chdir(dst.parent):
        try:
            quant_pre_process(str(src), str(dst))
            return dst
        except Exception as err:  # noqa: BLE001 - symbolic shape inference fails on some exporters' graphs
            log.info("quant_pre_process failed (%s); retrying with skip_symbolic_shape=True", err)
            first = f"{type(err).__name__}: {str(err)[:200]}"
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
            notes.append(f"pre-processing without symbolic shape inference (it failed: {first})")
            return dst
        except Exception as err:  # noqa: BLE001
            notes.append(f"pre-processing skipped: it failed twice ({first}; {type(err).__name__}: "
                         f"{str(err)[:200]})")
            return src


def upgrade_opset(src: Path, dst: Path, opset: int, notes: list[str]) -> Path:
    """Convert the model to `opset` (for per-channel QDQ); returns the path to use."""
    model = onnx.load(str(src))
    have = opset_of(model)
    if have >= opset:
        return src
    try:
        converted = version_converter.convert_version(model, opset)
        onnx.checker.check_model(converted)
    except Exception as err:  # noqa: BLE001 - the converter has no adapter for some ops
        raise TechniqueFailed(f"cannot upgrade opset {have} -> {opset} for per-channel QDQ: {err}") from err
    onnx.save(converted, str(dst))
    notes.append(f"upgraded opset {have} -> {opset} for per-channel QDQ")
    return dst


class NpzReader:
    """onnxruntime's CalibrationDataReader over validated calibration arrays, in small batches.

    `__len__`/`set_range` let the calibrator collect in strides (`CalibStridedMinMax`, used by
    every calibration method despite its name): the calibrators keep every intermediate tensor
    of a collection in memory, which for a CNN on 64 images is gigabytes.
    """

    def __init__(self, arrays: Samples, batch_size: int) -> None:
        self._batches = list(batches(arrays, batch_size))
        self.set_range(0, len(self._batches))

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self._batches[start_index:end_index])

    def get_next(self) -> dict | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self.set_range(0, len(self._batches))


def stride_for(batch_count: int, batch_size: int, cap: int = CALIB_SAMPLES_PER_COLLECT) -> int:
    """The largest number of batches per collection that divides `batch_count` and stays under the cap."""
    best = 1
    for stride in range(1, batch_count + 1):
        if batch_count % stride == 0 and stride * batch_size <= cap:
            best = stride
    return best


def _calibrate_method(name: CalibrateMethod):  # noqa: ANN202 - onnxruntime's enum
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[name]


def quantize_dynamic(src: Path, dst: Path, candidate: Candidate, exclude: list[str]) -> None:
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    ort_quantize_dynamic(
        str(src), str(dst), op_types_to_quantize=DYNAMIC_OPS, per_channel=candidate.per_channel,
        reduce_range=candidate.reduce_range, weight_type=QuantType.QInt8, nodes_to_exclude=exclude or None,
        extra_options={"MatMulConstBOnly": True},
    )


def quantize_static(src: Path, dst: Path, candidate: Candidate, exclude: list[str], calibration: Samples,
                    batch_size: int) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    reader = NpzReader(calibration, batch_size)
    extra: dict[str, object] = {"CalibPercentile": PERCENTILE, "CalibTensorRangeSymmetric": False,
                                "CalibStridedMinMax": stride_for(len(reader), batch_size)}
    activation = QuantType.QUInt8
    if candidate.symmetric_activations:  # TensorRT's explicit quantization: int8, zero point 0
        activation = QuantType.QInt8
        extra |= {"ActivationSymmetric": True, "WeightSymmetric": True}
    # The calibrators print progress to stdout, which belongs to the CLI's report: send it to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        ort_quantize_static(
            str(src), str(dst), reader, quant_format=QuantFormat.QDQ,
            per_channel=candidate.per_channel, reduce_range=candidate.reduce_range,
            activation_type=activation, weight_type=QuantType.QInt8, nodes_to_exclude=exclude or None,
            calibrate_method=_calibrate_method(candidate.calibrate_method), extra_options=extra,
        )


def exclusions(info: ModelInfo, candidate: Candidate, keep_float: list[str], notes: list[str]) -> list[str]:
    """Nodes kept in float: the user's list (names or op types), and the first/last weight layers if asked."""
    keep, unknown = resolve_nodes(info, keep_float)
    if unknown:
        notes.append(f"keep-float entries matching no node or operator type: {unknown}")
    if candidate.keep_first_last:
        keep += list(info.first_last_weight_nodes)
    return list(dict.fromkeys(keep))


def quantize(src: Path, dst: Path, work: Path, candidate: Candidate, keep_float: list[str],
             calibration: Samples | None, batch_size: int,
             check: Callable[[Path], None] | None = None) -> QuantizeResult:
    """Make the int8 artifact `dst` from `src` with `candidate`'s technique.

    `check` loads the result (an ORT session); when it or the quantizer fails at a named node,
    that node is kept in float and the step is retried, up to a few times, so one operator
    that can't be quantized does not cost the whole model its int8 artifact.
    """
    result = QuantizeResult()
    model_in = preprocess(src, work / "pre.onnx", result.notes)
    if candidate.technique == "int8-static" and candidate.per_channel:
        model_in = upgrade_opset(model_in, work / "opset.onnx", PER_CHANNEL_MIN_OPSET, result.notes)
    # Names are resolved on the model actually quantized: pre-processing may fuse or drop nodes.
    info = analyze(onnx.load(str(model_in)))
    exclude = exclusions(info, candidate, keep_float, result.notes)
    known = set(info.node_ops)
    for _ in range(4):
        try:
            if candidate.technique == "int8-dynamic":
                quantize_dynamic(model_in, dst, candidate, exclude)
            elif candidate.technique == "int8-static":
                if calibration is None:
                    raise TechniqueFailed("static quantization needs calibration data")
                quantize_static(model_in, dst, candidate, exclude, calibration, batch_size)
            else:
                raise ValueError(f"not an int8 technique: {candidate.technique}")
            if check:
                check(dst)
            break
        except Exception as err:  # noqa: BLE001 - turned into a named-node failure or re-raised
            node = blame(str(err), known - set(exclude))
            if node is None:
                if isinstance(err, TechniqueFailed):
                    raise
                raise TechniqueFailed(f"{candidate.describe()} failed: {type(err).__name__}: "
                                      f"{str(err)[:300]}") from err
            op = info.node_ops.get(node, "?")
            result.notes.append(f"node {node!r} ({op}) could not be quantized: {_first_line(err)}; "
                                f"kept it in float")
            exclude.append(node)
    else:
        raise TechniqueFailed(f"{candidate.describe()}: gave up after keeping {exclude} in float")
    result.excluded_nodes = exclude
    return result


# How ONNX Runtime and its quantizer name nodes in errors: "Name:'x'", "node x", "Node (x)".
_NAMED = re.compile(r"""(?:Name:\s*|name[= ]|node[= ]|Node \(|for node\s+)'?"?([^'"\s)]+)""", re.IGNORECASE)
# Suffixes ONNX Runtime's fusions and the quantizer append to a node's name.
_SUFFIXES = ("_quant", "_QuantizeLinear", "_DequantizeLinear", "_fused", "_MatMulInteger", "_Cast")


def blame(message: str, node_names: set[str]) -> str | None:
    """The original node an ONNX Runtime error names, if any (`bmm_quant` → `bmm`)."""
    for named in _NAMED.findall(message):
        if named in node_names:
            return named
        stripped = named
        for suffix in _SUFFIXES:
            stripped = stripped.removesuffix(suffix)
        if stripped in node_names:
            return stripped
        prefixes = [n for n in node_names if n and named.startswith(n + "_")]
        if prefixes:
            return max(prefixes, key=len)
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    # ORT prefixes its messages with a source path and a C++ signature: keep what follows "was false."
    for marker in (" was false. ", "Status Message: "):
        if marker in text:
            text = text.split(marker)[-1]
    return text[:240]
