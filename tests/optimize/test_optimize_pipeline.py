"""The optimizer on small generated models: real onnxruntime quantization, real measurements."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgewise.api.model import AccuracyGate
from edgewise.api.optimization_report import OptimizationReport
from edgewise.optimize import quantize as quantize_mod
from edgewise.optimize.errors import CalibrationMismatch, NotOnnxError
from edgewise.optimize.pipeline import Options, optimize
from edgewise.optimize.target import Target, host_cpu_features

CPU = Target("onnxruntime", "auto")
FAST = Options(measure_latency=False, measure_memory=False)  # measured in the tests that check them


def ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def float_weight_consumers(path: Path) -> set[str]:
    """Nodes whose weight input is still a float initializer (not fed through DequantizeLinear)."""
    model = onnx.load(str(path))
    floats = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) > 1}
    return {n.name for n in model.graph.node if len(n.input) > 1 and n.input[1] in floats}


def test_transformer_auto_on_cpu_is_int8_dynamic_per_channel(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "int8.onnx"
    report = optimize(models["transformer"], out, CPU, calibration=models["tokens"])
    assert report.outcome == "Optimized"
    assert report.precision == "int8" and report.technique == "int8 dynamic (per-channel weights)"
    assert {"DynamicQuantizeLinear", "MatMulInteger"} & ops(out) or "DynamicQuantizeMatMul" in ops(out)
    assert report.size_ratio is not None and report.size_ratio < 0.5  # embedding + MatMul weights in int8
    assert report.agreement is not None and report.agreement.min_cosine >= 0.99
    assert report.agreement.samples == 24 and report.validation == "calibration"
    assert report.accuracy_gate is not None and report.accuracy_gate.passed
    # Measured on this machine, in a separate process for memory.
    assert report.latency is not None and report.latency.before_ms > 0 and report.latency.after_ms > 0
    # The speed measurement is recorded whole: CPU time, rounds, the ratio's interval and the verdict.
    lat = report.latency
    assert lat.clock == "cpu" and lat.threads == 1 and 6 <= lat.rounds <= 20 and lat.runs_per_round >= 1
    assert lat.ratio_low is not None and lat.ratio_high is not None and lat.ratio_low <= lat.ratio <= lat.ratio_high
    assert lat.verdict in ("faster", "slower", "inconclusive") and lat.limit == 1.0
    assert f"{lat.rounds} rounds: {lat.verdict})" in report.summary()
    assert report.memory is not None and report.memory.peak_mib > report.memory.baseline_mib > 10
    assert report.artifact is not None and report.artifact.size_bytes == out.stat().st_size
    assert report.source.sha256 != report.artifact.sha256
    assert report.versions["onnxruntime"] == ort.__version__
    # The artifact serves the same interface.
    ids = np.load(models["tokens"])["ids"][:2]
    assert ort.InferenceSession(str(out)).run(None, {"ids": ids})[0].shape == (2, 64)


def test_cnn_auto_with_calibration_is_static_qdq_with_ends_in_float(models: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "qdq.onnx"
    gate = AccuracyGate(min_cosine=0.98, max_top1_drop_percent=10)
    report = optimize(models["cnn"], out, CPU, calibration=models["images"],
                      options=Options(gate=gate, calibrate_method="minmax", measure_latency=False,
                                      measure_memory=False))
    assert report.outcome == "Optimized", report.message
    assert report.technique.startswith("int8 static QDQ (minmax calibration")
    assert "QuantizeLinear" in ops(out) and "DequantizeLinear" in ops(out)
    assert "ConvInteger" not in ops(out)
    assert report.kept_float == ["conv0", "fc"]  # first and last weight layers
    assert {"conv0", "fc"} <= float_weight_consumers(out)
    assert "conv1" not in float_weight_consumers(out)
    assert report.agreement is not None and report.agreement.top1_agreement_percent is not None


def test_cnn_without_calibration_stays_fp32_and_says_why(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "fp32.onnx"
    report = optimize(models["cnn"], out, CPU, options=FAST)
    assert report.precision == "fp32" and report.outcome == "Optimized"
    assert "ConvInteger" not in ops(out) and "QuantizeLinear" not in ops(out)
    assert any("ConvInteger" in n for n in report.notes)
    assert any("random inputs" in n for n in report.notes)
    assert report.validation == "synthetic"


def test_opset_11_cnn_is_upgraded_before_per_channel_qdq(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "qdq11.onnx"
    report = optimize(models["cnn_opset11"], out, CPU, calibration=models["images"],
                      options=Options(gate=AccuracyGate(min_cosine=0.9, max_top1_drop_percent=50),
                                      measure_latency=False, measure_memory=False))
    assert report.precision == "int8", report.message
    assert "upgraded opset 11 -> 13 for per-channel QDQ" in report.notes
    model = onnx.load(str(out))
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13


def test_tensorrt_target_gets_fp16_with_fp32_interface(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "fp16.onnx"
    report = optimize(models["transformer"], out, Target("triton-tensorrt", "auto"),
                      calibration=models["tokens"], options=FAST)
    assert report.precision == "fp16" and report.outcome == "Optimized"
    model = onnx.load(str(out))
    weights = {t.name: t.data_type for t in model.graph.initializer}
    assert weights["w1_0"] == onnx.TensorProto.FLOAT16
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # keep_io_types
    assert 0.45 < report.size_ratio < 0.6  # type: ignore[operator]


def test_gate_failure_falls_back_to_fp32_with_the_numbers(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "strict.onnx"
    report = optimize(models["transformer"], out, CPU, calibration=models["tokens"],
                      options=Options(gate=AccuracyGate(min_cosine=0.99999999), measure_latency=False,
                                      measure_memory=False))
    assert [a.status for a in report.attempts] == ["rejected", "accepted"]
    assert report.attempts[0].precision == "int8" and "< 0.99999999" in report.attempts[0].message
    assert report.attempts[0].agreement is not None and report.attempts[0].agreement.min_cosine < 0.99999999
    assert report.precision == "fp32" and out.exists()


def test_speed_gate_falls_back_when_asked(models: dict[str, Path], tmp_path: Path) -> None:
    report = optimize(models["transformer"], tmp_path / "speed.onnx", CPU, calibration=models["tokens"],
                      options=Options(max_latency_ratio=1e-6, measure_latency=False, measure_memory=False))
    assert [(a.precision, a.status) for a in report.attempts] == [("int8", "rejected"), ("fp32", "accepted")]
    assert "x the original > 1e-06x" in report.attempts[0].message


def test_a_class_whose_cpu_this_machine_has_gets_the_speed_gate_by_itself(models: dict[str, Path],
                                                                           tmp_path: Path) -> None:
    here = sorted(host_cpu_features() - {"arm64"})[:3]  # a class with a subset of this machine's features
    assert here, "no CPU flags in /proc/cpuinfo"
    like_this_machine = Target("onnxruntime", "auto", frozenset(here + (["arm64"] if "arm64" in
                                                                      host_cpu_features() else [])))
    report = optimize(models["transformer"], tmp_path / "auto.onnx", like_this_machine, calibration=models["tokens"],
                      options=FAST)
    assert any("speed gate 1.0x" in n for n in report.notes), report.notes
    int8 = report.attempts[0]
    assert int8.precision == "int8" and int8.status in ("accepted", "rejected")
    assert "latency" in int8.message and "x the original" in int8.message, int8.message  # it was measured
    # A class this machine says nothing about (another architecture, or unknown features): no gate.
    other = Target("onnxruntime", "auto", frozenset({"arm64"} if "arm64" not in host_cpu_features() else {"avx2"}))
    report = optimize(models["transformer"], tmp_path / "other.onnx", other, calibration=models["tokens"], options=FAST)
    assert not any("speed gate" in n for n in report.notes) and "x the original" not in report.attempts[0].message


def test_gate_failure_without_fallback_rejects_and_writes_nothing(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "rejected.onnx"
    report = optimize(models["transformer"], out, CPU, calibration=models["tokens"],
                      options=Options(gate=AccuracyGate(min_cosine=0.99999999), fallback=False,
                                      measure_latency=False, measure_memory=False))
    assert report.outcome == "OptimizationRejected"
    assert "fallback is off" in report.message and "min cosine" in report.message
    assert report.artifact is None and not out.exists()


def test_an_operator_that_cannot_be_quantized_stays_float_and_is_named(models: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    out = tmp_path / "bmm.onnx"
    # A loose accuracy gate: what is checked here is which node stays float, not int8's accuracy, which
    # depends on the CPU's int8 kernels (min cosine 0.96 on an AMD EPYC, above 0.99 on an Intel Xeon).
    loose = Options(measure_latency=False, measure_memory=False, gate=AccuracyGate(min_cosine=0.9))
    report = optimize(models["batched"], out, CPU, options=loose)
    assert report.precision == "int8", report.attempts
    assert report.kept_float == ["bmm"]
    assert any(n.startswith("node 'bmm' (MatMul) could not be quantized") for n in report.notes)
    assert "bmm" in float_weight_consumers(out) and "proj" not in float_weight_consumers(out)


def test_a_technique_that_fails_falls_back_and_says_which(models: dict[str, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("quantizer exploded")

    monkeypatch.setattr(quantize_mod, "quantize_dynamic", broken)
    report = optimize(models["transformer"], tmp_path / "x.onnx", CPU, options=FAST)
    assert [(a.precision, a.status) for a in report.attempts] == [("int8", "failed"), ("fp32", "accepted")]
    assert "int8 dynamic (per-channel weights) failed: RuntimeError: quantizer exploded" in report.attempts[0].message


def test_user_keep_float_list(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "keep.onnx"
    report = optimize(models["transformer"], out, CPU, calibration=models["tokens"],
                      options=Options(keep_float=("down_proj_1", "NoSuchNode"), measure_latency=False,
                                      measure_memory=False))
    assert "down_proj_1" in report.kept_float
    assert "down_proj_1" in float_weight_consumers(out) and "up_proj_0" not in float_weight_consumers(out)
    assert any("NoSuchNode" in n for n in report.notes)


def test_memory_gate_does_not_fit(models: dict[str, Path], tmp_path: Path) -> None:
    report = optimize(models["transformer"], tmp_path / "m.onnx", CPU, calibration=models["tokens"],
                      options=Options(max_memory_mib=1, node_allocatable_mib=64_000, measure_latency=False))
    assert report.outcome == "DoesNotFit"
    assert report.memory_gate is not None and report.memory_gate.reason == "DoesNotFit"
    assert report.memory_gate.message.startswith("peak memory") and "> slo.maxMemoryMiB 1 MiB" in report.message
    assert report.memory_gate.numbers["maxMemoryMiB"] == 1


@pytest.mark.parametrize("content", [b"", b"definitely not a protobuf \xff\xfe", b"PK\x03\x04 zip"])
def test_not_onnx_is_refused(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    with pytest.raises(NotOnnxError, match="bad.onnx"):
        optimize(bad, tmp_path / "out.onnx", CPU, options=FAST)
    assert not (tmp_path / "out.onnx").exists()


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotOnnxError, match="no such file"):
        optimize(tmp_path / "nope.onnx", tmp_path / "out.onnx", CPU, options=FAST)


def test_calibration_for_another_model_is_refused(models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(CalibrationMismatch, match=r"expected \['x'\], got \['ids'\]"):
        optimize(models["cnn"], tmp_path / "out.onnx", CPU, calibration=models["tokens"], options=FAST)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((4, 1, 32, 32), np.float32))
    with pytest.raises(CalibrationMismatch, match=r"axis 1 is 1, the model wants 3"):
        optimize(models["cnn"], tmp_path / "out.onnx", CPU, calibration=wrong, options=FAST)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"nope")
    with pytest.raises(CalibrationMismatch, match="not a readable .npz"):
        optimize(models["cnn"], tmp_path / "out.onnx", CPU, calibration=garbage, options=FAST)


def test_report_round_trips_as_camel_case_json(models: dict[str, Path], tmp_path: Path) -> None:
    report = optimize(models["transformer"], tmp_path / "r.onnx", CPU, options=FAST)
    path = tmp_path / "report.json"
    report.write(path)
    raw = json.loads(path.read_text())
    assert raw["outcome"] == "Optimized" and "sizeRatio" in raw and "sourceKind" in raw
    assert OptimizationReport.read(path) == report
    assert report.summary().startswith("Optimized: int8 dynamic")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgewise", "optimize", *args], capture_output=True, text=True,
                          timeout=300, check=False)


def test_cli_writes_artifact_and_report(models: dict[str, Path], tmp_path: Path) -> None:
    out, rep = tmp_path / "cli.onnx", tmp_path / "cli.json"
    proc = run_cli(str(models["transformer"]), "--precision", "int8", "--output", str(out), "--report", str(rep),
                   "--calibration", str(models["tokens"]), "--cpu-features", "avx2", "--no-latency",
                   "--min-cosine", "0.98", "--no-speed-gate")  # a toy model's int8 may be slower than fp32
    assert proc.returncode == 0, proc.stderr
    report = json.loads(rep.read_text())
    assert report["precision"] == "int8" and report["target"]["cpuFeatures"] == ["avx2"]
    assert "reduced range" in report["technique"]  # x86 without VNNI
    assert report["accuracyGate"]["numbers"]["gateMinCosine"] == 0.98
    assert out.exists() and "Optimized: int8 dynamic" in proc.stderr


def test_cli_exit_codes_for_bad_input_and_rejection(models: dict[str, Path], tmp_path: Path) -> None:
    bad = run_cli(str(models["tokens"]), "--output", str(tmp_path / "o.onnx"), "--report", str(tmp_path / "b.json"))
    assert bad.returncode == 2 and "InvalidModel" in bad.stderr
    assert json.loads((tmp_path / "b.json").read_text())["outcome"] == "InvalidModel"
    rejected = run_cli(str(models["transformer"]), "--output", str(tmp_path / "r.onnx"), "--min-cosine", "1.0",
                       "--no-fallback", "--no-latency", "--no-memory", "--calibration", str(models["tokens"]))
    assert rejected.returncode == 3, rejected.stderr
    assert json.loads(rejected.stdout)["outcome"] == "OptimizationRejected"
