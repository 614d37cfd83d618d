"""Pure: which technique makes the artifact for a target and a model, and what to fall back to.

The rules follow what was measured on ONNX Runtime's CPU provider (see docs/optimization.md):
- MatMul-heavy models (transformers) on CPU: int8 dynamic quantization with per-channel
  weights. Per-tensor weights dropped a MiniLM's minimum cosine to ~0.94; per-channel keeps ~0.99.
- Convolutional models on CPU: int8 static QDQ, and only with calibration data. Dynamic int8
  turns Conv into ConvInteger, 7–18× slower than fp32, so it is never used for convolutions
  (dynamic quantization touches MatMul/Gemm only). Without calibration data: fp32, with a note.
- fp16 is slower than fp32 on ONNX Runtime's CPU provider for every model tried: never for CPU.
- GPU targets (Triton with TensorRT or ONNX Runtime): fp16 ONNX; TensorRT builds its plan on
  the device from it. int8 for TensorRT means explicit, symmetric QDQ from calibration data.
- OpenVINO: int8 by NNCF post-training quantization (static QDQ ONNX), for convolutions as for
  transformers (OpenVINO runs both faster in int8 on Intel CPUs, unlike ONNX Runtime's
  ConvInteger); when it fails the accuracy gate, NNCF's accuracy-aware quantization, which
  returns the most sensitive layers to float; then fp16, then fp32.

Candidates come in fallback order (int8 → fp16 → fp32); the pipeline takes the first one
that passes the accuracy gate. fp32 is always last and always passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from edgewise.optimize.inspect import Kind
from edgewise.optimize.target import Quantization, Target

Technique = Literal["int8-dynamic", "int8-static", "nncf-ptq", "nncf-accuracy-control", "fp16", "fp32"]
NNCF_TECHNIQUES = ("nncf-ptq", "nncf-accuracy-control")
CalibrateMethod = Literal["minmax", "percentile", "entropy"]

NOTE_CONV_NO_CALIBRATION = (
    "convolutional model without calibration data: serving fp32. Dynamic int8 would turn Conv into "
    "ConvInteger, which ONNX Runtime runs 7-18x slower; give optimization.calibration for static int8")
NOTE_FP16_ON_CPU = (
    "fp16 is slower than fp32 on ONNX Runtime's CPU provider for every model measured: serving fp32 "
    "instead of fp16 on this CPU runtime")
NOTE_NO_WEIGHTS = "no MatMul/Gemm/Conv weights to quantize: serving fp32"
NOTE_TRT_INT8_NO_CALIBRATION = (
    "TensorRT int8 needs calibrated (QDQ) scales and no calibration data was given: serving fp16")
NOTE_DYNAMIC_SKIPS_CONV = (
    "dynamic int8 quantizes MatMul/Gemm weights only; convolutions stay float (ConvInteger is slow)")
NOTE_QUANTIZATION_NONE = "quantization: none: serving the float model"
NOTE_OPENVINO_DYNAMIC = (
    "quantization: dynamic is ONNX Runtime's technique; OpenVINO's int8 is NNCF's static post-training "
    "quantization, used instead")
NOTE_OPENVINO_CONV_NO_CALIBRATION = (
    "convolutional model without calibration data: no int8 for OpenVINO. NNCF's static quantization "
    "would set activation ranges from random images no camera sees; give optimization.calibration")
NOTE_STATIC_NO_CALIBRATION = "quantization: static needs calibration data: serving fp32"


@dataclass(frozen=True)
class Candidate:
    """One way to make the artifact, with every knob the quantizer needs."""

    technique: Technique
    per_channel: bool = True
    reduce_range: bool = False
    symmetric_activations: bool = False  # TensorRT's explicit quantization wants int8 symmetric
    calibrate_method: CalibrateMethod = "minmax"
    keep_first_last: bool = False  # keep the first and last weight layers in float
    transformer: bool = False  # NNCF's model_type=TRANSFORMER (keeps attention's sensitive ops in float)

    @property
    def precision(self) -> str:
        return {"int8-dynamic": "int8", "int8-static": "int8", "nncf-ptq": "int8", "nncf-accuracy-control": "int8",
                "fp16": "fp16", "fp32": "fp32"}[self.technique]

    def describe(self) -> str:
        if self.technique in NNCF_TECHNIQUES:
            return (f"{self.technique} (int8 QDQ, {'transformer' if self.transformer else 'default'} model type"
                    + (", first/last float" if self.keep_first_last else "") + ")")
        if self.technique == "int8-dynamic":
            return f"int8 dynamic ({'per-channel' if self.per_channel else 'per-tensor'} weights" + (
                ", reduced range" if self.reduce_range else "") + ")"
        if self.technique == "int8-static":
            return (f"int8 static QDQ ({self.calibrate_method} calibration, "
                    f"{'per-channel' if self.per_channel else 'per-tensor'} weights"
                    + (", symmetric activations" if self.symmetric_activations else "") + ")")
        return self.technique


@dataclass(frozen=True)
class Plan:
    """Candidates in fallback order, and notes for the report and the status."""

    candidates: tuple[Candidate, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def first(self) -> Candidate:
        return self.candidates[0]


FP32 = Candidate("fp32")
FP16 = Candidate("fp16")


def _int8_for_cpu(target: Target, kind: Kind, quantization: Quantization, has_calibration: bool,
                  calibrate_method: CalibrateMethod) -> tuple[Candidate | None, list[str]]:
    """The int8 candidate for ONNX Runtime's CPU provider, or None with the reason."""
    # Without VNNI, x86 int8 kernels (VPMADDUBSW) can saturate: ONNX Runtime advises 7-bit weights.
    reduce_range = not target.is_arm64 and not target.has_vnni and bool(target.cpu_features)
    dynamic = Candidate("int8-dynamic", per_channel=True, reduce_range=reduce_range)
    static = Candidate("int8-static", per_channel=True, reduce_range=reduce_range,
                       calibrate_method=calibrate_method, keep_first_last=True)
    if quantization == "none":
        return None, [NOTE_QUANTIZATION_NONE]
    if quantization == "dynamic":
        return dynamic, [NOTE_DYNAMIC_SKIPS_CONV] if kind == "convolutional" else []
    if quantization == "static":
        if not has_calibration:
            return None, ["quantization: static needs calibration data: serving fp32"]
        return static, []
    # auto
    if kind == "transformer":
        return dynamic, []
    if kind == "convolutional":
        return (static, []) if has_calibration else (None, [NOTE_CONV_NO_CALIBRATION])
    return None, [NOTE_NO_WEIGHTS]


def _int8_for_gpu(kind: Kind, quantization: Quantization, has_calibration: bool,
                  calibrate_method: CalibrateMethod) -> tuple[Candidate | None, list[str]]:
    """int8 for TensorRT/GPU: explicit symmetric QDQ from calibration, never dynamic."""
    if quantization == "none":
        return None, [NOTE_QUANTIZATION_NONE]
    if not has_calibration or kind == "other":
        return None, [NOTE_TRT_INT8_NO_CALIBRATION if kind != "other" else NOTE_NO_WEIGHTS]
    return Candidate("int8-static", per_channel=True, symmetric_activations=True,
                     calibrate_method=calibrate_method, keep_first_last=True), []


def _int8_for_openvino(kind: Kind, quantization: Quantization, has_calibration: bool
                       ) -> tuple[list[Candidate], list[str]]:
    """NNCF's post-training quantization, then its accuracy-aware variant, or none with the reason.

    A transformer without calibration data is calibrated on synthetic token ids (ids drawn from
    its vocabulary make embeddings like real text's); a CNN is not calibrated on noise images.
    """
    if quantization == "none":
        return [], [NOTE_QUANTIZATION_NONE]
    notes = [NOTE_OPENVINO_DYNAMIC] if quantization == "dynamic" else []
    if kind == "other":
        return [], notes + [NOTE_NO_WEIGHTS]
    if not has_calibration and quantization == "static":
        return [], notes + [NOTE_STATIC_NO_CALIBRATION]
    if not has_calibration and kind == "convolutional":
        return [], notes + [NOTE_OPENVINO_CONV_NO_CALIBRATION]
    transformer = kind == "transformer"
    return [Candidate("nncf-ptq", transformer=transformer),
            Candidate("nncf-accuracy-control", transformer=transformer)], notes


def plan(target: Target, kind: Kind, *, quantization: Quantization = "auto", has_calibration: bool = False,
         calibrate_method: CalibrateMethod = "minmax", fallback: bool = True,
         keep_first_last: bool | None = None) -> Plan:
    """Candidates for `target` and a model of `kind`, in the order the pipeline tries them.

    `fallback=False` keeps only the first candidate (with OpenVINO: both int8 candidates): an
    artifact failing its gate is then rejected instead of replaced by a more precise one.
    """
    notes: list[str] = []
    chain: list[Candidate] = []
    wanted = target.precision
    if target.on_openvino:
        if wanted in ("int8", "auto"):
            int8s, why = _int8_for_openvino(kind, quantization, has_calibration)
            notes += why
            chain += int8s
        if wanted in ("int8", "fp16", "auto"):
            chain.append(FP16)
        chain.append(FP32)
    elif target.on_cpu:
        if wanted in ("int8", "auto"):
            int8, why = _int8_for_cpu(target, kind, quantization, has_calibration, calibrate_method)
            notes += why
            if int8:
                chain.append(int8)
        elif wanted == "fp16":
            notes.append(NOTE_FP16_ON_CPU)
        chain.append(FP32)  # never fp16 on CPU, not even as a fallback
    else:
        if wanted == "int8":
            int8, why = _int8_for_gpu(kind, quantization, has_calibration, calibrate_method)
            notes += why
            if int8:
                chain.append(int8)
        if wanted in ("int8", "fp16", "auto"):
            chain.append(FP16)
        chain.append(FP32)
    if keep_first_last is not None:
        chain = [replace(c, keep_first_last=keep_first_last) if c.precision == "int8" else c for c in chain]
    if not fallback:  # the leading candidates of the first one's precision
        chain = [c for i, c in enumerate(chain) if all(p.precision == chain[0].precision for p in chain[:i + 1])]
    return Plan(candidates=tuple(chain), notes=tuple(notes))
