"""The optimizer's openvino target on generated models: real NNCF, real OpenVINO Runtime, real onnxruntime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import optimize_models_support as om
import pytest

from edgewise.api.model import AccuracyGate
from edgewise.optimize import memory, openvino_session, pipeline
from edgewise.optimize.pipeline import Options, optimize
from edgewise.optimize.target import Target
from edgewise.shared.trust import dsse
from edgewise.shared.trust.keys import generate_ec, private_pem
from edgewise.shared.trust.statement import DerivedModel, Statement

OV_CPU = Target("openvino", "auto")
FAST = Options(measure_latency=False, measure_memory=False)
CNN_GATE = AccuracyGate(min_cosine=0.98, max_top1_drop_percent=10)


def ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def quantized_weight_nodes(path: Path) -> set[str]:
    """Nodes whose weight input comes out of a DequantizeLinear (an int8 weight)."""
    model = onnx.load(str(path))
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in model.graph.node if len(n.input) > 1 and n.input[1] in dequantized}


def test_transformer_gets_an_nncf_int8_qdq_onnx_that_openvino_runs(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ov-int8.onnx"
    report = optimize(models["transformer"], out, OV_CPU, calibration=models["tokens"], options=FAST)
    assert report.outcome == "Optimized", report.message
    assert report.precision == "int8"
    assert report.technique == "nncf-ptq (int8 QDQ, transformer model type)"
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops(out)
    assert "MatMulInteger" not in ops(out) and "DynamicQuantizeLinear" not in ops(out)  # static, not ORT's dynamic
    assert {"up_proj_0", "down_proj_0", "up_proj_1", "down_proj_1"} <= quantized_weight_nodes(out)
    assert report.size_ratio is not None and report.size_ratio < 0.5  # int8 weights stored as int8
    assert report.agreement is not None and report.agreement.min_cosine >= 0.99
    assert report.accuracy_gate is not None and report.accuracy_gate.passed
    assert report.target is not None and report.target.runtime == "openvino"
    assert report.versions["openvino"] == "2026.4.1"  # pinned in constraints.txt
    assert report.versions["nncf"] == "3.4.0"
    # An ONNX file OpenVINO compiles as it is; it serves the original's interface.
    ids = np.load(models["tokens"])["ids"][:2]
    assert openvino_session.session(out, 1).run(["vec"], {"ids": ids})[0].shape == (2, 64)


def test_a_cnn_whose_plain_int8_fails_the_gate_gets_accuracy_aware_int8(models: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    out = tmp_path / "ov-ac.onnx"
    report = optimize(models["cnn"], out, OV_CPU, calibration=models["images"],
                      options=Options(gate=CNN_GATE, measure_latency=False, measure_memory=False))
    assert report.outcome == "Optimized", report.message
    first, second = report.attempts[0], report.attempts[1]
    # Plain PTQ of this CNN (with its large-logit head) loses agreement: min cosine ~0.84 < 0.98.
    assert first.technique.startswith("nncf-ptq") and first.status == "rejected"
    assert first.agreement is not None and first.agreement.min_cosine < 0.98
    assert second.technique.startswith("nncf-accuracy-control") and second.status == "accepted"
    assert report.technique.startswith("nncf-accuracy-control") and report.precision == "int8"
    # The layers NNCF returned to float are named, and the rest stay int8.
    assert report.kept_float and set(report.kept_float) < {"conv0", "conv1", "conv2", "fc"}
    assert quantized_weight_nodes(out) and not set(report.kept_float) & quantized_weight_nodes(out)
    assert report.agreement is not None and report.agreement.min_cosine >= 0.98
    assert any("accuracy-aware NNCF" in n for n in report.notes)


def test_a_strict_gate_falls_back_through_fp16_to_fp32(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ov-fp32.onnx"
    # No two runtimes agree to the last bit: every derived artifact fails min cosine 1.0; fp32 is the original.
    report = optimize(models["cnn"], out, OV_CPU, calibration=models["images"],
                      options=Options(gate=AccuracyGate(min_cosine=1.0), measure_latency=False,
                                      measure_memory=False))
    assert report.outcome == "Optimized" and report.precision == "fp32"
    assert [(a.technique.split(" ")[0], a.status) for a in report.attempts] == [
        ("nncf-ptq", "rejected"), ("nncf-accuracy-control", "failed"), ("fp16", "rejected"), ("fp32", "accepted")]
    # Accuracy-aware NNCF returned every weight layer to float chasing the gate: that is no int8 artifact.
    assert "left every weight layer in float" in report.attempts[1].message
    assert out.read_bytes() == models["cnn"].read_bytes()


def test_a_cnn_without_calibration_gets_no_int8_and_says_why(models: dict[str, Path], tmp_path: Path) -> None:
    report = optimize(models["cnn"], tmp_path / "ov.onnx", OV_CPU, options=FAST)
    assert report.outcome == "Optimized" and report.precision == "fp16"  # fp16 passes a random-input gate
    assert not any(a.technique.startswith("nncf") for a in report.attempts)
    assert any("no int8 for OpenVINO" in n for n in report.notes)


def test_speed_and_memory_are_measured_in_openvino(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ov.onnx"
    report = optimize(models["transformer"], out, OV_CPU, calibration=models["tokens"],
                      options=Options(max_latency_ratio=100.0))  # a limit it passes: the gate runs, not decides
    assert report.outcome == "Optimized", report.message
    lat = report.latency
    assert lat is not None and lat.limit == 100.0 and lat.threads == 1 and lat.verdict == "faster"
    assert report.accuracy_gate is not None and report.accuracy_gate.numbers["maxLatencyRatio"] == 100.0
    assert report.memory is not None and report.memory.peak_mib > report.memory.baseline_mib
    # What the gates opened is an OpenVINO compiled model, on the CPU device, in f32 (not this CPU's bf16).
    sess = pipeline._opener(OV_CPU)(out, 1)  # what the pipeline's gates open for this target
    assert isinstance(sess, openvino_session.Session)
    compiled = sess.compiled
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
    # The memory probe loads OpenVINO: its baseline holds OpenVINO's libraries, not ONNX Runtime's alone.
    sample = {"ids": np.load(models["tokens"])["ids"][:1]}
    probe = ("import sys, edgewise.optimize.memory as m; m.main(sys.argv[1:]); "
             "print(sorted(k for k in sys.modules if k.startswith('openvino'))[:1])")
    child = subprocess.run([sys.executable, "-c", probe,
                            str(out), "--inputs", str(_npz(tmp_path, sample)), "--runtime", "openvino"],
                           capture_output=True, text=True, check=True)
    assert "'openvino'" in child.stdout.splitlines()[-1]
    assert memory.measure(out, sample, 1, runtime="openvino").peak_mib > 0


def _npz(tmp_path: Path, arrays: dict[str, np.ndarray]) -> Path:
    path = tmp_path / "sample.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def test_cli_target_openvino_device_cpu_is_attested_with_runtime_openvino(tmp_path: Path) -> None:
    src, out = om.transformer(tmp_path / "src.onnx", layers=1), tmp_path / "ov.onnx"
    signer = generate_ec()
    (tmp_path / "key.pem").write_bytes(private_pem(signer))
    proc = subprocess.run([sys.executable, "-m", "edgewise", "optimize", str(src), "-o", str(out), "--target",
                           "openvino", "--device", "CPU", "--no-latency", "--no-memory", "--threads", "1",
                           "--attestation-key", str(tmp_path / "key.pem"), "--report", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["technique"].startswith("nncf-ptq") and report["target"]["runtime"] == "openvino"
    statement = Statement.parse(dsse.Envelope.parse((tmp_path / "ov.onnx.intoto.json").read_bytes()).payload)
    assert isinstance(statement.predicate, DerivedModel)
    assert statement.predicate.runtime == "openvino" and statement.predicate.technique.startswith("nncf-ptq")
    assert statement.predicate.versions["openvino"] and statement.predicate.versions["nncf"] == "3.4.0"


@pytest.mark.parametrize("args", [["--target", "onnxruntime", "--device", "GPU"], ["--device", "NPU"]])
def test_cli_device_without_the_openvino_target_is_refused(tmp_path: Path, args: list[str]) -> None:
    src = om.transformer(tmp_path / "src.onnx", layers=1)
    proc = subprocess.run([sys.executable, "-m", "edgewise", "optimize", str(src), "-o", str(tmp_path / "o.onnx"),
                           *args], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "--device applies to --target openvino only" in proc.stderr
    assert not (tmp_path / "o.onnx").exists()
