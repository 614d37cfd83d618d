"""Pure: the openvino target's key and device, where its speed is measurable, and its candidates."""

from __future__ import annotations

import itertools

import pytest

from edgewise.optimize import choose
from edgewise.optimize.target import DEVICES, PRECISIONS, QUANTIZATIONS, Target

HOST = frozenset({"avx2", "avx512f", "avx512vnni"})


def techniques(plan: choose.Plan) -> list[str]:
    return [c.technique for c in plan.candidates]


def test_the_keys_of_existing_runtimes_are_unchanged_and_openvino_names_its_device() -> None:
    # Cache keys of artifacts already made: byte for byte what they were.
    assert Target().key() == "onnxruntime/auto/-"
    assert Target("onnxruntime", "int8", frozenset({"AVX2", "avx512_vnni"})).key() == "onnxruntime/int8/avx2,avx512vnni"
    assert Target("triton-tensorrt", "fp16").key() == "triton-tensorrt/fp16/-"
    assert Target("openvino", "int8", frozenset({"avx2"})).key() == "openvino/int8/avx2/CPU"  # CPU by default
    keys = {Target("openvino", "int8", device=d).key() for d in DEVICES}  # type: ignore[arg-type]
    assert len(keys) == len(DEVICES)  # one artifact per device


def test_a_device_is_for_openvino_only_and_must_be_known() -> None:
    with pytest.raises(ValueError, match="applies to the openvino runtime only"):
        Target("onnxruntime", "int8", device="GPU")
    with pytest.raises(ValueError, match="unknown OpenVINO device 'VPU'"):
        Target("openvino", "int8", device="VPU")  # type: ignore[arg-type]
    assert Target("openvino").device == "CPU" and Target("onnxruntime").device is None


def test_openvino_cpu_classes_are_measurable_like_onnxruntime_and_other_devices_are_not() -> None:
    assert Target("openvino", "int8", frozenset({"avx2", "avx512vnni"})).measurable_on(HOST)
    assert not Target("openvino", "int8", frozenset({"avx2", "amxint8"})).measurable_on(HOST)  # lacks one
    assert not Target("openvino", "int8").measurable_on(HOST)  # nothing known of the class's CPU
    for device in ("GPU", "NPU", "AUTO"):
        assert not Target("openvino", "int8", frozenset({"avx2"}), device=device).measurable_on(HOST)  # type: ignore[arg-type]


def test_openvino_int8_is_nncf_then_accuracy_aware_then_fp16_then_fp32() -> None:
    plan = choose.plan(Target("openvino", "auto"), "convolutional", has_calibration=True)
    assert techniques(plan) == ["nncf-ptq", "nncf-accuracy-control", "fp16", "fp32"]
    assert plan.first.transformer is False
    plan = choose.plan(Target("openvino", "int8"), "transformer")  # calibrated on synthetic token ids
    assert techniques(plan) == ["nncf-ptq", "nncf-accuracy-control", "fp16", "fp32"]
    assert plan.first.transformer is True and plan.first.describe() == "nncf-ptq (int8 QDQ, transformer model type)"
    assert techniques(choose.plan(Target("openvino", "fp16"), "transformer")) == ["fp16", "fp32"]
    assert techniques(choose.plan(Target("openvino", "fp32"), "transformer")) == ["fp32"]


def test_openvino_without_calibration_a_cnn_gets_no_int8() -> None:
    plan = choose.plan(Target("openvino", "auto"), "convolutional", has_calibration=False)
    assert techniques(plan) == ["fp16", "fp32"]
    assert plan.notes == (choose.NOTE_OPENVINO_CONV_NO_CALIBRATION,)


def test_openvino_quantization_modes() -> None:
    ov = Target("openvino", "int8")
    assert techniques(choose.plan(ov, "transformer", quantization="none")) == ["fp16", "fp32"]
    dynamic = choose.plan(ov, "transformer", quantization="dynamic")
    assert techniques(dynamic)[0] == "nncf-ptq" and choose.NOTE_OPENVINO_DYNAMIC in dynamic.notes
    assert techniques(choose.plan(ov, "transformer", quantization="static")) == ["fp16", "fp32"]
    assert techniques(choose.plan(ov, "other")) == ["fp16", "fp32"]


def test_without_fallback_openvino_keeps_both_int8_candidates_and_the_others_their_first() -> None:
    plan = choose.plan(Target("openvino", "int8"), "convolutional", has_calibration=True, fallback=False)
    assert techniques(plan) == ["nncf-ptq", "nncf-accuracy-control"]
    assert techniques(choose.plan(Target("triton-tensorrt", "int8"), "convolutional", has_calibration=True,
                                  fallback=False)) == ["int8-static"]
    assert techniques(choose.plan(Target("onnxruntime", "auto"), "transformer", fallback=False)) == ["int8-dynamic"]


@pytest.mark.parametrize(("precision", "quantization", "kind", "calibrated"), list(itertools.product(
    PRECISIONS, QUANTIZATIONS, ("transformer", "convolutional", "other"), [False, True])))
def test_openvino_never_gets_ort_techniques_and_always_ends_on_fp32(precision: str, quantization: str, kind: str,
                                                                   calibrated: bool) -> None:
    plan = choose.plan(Target("openvino", precision), kind, quantization=quantization,  # type: ignore[arg-type]
                       has_calibration=calibrated)
    assert not {"int8-dynamic", "int8-static"} & set(techniques(plan))
    assert techniques(plan)[-1] == "fp32"
