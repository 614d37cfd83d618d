"""optimize(): source model + target (+ calibration) → artifact + report, falling back through precisions.

The imperative shell around the pure decisions: load and inspect, choose candidates
(`choose.plan`), make each in turn, measure its agreement with the original on the
validation inputs, and keep the first that passes the accuracy gate (int8 → fp16 → fp32).
The accepted artifact is then measured for latency and peak memory (in a separate process)
and checked against the memory limits. Every gate runs the artifact in the target's runtime:
ONNX Runtime's CPU provider, or OpenVINO Runtime for `openvino` targets (its CPU device here).

The function is synchronous, CPU-heavy and self-contained: the operator calls it in a
worker process with memory and time limits (or in a Job), never in its event loop.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from edgewise.api.model import AccuracyGate
from edgewise.api.optimization_report import (
    AgreementInfo,
    Attempt,
    FileInfo,
    GateInfo,
    LatencyInfo,
    MadeOutcome,
    MemoryInfo,
    OptimizationReport,
    TargetInfo,
)
from edgewise.contract import DEFAULT_MAX_SAMPLES
from edgewise.optimize import (
    choose,
    data,
    evaluate,
    fp16,
    gates,
    graph,
    memory,
    openvino_quantize,
    openvino_session,
    quantize,
)
from edgewise.optimize.choose import CalibrateMethod, Candidate
from edgewise.optimize.errors import CalibrationMismatch, NotOnnxError, TechniqueFailed
from edgewise.optimize.gates import Agreement
from edgewise.optimize.inspect import ModelInfo, analyze, load
from edgewise.optimize.target import Quantization, Target, host_cpu_features
from edgewise.shared import tracing
from edgewise.shared.digest import file_sha256

log = logging.getLogger(__name__)

SYNTHETIC_SAMPLES = 16
MAX_BATCH = 8


@dataclass(frozen=True)
class Options:
    """Everything besides the model and the target; defaults are what `auto` wants."""

    quantization: Quantization = "auto"
    keep_float: tuple[str, ...] = ()  # node names or operator types kept in float
    keep_first_last: bool | None = None  # None: the technique's default (static: keep, dynamic: quantize)
    calibrate_method: CalibrateMethod = "minmax"
    max_samples: int = DEFAULT_MAX_SAMPLES
    fallback: bool = True
    gate: AccuracyGate = field(default_factory=AccuracyGate)
    max_memory_mib: float | None = None  # the class's slo.maxMemoryMiB
    node_allocatable_mib: float | None = None  # largest allocatable memory of the class's nodes
    max_latency_ratio: float | None = None  # speed gate: reject artifacts slower than this × the original
    # Without max_latency_ratio: gate at 1.0 (never slower than the original) when this machine has the
    # class's CPU features, so its measurement speaks for the class (Target.measurable_on).
    auto_speed_gate: bool = True
    threads: int = 2
    measure_latency: bool = True
    measure_memory: bool = True


def _file_info(path: Path) -> FileInfo:
    return FileInfo(path=str(path), sha256=file_sha256(path), size_bytes=path.stat().st_size)


def _versions(target: Target) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    dists = ("onnxruntime", "onnx", "onnxconverter-common") + (("openvino", "nncf") if target.on_openvino else ())
    for dist in dists:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def _name_nodes(model: onnx.ModelProto) -> bool:
    """Give every unnamed node a stable name (the quantizer excludes nodes by name). True if any changed."""
    taken = {n.name for n in model.graph.node if n.name}
    changed = False
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            changed = True
    return changed


def _batch_size(info: ModelInfo) -> int:
    fixed = any(s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0 for s in info.inputs)
    return 1 if fixed else MAX_BATCH


def _agreement_info(a: Agreement) -> AgreementInfo:
    return AgreementInfo(samples=a.samples, min_cosine=a.min_cosine, mean_cosine=a.mean_cosine,
                         max_abs_error=a.max_abs_error, top1_agreement_percent=a.top1_agreement_percent)


def _gate_info(g: gates.GateResult) -> GateInfo:
    return GateInfo(passed=g.passed, reason=g.reason, message=g.message, numbers=g.numbers)


# The device the gates run OpenVINO artifacts on: this machine's CPU (see `_gate_device_note`).
GATE_DEVICE = "CPU"


def _opener(target: Target) -> evaluate.OpenSession:
    """How the gates open an artifact of `target`: in the runtime that will serve it."""
    if target.on_openvino:
        return lambda path, threads: openvino_session.session(path, threads, GATE_DEVICE)
    return evaluate.session


def _gate_device_note(target: Target) -> list[str]:
    if target.on_openvino and target.device != GATE_DEVICE:
        return [f"the gates ran the artifact on OpenVINO's {GATE_DEVICE} device (the optimizer's machine); "
                f"the class's {target.device} device was not measured"]
    return []


def _make(candidate: Candidate, src: Path, out: Path, work: Path, inputs: _Inputs, target: Target,
          options: Options, notes: list[str]) -> list[str]:
    """Write `candidate`'s artifact to `out`; returns the nodes kept in float."""
    info, calibration, probe, batch = inputs.info, inputs.calibration, inputs.validation, inputs.batch
    if candidate.technique == "fp32":
        try:
            graph.optimize_graph(src, out, "basic")
        except Exception as err:  # noqa: BLE001 - the original is a valid fp32 artifact too
            notes.append(f"graph optimization skipped: {err}")
            shutil.copyfile(src, out)
        return []
    if candidate.technique == "fp16":
        fp32 = work / "fp16-src.onnx"
        try:
            graph.optimize_graph(src, fp32, "basic")  # before conversion: CPU casts must not be baked in
        except Exception:  # noqa: BLE001
            fp32 = src
        try:
            return fp16.convert(fp32, out, info, list(options.keep_float), notes)
        except Exception as err:  # noqa: BLE001 - onnxconverter-common raises plain exceptions
            raise TechniqueFailed(f"fp16 conversion failed: {type(err).__name__}: {err}") from err
    if candidate.technique in choose.NNCF_TECHNIQUES:
        return _make_nncf(candidate, src, out, work, inputs, target, options, notes)

    def loads_and_runs(path: Path) -> None:
        # Some quantized kernels reject their inputs only when run (e.g. per-channel batched MatMul).
        evaluate.session(path, options.threads).run(None, next(data.batches(probe, batch)))

    result = quantize.quantize(src, out, work, candidate, list(options.keep_float), calibration, batch,
                               check=loads_and_runs)
    notes.extend(result.notes)
    return result.excluded_nodes


def _make_nncf(candidate: Candidate, src: Path, out: Path, work: Path, inputs: _Inputs, target: Target,
               options: Options, notes: list[str]) -> list[str]:
    """NNCF's int8 for OpenVINO; calibrated on the synthetic inputs when no data was given (transformers only)."""
    calibration = inputs.calibration
    if calibration is None:
        calibration = inputs.validation
        note = "NNCF calibrated on synthetic inputs (no calibration data given); give calibration data"
        if note not in notes:
            notes.append(note)
    reference = openvino_quantize.Reference(inputs.validation, inputs.reference, options.gate.min_cosine,
                                            options.threads)
    kept = openvino_quantize.quantize(src, out, work, candidate, list(options.keep_float), calibration,
                                      target.device, notes, reference)
    openvino_session.session(out, options.threads, GATE_DEVICE).run(None, next(data.batches(inputs.validation,
                                                                                           inputs.batch)))
    return kept


@dataclass(frozen=True)
class _Inputs:
    """The model as loaded and the data it is measured on."""

    model_path: Path  # the source, or a copy with every node named
    info: ModelInfo
    calibration: data.Samples | None
    validation: data.Samples  # what agreement is measured on: validation, calibration or random inputs
    validation_kind: Literal["calibration", "validation", "synthetic"]
    batch: int
    outputs: list[str]  # the float outputs, which agreement compares
    reference: dict[str, np.ndarray]  # the original's outputs on `validation`


@dataclass(frozen=True)
class _Accepted:
    """The candidate that passed every gate, and what it was judged on."""

    candidate: Candidate
    path: Path
    agreement: Agreement
    verdict: gates.GateResult
    kept_float: list[str]
    gate_latency: evaluate.Latency | None  # what the speed gate measured: the report says the same
    open_session: evaluate.OpenSession  # the target's runtime, as the gates ran the artifact


def optimize(src: str | Path, output: str | Path, target: Target, *, calibration: str | Path | None = None,
             validation: str | Path | None = None, options: Options | None = None,
             work_dir: str | Path | None = None) -> OptimizationReport:
    """Make the artifact for `target` from the ONNX model `src` and write it to `output`.

    Returns the report (also when every candidate was rejected: then `outcome` is
    OptimizationRejected and `output` is not written). Raises NotOnnxError for a file that is
    not a loadable ONNX model and CalibrationMismatch for data that does not fit its inputs.
    """
    options = options or Options()
    started = time.monotonic()
    src, output = Path(src), Path(output)
    with tempfile.TemporaryDirectory(prefix="edgewise-opt-", dir=work_dir) as tmp:
        work = Path(tmp)
        inputs = _load_inputs(src, work, calibration, validation, options)
        notes: list[str] = []
        if inputs.validation_kind == "synthetic":
            notes.append("no calibration or validation data: agreement measured on random inputs; "
                         "give calibration data for a meaningful accuracy gate")
        p = choose.plan(target, inputs.info.kind, quantization=options.quantization,
                        has_calibration=inputs.calibration is not None, calibrate_method=options.calibrate_method,
                        fallback=options.fallback, keep_first_last=options.keep_first_last)
        notes.extend(p.notes)
        notes.extend(_gate_device_note(target))
        speed_limit = _speed_limit(target, options, notes)
        attempts: list[Attempt] = []
        accepted = None
        for i, candidate in enumerate(p.candidates):
            if _needless(candidate, attempts):
                notes.append(f"{candidate.technique} not tried: {attempts[-1].technique} was rejected by the "
                             "speed gate, and keeping more layers in float would not make it faster")
                continue
            accepted = _attempt(candidate, work / f"candidate-{i}-{candidate.technique}.onnx", work, inputs,
                                target, options, speed_limit, attempts, notes)
            if accepted is not None:
                break
        common: dict[str, Any] = dict(
            source=_file_info(src), source_kind=inputs.info.kind, source_opset=inputs.info.opset,
            target=TargetInfo(runtime=target.runtime, precision=target.precision,
                              cpu_features=sorted(target.cpu_features)),
            validation=inputs.validation_kind, attempts=attempts, notes=notes, versions=_versions(target))
        if accepted is None:
            return _rejected(attempts, options, started, common)
        return _measured_and_installed(accepted, inputs, output, options, notes, started, common)


def _load_inputs(src: Path, work: Path, calibration: str | Path | None, validation: str | Path | None,
                 options: Options) -> _Inputs:
    """Load and inspect the model, check the data against its inputs, run the original on it."""
    model = load(src)
    model_path = src
    if _name_nodes(model):
        model_path = work / "named.onnx"
        onnx.save(model, str(model_path))
    info = analyze(model)
    del model
    calib = data.check(info, data.load_npz(calibration), options.max_samples) if calibration is not None else None
    valid_kind: Literal["calibration", "validation", "synthetic"]
    if validation is not None:
        valid, valid_kind = data.check(info, data.load_npz(validation), options.max_samples), "validation"
    elif calib is not None:
        valid, valid_kind = calib, "calibration"
    else:
        valid, valid_kind = data.synthesize(info, SYNTHETIC_SAMPLES), "synthetic"
    batch = _batch_size(info)
    outputs = evaluate.float_outputs(info)
    try:
        reference = evaluate.run_all(evaluate.session(model_path, options.threads), valid, batch, outputs)
    except TechniqueFailed as err:
        raise NotOnnxError(f"{src.name}: {err}") from err
    except Exception as err:  # noqa: BLE001 - onnxruntime's run errors (types, shapes)
        raise CalibrationMismatch(f"the original model fails on the given inputs: {err}") from err
    return _Inputs(model_path, info, calib, valid, valid_kind, batch, outputs, reference)


def _speed_limit(target: Target, options: Options, notes: list[str]) -> float | None:
    """The speed gate: the one asked for, else 1.0x when this machine speaks for the class's CPUs."""
    if options.max_latency_ratio is not None:
        return options.max_latency_ratio
    if options.auto_speed_gate and target.measurable_on(host_cpu_features()):
        notes.append("speed gate 1.0x: this machine has every CPU feature of the class, so an artifact "
                     "that is slower here is not shipped")
        return 1.0
    return None


def _needless(candidate: Candidate, attempts: list[Attempt]) -> bool:
    """Accuracy-aware quantization answers an accuracy failure only: after a speed rejection it is skipped."""
    if candidate.technique != "nncf-accuracy-control" or not attempts:
        return False
    last = attempts[-1]
    return last.technique.startswith("nncf-ptq") and last.status == "rejected" and last.message.startswith("latency")


def _attempt(candidate: Candidate, out: Path, work: Path, inputs: _Inputs, target: Target, options: Options,
             speed_limit: float | None, attempts: list[Attempt], notes: list[str]) -> _Accepted | None:
    """Make one candidate and judge it; its Attempt is appended either way. The accepted one, or None.

    Its span carries the gates' numbers (edgewise.gate.*), so a trace shows why a technique lost.
    """
    with tracing.span("optimize.attempt", {"edgewise.technique": candidate.describe(),
                                           "edgewise.precision": candidate.precision}) as span:
        open_session = _opener(target)
        try:
            kept = _make(candidate, inputs.model_path, out, work, inputs, target, options, notes)
            got = evaluate.run_all(open_session(out, options.threads), inputs.validation, inputs.batch,
                                   inputs.outputs)
            agreement = evaluate.agreement(inputs.reference, got, inputs.info.classifier_outputs)
        except Exception as err:  # noqa: BLE001 - any failure of one technique moves on to the next
            message = str(err) if isinstance(err, TechniqueFailed) else f"{type(err).__name__}: {err}"
            attempts.append(Attempt(technique=candidate.describe(), precision=candidate.precision, status="failed",
                                    message=message[:1000]))
            log.info("%s failed: %s", candidate.describe(), message)
            span.set_attribute("edgewise.status", "failed")
            span.set_attribute("edgewise.message", message[:1000])
            return None
        verdict = gates.check_accuracy(agreement, options.gate)
        if not verdict.passed and candidate.technique == "fp32" and out.exists():
            # Graph optimization moved the numbers: ship the original bytes instead.
            shutil.copyfile(inputs.model_path, out)
            verdict = gates.check_accuracy(Agreement(agreement.samples, 1.0, 1.0, 0.0,
                                                     100.0 if agreement.top1_agreement_percent else None), options.gate)
            notes.append("graph-optimized fp32 drifted from the original; serving the original")
        gate_latency = None
        if verdict.passed and speed_limit is not None and candidate.technique != "fp32":
            gate_latency = evaluate.compare_latency(inputs.model_path, out, inputs.validation, 1, limit=speed_limit,
                                                    open_session=open_session)
            verdict = _with_speed(verdict, gates.check_latency(gate_latency.speed, speed_limit))
        attempts.append(Attempt(technique=candidate.describe(), precision=candidate.precision,
                                status="accepted" if verdict.passed else "rejected",
                                message=verdict.message, agreement=_agreement_info(agreement)))
        span.set_attribute("edgewise.status", attempts[-1].status)
        span.set_attribute("edgewise.reason", verdict.reason)
        for key, value in verdict.numbers.items():
            if value is not None:
                span.set_attribute(f"edgewise.gate.{key}", value)
        if not verdict.passed:
            return None
        return _Accepted(candidate, out, agreement, verdict, kept, gate_latency, open_session)


def _with_speed(accuracy: gates.GateResult, speed: gates.GateResult) -> gates.GateResult:
    """One verdict for both gates; either way it says what the speed gate measured."""
    numbers = accuracy.numbers | speed.numbers
    if speed.passed:
        return gates.GateResult(True, accuracy.reason, f"{accuracy.message}; {speed.message}", numbers)
    return gates.GateResult(False, speed.reason, f"{speed.message} ({accuracy.message})", numbers)


def _rejected(attempts: list[Attempt], options: Options, started: float, common: dict[str, Any]
              ) -> OptimizationReport:
    last = attempts[-1] if attempts else None
    return OptimizationReport(
        outcome="OptimizationRejected", precision="", technique=last.technique if last else "",
        message="no artifact passed the accuracy gate" + ("" if options.fallback else " and fallback is off")
                + (f": {last.message}" if last else ""),
        agreement=last.agreement if last else None, duration_seconds=time.monotonic() - started, **common)


def _measured_and_installed(accepted: _Accepted, inputs: _Inputs, output: Path, options: Options,
                            notes: list[str], started: float, common: dict[str, Any]) -> OptimizationReport:
    """Measure the accepted artifact's latency and peak memory, gate the memory, and install it."""
    cand, out = accepted.candidate, accepted.path
    latency = _latency(accepted, inputs, options, notes) if options.measure_latency else None
    mem = memory_gate = None
    if options.measure_memory:
        runtime = common["target"].runtime
        m = memory.measure(out, next(data.batches(inputs.validation, 1)), options.threads, runtime=runtime,
                           device=GATE_DEVICE)
        mem = MemoryInfo.model_validate({"peakMiB": m.peak_mib, "baselineMiB": m.baseline_mib,
                                         "modelMiB": m.model_mib})
        memory_gate = gates.check_memory(m.peak_mib, options.max_memory_mib, options.node_allocatable_mib)
    elif options.max_memory_mib is not None or options.node_allocatable_mib is not None:
        notes.append("memory limits given but memory was not measured: memory gate not checked")

    _install(out, output)
    artifact = _file_info(output)
    fits = memory_gate is None or memory_gate.passed
    outcome: MadeOutcome = "Optimized" if fits else "DoesNotFit"
    message = f"{cand.describe()}: {accepted.verdict.message}" if fits else memory_gate.message  # type: ignore[union-attr]
    return OptimizationReport(
        outcome=outcome, message=message, precision=cand.precision, technique=cand.describe(),
        artifact=artifact, size_ratio=artifact.size_bytes / max(1, common["source"].size_bytes), latency=latency,
        agreement=_agreement_info(accepted.agreement), memory=mem, accuracy_gate=_gate_info(accepted.verdict),
        memory_gate=_gate_info(memory_gate) if memory_gate else None, kept_float=accepted.kept_float,
        duration_seconds=time.monotonic() - started, **common)


def _latency(accepted: _Accepted, inputs: _Inputs, options: Options, notes: list[str]) -> LatencyInfo:
    """The artifact's latency against the original's (the speed gate's measurement when it ran)."""
    cand = accepted.candidate
    lat = accepted.gate_latency or evaluate.compare_latency(inputs.model_path, accepted.path, inputs.validation, 1,
                                                            open_session=accepted.open_session)
    s = lat.speed
    if cand.technique != "fp32" and s.verdict == "slower":
        notes.append(f"{cand.describe()} measured {s.ratio:.2f}x the original's latency on the machine "
                     f"that built it ({s.describe()}); whether it pays off depends on the class's CPU "
                     "(canary latency analysis checks it; a speed gate needs the build to run on that "
                     "hardware)")
    return LatencyInfo(before_ms=s.before_ms, after_ms=s.after_ms, ratio=s.ratio, batch=lat.batch,
                       threads=lat.threads, rounds=s.rounds, ratio_low=s.low, ratio_high=s.high,
                       limit=s.limit, verdict=s.verdict, runs_per_round=lat.runs)


def _install(src: Path, dst: Path) -> None:
    """Copy into place atomically: a reader never sees half an artifact."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
