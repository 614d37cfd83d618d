"""Pure choices of the optimizer: which technique per target and model, and the fallback chain."""

from __future__ import annotations

import itertools

import pytest

from edgewise.optimize import choose
from edgewise.optimize.target import PRECISIONS, QUANTIZATIONS, RUNTIMES, Target, host_cpu_features

KINDS = ("transformer", "convolutional", "other")


def techniques(plan: choose.Plan) -> list[str]:
    return [c.technique for c in plan.candidates]


def test_cpu_auto_transformer_is_dynamic_per_channel_then_fp32() -> None:
    plan = choose.plan(Target("onnxruntime", "auto"), "transformer")
    assert techniques(plan) == ["int8-dynamic", "fp32"]
    assert plan.first.per_channel is True  # per-tensor dropped MiniLM's min cosine to ~0.94
    assert plan.first.keep_first_last is False


def test_cpu_auto_cnn_with_calibration_is_static_qdq_keeping_ends_in_float() -> None:
    plan = choose.plan(Target("onnxruntime", "int8"), "convolutional", has_calibration=True,
                       calibrate_method="entropy")
    assert techniques(plan) == ["int8-static", "fp32"]
    assert plan.first.calibrate_method == "entropy"
    assert plan.first.keep_first_last is True
    assert plan.first.symmetric_activations is False


def test_cpu_auto_cnn_without_calibration_is_fp32_with_a_note() -> None:
    plan = choose.plan(Target("onnxruntime", "auto"), "convolutional", has_calibration=False)
    assert techniques(plan) == ["fp32"]
    assert plan.notes == (choose.NOTE_CONV_NO_CALIBRATION,)
    assert "ConvInteger" in plan.notes[0]


@pytest.mark.parametrize(("runtime", "precision", "has_calibration"), list(itertools.product(
    RUNTIMES, PRECISIONS, [False, True])))
def test_auto_never_quantizes_convolutions_dynamically(runtime: str, precision: str,
                                                       has_calibration: bool) -> None:
    plan = choose.plan(Target(runtime, precision), "convolutional", quantization="auto",  # type: ignore[arg-type]
                       has_calibration=has_calibration)
    assert "int8-dynamic" not in techniques(plan)


@pytest.mark.parametrize(("precision", "quantization", "kind", "has_calibration"), list(itertools.product(
    PRECISIONS, QUANTIZATIONS, KINDS, [False, True])))
def test_cpu_never_gets_fp16_and_always_ends_on_fp32(precision: str, quantization: str, kind: str,
                                                    has_calibration: bool) -> None:
    plan = choose.plan(Target("onnxruntime", precision), kind, quantization=quantization,  # type: ignore[arg-type]
                       has_calibration=has_calibration)
    assert "fp16" not in techniques(plan)
    assert techniques(plan)[-1] == "fp32"


@pytest.mark.parametrize(("runtime", "precision", "kind", "has_calibration"), list(itertools.product(
    [r for r in RUNTIMES if r != "onnxruntime"], PRECISIONS, KINDS, [False, True])))
def test_gpu_targets_never_get_dynamic_int8(runtime: str, precision: str, kind: str,
                                            has_calibration: bool) -> None:
    plan = choose.plan(Target(runtime, precision), kind, has_calibration=has_calibration)  # type: ignore[arg-type]
    assert "int8-dynamic" not in techniques(plan)
    assert techniques(plan)[-1] == "fp32"


def test_explicit_fp16_on_cpu_serves_fp32_and_says_why() -> None:
    plan = choose.plan(Target("onnxruntime", "fp16"), "transformer")
    assert techniques(plan) == ["fp32"]
    assert plan.notes == (choose.NOTE_FP16_ON_CPU,)


def test_tensorrt_auto_is_fp16_then_fp32() -> None:
    assert techniques(choose.plan(Target("triton-tensorrt", "auto"), "transformer")) == ["fp16", "fp32"]
    assert techniques(choose.plan(Target("triton-tensorrt", "fp16"), "convolutional")) == ["fp16", "fp32"]


def test_tensorrt_int8_needs_calibration_and_is_symmetric_qdq() -> None:
    with_cal = choose.plan(Target("triton-tensorrt", "int8"), "convolutional", has_calibration=True)
    assert techniques(with_cal) == ["int8-static", "fp16", "fp32"]
    assert with_cal.first.symmetric_activations is True
    without = choose.plan(Target("triton-tensorrt", "int8"), "convolutional", has_calibration=False)
    assert techniques(without) == ["fp16", "fp32"]
    assert without.notes == (choose.NOTE_TRT_INT8_NO_CALIBRATION,)


def test_fp32_target_is_fp32_only() -> None:
    assert techniques(choose.plan(Target("onnxruntime", "fp32"), "transformer")) == ["fp32"]
    assert techniques(choose.plan(Target("triton-tensorrt", "fp32"), "transformer")) == ["fp32"]


def test_quantization_modes_on_cpu() -> None:
    cpu = Target("onnxruntime", "int8")
    assert techniques(choose.plan(cpu, "transformer", quantization="none")) == ["fp32"]
    static = choose.plan(cpu, "transformer", quantization="static", has_calibration=True)
    assert techniques(static) == ["int8-static", "fp32"]
    no_cal = choose.plan(cpu, "transformer", quantization="static", has_calibration=False)
    assert techniques(no_cal) == ["fp32"] and "calibration" in no_cal.notes[0]
    forced = choose.plan(cpu, "convolutional", quantization="dynamic")
    assert techniques(forced) == ["int8-dynamic", "fp32"]
    assert forced.notes == (choose.NOTE_DYNAMIC_SKIPS_CONV,)


def test_model_without_weights_is_fp32() -> None:
    plan = choose.plan(Target("onnxruntime", "auto"), "other")
    assert techniques(plan) == ["fp32"] and plan.notes == (choose.NOTE_NO_WEIGHTS,)


def test_no_fallback_keeps_only_the_first_candidate() -> None:
    plan = choose.plan(Target("triton-tensorrt", "int8"), "convolutional", has_calibration=True,
                       fallback=False)
    assert techniques(plan) == ["int8-static"]


def test_keep_first_last_override_applies_to_int8_only() -> None:
    plan = choose.plan(Target("onnxruntime", "auto"), "transformer", keep_first_last=True)
    assert plan.first.keep_first_last is True
    assert plan.candidates[-1] == choose.FP32


@pytest.mark.parametrize(("features", "reduce"), [
    ({"avx2", "fma"}, True),  # x86 without VNNI: 7-bit weights avoid VPMADDUBSW saturation
    ({"avx2", "AVX512_VNNI"}, False),
    ({"feature.node.kubernetes.io/cpu-cpuid.AVXVNNI"}, False),
    ({"arm64"}, False),
    (set(), False),  # unknown CPU: ORT's default
])
def test_reduce_range_follows_cpu_features(features: set[str], reduce: bool) -> None:
    plan = choose.plan(Target("onnxruntime", "int8", frozenset(features)), "transformer")
    assert plan.first.reduce_range is reduce


def test_target_validates_and_normalizes() -> None:
    with pytest.raises(ValueError, match="unknown runtime"):
        Target("tensorflow", "int8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown precision"):
        Target("onnxruntime", "int4")  # type: ignore[arg-type]
    t = Target("onnxruntime", "int8", frozenset({"cpu-cpuid.AVX512_VNNI", "AVX2"}))
    assert t.cpu_features == {"avx512vnni", "avx2"} and t.has_vnni
    assert t.key() == "onnxruntime/int8/avx2,avx512vnni"
    assert Target().key() == "onnxruntime/auto/-"


def test_candidate_descriptions_name_the_technique() -> None:
    assert choose.Candidate("int8-dynamic").describe() == "int8 dynamic (per-channel weights)"
    assert "per-tensor" in choose.Candidate("int8-dynamic", per_channel=False).describe()
    assert "entropy" in choose.Candidate("int8-static", calibrate_method="entropy").describe()
    assert choose.Candidate("fp16").precision == "fp16"


def test_host_cpu_features_read_as_nfd_names() -> None:
    x86 = "processor : 0\nflags : fpu avx2 avx512f avx512_vnni amx_int8\n"
    assert host_cpu_features(x86, "x86_64") == {"fpu", "avx2", "avx512f", "avx512vnni", "amxint8"}
    arm = "processor : 0\nFeatures : fp asimd asimddp i8mm\n"
    assert host_cpu_features(arm, "aarch64") == {"fp", "asimd", "asimddp", "i8mm", "arm64"}


def test_a_measurement_speaks_for_a_class_only_with_its_features_and_architecture() -> None:
    host = frozenset({"avx2", "avx512f", "avx512vnni"})
    assert Target("onnxruntime", "int8", frozenset({"AVX2", "AVX512VNNI"})).measurable_on(host)
    assert not Target("onnxruntime", "int8", frozenset({"avx2", "amxint8"})).measurable_on(host)  # lacks one
    assert not Target("onnxruntime", "int8", frozenset()).measurable_on(host)  # nothing known of the class
    assert not Target("onnxruntime", "int8", frozenset({"arm64", "asimd"})).measurable_on(host | {"asimd"})
    assert not Target("triton-tensorrt", "int8", frozenset({"avx2"})).measurable_on(host)  # not ORT on the CPU


def test_the_optimizer_targets_the_runtimes_a_profile_can_name() -> None:
    from edgewise.api.profile import HardwareClass

    assert set(RUNTIMES) == set(HardwareClass.model_fields["runtime"].annotation.__args__)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="unknown runtime"):
        Target("triton-onnx", "fp16")  # type: ignore[arg-type] - a fetch layout, not a runtime a class runs
