"""int8 for OpenVINO: NNCF post-training quantization through NNCF's ONNX backend (a QDQ ONNX artifact).

Why the ONNX backend: OpenVINO runs NNCF's QDQ ONNX faster than the IR NNCF's OpenVINO backend
makes from the same model (docs/optimization.md, "OpenVINO"), and the artifact stays one ONNX
file in the same store and fetch layout as every other.

- `nncf-ptq`: `nncf.quantize`, static, on the calibration samples (batch 1 each), with
  `model_type=TRANSFORMER` for transformers (NNCF then keeps softmax/layer-norm paths in float
  and uses asymmetric activations) and the keep-float nodes as its ignored scope. Other models'
  activation ranges are plain min/max over the calibration samples instead of NNCF's default
  (averaged) estimate: on the PP-OCR detector, 32 held-out rendered pages, that raised the mean
  IoU of the text map from 0.946 to 0.961 and the min cosine from 0.931 to 0.958, at the same
  speed (as min/max was best for ONNX Runtime's static int8 too). NNCF's `mixed` preset was
  more accurate on neither and 1.5x slower; keeping the first and last layers float, neither.
- `nncf-accuracy-control`: `nncf.quantize_with_accuracy_control` (its ONNX backend exists in
  NNCF 3.4), whose metric is the accuracy gate's: per-sample cosine with the fp32 original's
  outputs, the artifact run in OpenVINO as it will be served. NNCF ranks the quantized layers by
  how much they cost that metric and returns the worst to float until the drop is within the gate.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgewise.optimize import openvino_session
from edgewise.optimize.choose import Candidate
from edgewise.optimize.data import Samples, batches, count
from edgewise.optimize.errors import TechniqueFailed
from edgewise.optimize.evaluate import agreement
from edgewise.optimize.inspect import analyze
from edgewise.optimize.quantize import PER_CHANNEL_MIN_OPSET, exclusions, upgrade_opset

log = logging.getLogger(__name__)

# The accuracy-aware search reverts one group of quantizers per iteration and re-validates:
# bounded, so a model that cannot reach the gate costs minutes, not hours.
MAX_RESTORE_ITERATIONS = 12
RANKING_SUBSET = 16  # samples each candidate reversion is ranked on


@dataclass(frozen=True)
class Reference:
    """What the accuracy-aware search measures against: the gate's inputs and the original's outputs."""

    validation: Samples
    outputs: dict[str, np.ndarray]  # the fp32 original's outputs on `validation`, per output name
    min_cosine: float  # the accuracy gate
    threads: int = 2


def nncf_device(device: str | None) -> Any:  # noqa: ANN401 - nncf.TargetDevice
    """NNCF's target device for an OpenVINO device (its quantization rules per device)."""
    import nncf

    return {"CPU": nncf.TargetDevice.CPU, "GPU": nncf.TargetDevice.GPU,
            "NPU": nncf.TargetDevice.NPU}.get(device or "", nncf.TargetDevice.ANY)


def quantize(src: Path, dst: Path, work: Path, candidate: Candidate, keep_float: list[str],
             calibration: Samples, device: str | None, notes: list[str],
             reference: Reference | None = None) -> list[str]:
    """Write the int8 QDQ ONNX made by `candidate` (an NNCF technique) to `dst`; returns the weight nodes left float.

    `reference` is needed by `nncf-accuracy-control` only.
    """
    import nncf

    try:
        model_in = upgrade_opset(src, work / "nncf-opset.onnx", PER_CHANNEL_MIN_OPSET, notes)
    except TechniqueFailed as err:  # NNCF then quantizes per tensor, which still runs
        notes.append(f"{err}; NNCF quantizes per tensor")
        model_in = src
    model = onnx.load(str(model_in))
    info = analyze(model)
    ignored = exclusions(info, candidate, keep_float, notes)
    common: dict[str, Any] = dict(
        subset_size=count(calibration), target_device=nncf_device(device),
        model_type=nncf.ModelType.TRANSFORMER if candidate.transformer else None,
        ignored_scope=nncf.IgnoredScope(names=ignored, validate=False) if ignored else None)
    calib = nncf.Dataset(list(batches(calibration, 1)))
    advanced = None
    if not candidate.transformer:
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        advanced = AdvancedQuantizationParameters(
            activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    try:
        with _nncf_output_to_stderr():
            if candidate.technique == "nncf-ptq":
                quantized = nncf.quantize(model, calib, advanced_parameters=advanced, **common)
            elif candidate.technique == "nncf-accuracy-control":
                if reference is None:
                    raise ValueError("nncf-accuracy-control needs the validation reference")
                quantized = _with_accuracy_control(model, calib, reference, work,
                                                   common | {"advanced_quantization_parameters": advanced}, notes)
            else:
                raise ValueError(f"not an NNCF technique: {candidate.technique}")
    except (TechniqueFailed, ValueError):
        raise
    except Exception as err:  # noqa: BLE001 - NNCF raises its own and onnxruntime's exceptions
        raise TechniqueFailed(f"{candidate.describe()} failed: {type(err).__name__}: {str(err)[:300]}") from err
    kept = float_weight_nodes(quantized, info.weight_nodes)
    if info.weight_nodes and len(kept) == len(info.weight_nodes):  # an "int8" artifact with no int8 weight
        raise TechniqueFailed(f"{candidate.describe()} left every weight layer in float ({len(kept)}): "
                              "no int8 artifact to gate")
    onnx.save(quantized, str(dst))
    return kept


@contextlib.contextmanager
def _nncf_output_to_stderr() -> Iterator[None]:
    """NNCF logs and draws progress bars on stdout, which belongs to the CLI's report: stderr, warnings only."""
    from nncf.common.logging.logger import nncf_logger

    streams = [h for h in nncf_logger.handlers if isinstance(h, logging.StreamHandler)]
    old = [h.setStream(sys.stderr) for h in streams]
    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        nncf_logger.setLevel(level)
        for handler, stream in zip(streams, old, strict=True):
            if stream is not None:
                handler.setStream(stream)


def float_weight_nodes(model: onnx.ModelProto, weight_nodes: Sequence[str]) -> list[str]:
    """Pure: which of `weight_nodes` take their weight as a float tensor, not through DequantizeLinear."""
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    by_name = {n.name: n for n in model.graph.node}
    return [name for name in weight_nodes
            if name in by_name and len(by_name[name].input) > 1 and by_name[name].input[1] not in dequantized]


class _Validator:
    """NNCF's validation_fn: the candidate model compiled by OpenVINO, scored against the fp32 reference.

    NNCF calls it once per data item while ranking, with the same model object: the compiled
    model is kept for the last model seen, so each candidate is compiled once.
    """

    def __init__(self, reference: Reference, work: Path) -> None:
        self._ref = reference
        self._path = work / "nncf-candidate.onnx"
        self._model: onnx.ModelProto | None = None
        self._session: openvino_session.Session | None = None

    def _compiled(self, model: onnx.ModelProto) -> openvino_session.Session:
        if model is not self._model:
            onnx.save(model, str(self._path))
            self._session = openvino_session.session(self._path, self._ref.threads)
            self._model = model
        assert self._session is not None
        return self._session

    def __call__(self, model: onnx.ModelProto, items: Iterable[tuple[int, Samples]]) -> tuple[float, list[float]]:
        sess = self._compiled(model)
        scores: list[float] = []
        for index, feed in items:
            names = list(self._ref.outputs)
            got = dict(zip(names, sess.run(names, feed), strict=True))
            ref = {k: v[index:index + 1] for k, v in self._ref.outputs.items()}
            scores.append(agreement(ref, got).min_cosine)
        return min(scores), scores


def _with_accuracy_control(model: onnx.ModelProto, calib: Any, reference: Reference, work: Path,  # noqa: ANN401
                           common: dict[str, Any], notes: list[str]) -> onnx.ModelProto:
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    items = [(i, feed) for i, feed in enumerate(batches(reference.validation, 1))]
    validation = nncf.Dataset(items, lambda item: item[1])
    validate = _Validator(reference, work)
    initial, _ = validate(model, items)  # OpenVINO's f32 run of the original: a hair below 1.0
    max_drop = max(0.0, initial - reference.min_cosine)
    notes.append(f"accuracy-aware NNCF: metric is the per-sample min cosine with the fp32 original, run in "
                 f"OpenVINO ({initial:.6f} for the original there); allowed drop {max_drop:.6f}, at most "
                 f"{MAX_RESTORE_ITERATIONS} reversions")
    return nncf.quantize_with_accuracy_control(
        model, calib, validation, validate, max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE,
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
            max_num_iterations=MAX_RESTORE_ITERATIONS, ranking_subset_size=min(RANKING_SUBSET, len(items)),
            num_ranking_workers=1),
        **common)
