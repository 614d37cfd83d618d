"""`edgewise optimize`: make the artifact a hardware class needs from an ONNX model, with a report.

Exit codes (the operator's worker maps them to conditions): 0 artifact written (outcome
Optimized), 2 bad input (InvalidModel, CalibrationMismatch), 3 no candidate passed the
accuracy gate (OptimizationRejected; no artifact written), 4 the artifact does not fit the
memory limits (DoesNotFit; artifact and report written), 5 the source model's signature is
refused by the trust policy (--source-signature, --trusted-signers, --require-signed; nothing
written), 1 anything else.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from edgewise import contract
from edgewise.contract import DEFAULT_MAX_SAMPLES
from edgewise.optimize.target import DEVICES, PRECISIONS, QUANTIZATIONS, RUNTIMES

if TYPE_CHECKING:
    from edgewise.api.model import AccuracyGate
    from edgewise.shared.trust.statement import SourceSignature

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_REJECTED, EXIT_DOES_NOT_FIT, EXIT_UNTRUSTED = 0, 1, 2, 3, 4, 5


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("optimize", help="quantize/convert an ONNX model for a hardware class",
                              description=__doc__.splitlines()[0])
    p.add_argument("src", help="source ONNX model")
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--output", "-o", required=True, help="where to write the artifact")
    p.add_argument("--report", help="where to write the JSON report (default: stdout)")
    p.add_argument("--calibration", help=".npz of inputs named after the model's inputs (axis 0: samples)")
    p.add_argument("--validation", help=".npz of validation inputs (default: the calibration data)")
    p.add_argument("--target", choices=RUNTIMES, default="onnxruntime", help="runtime that serves the artifact")
    p.add_argument("--device", choices=DEVICES, default=None,
                   help="OpenVINO device of the class (--target openvino only; default CPU)")
    p.add_argument("--cpu-features", nargs="*", default=[], metavar="FEATURE",
                   help="CPU features of the target, e.g. avx512vnni or arm64 (NFD cpu-cpuid names)")
    p.add_argument("--quantization", choices=QUANTIZATIONS, default="auto")
    p.add_argument("--calibrate-method", choices=["minmax", "percentile", "entropy"], default="minmax",
                   help="static int8 calibration (minmax measured best on PP-OCR; use 8-32 representative samples)")
    p.add_argument("--keep-float", nargs="*", default=[], metavar="NODE",
                   help="node names or operator types (e.g. Softmax) left in float")
    p.add_argument("--keep-first-last", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the first and last weight layers in float (default: yes for static int8)")
    # The gate's defaults are the CRD's (accuracyGate), read when the command runs: registering the
    # command must not import the API types, which the node images do not install.
    p.add_argument("--min-cosine", type=float, help="accuracy gate: minimum cosine similarity (default: 0.99)")
    p.add_argument("--max-top1-drop-percent", type=float,
                   help="accuracy gate for classifiers (default: 1.0 percentage point)")
    p.add_argument("--no-fallback", action="store_true",
                   help="reject instead of falling back to a higher precision when the gate fails")
    p.add_argument("--max-memory-mib", type=float, help="memory gate: the class's slo.maxMemoryMiB")
    p.add_argument("--node-allocatable-mib", type=float, help="memory gate: largest allocatable node memory")
    p.add_argument("--max-latency-ratio", type=float,
                   help="speed gate: reject artifacts slower than this x the original (build on the class's hardware)")
    p.add_argument("--no-speed-gate", action="store_true",
                   help="without --max-latency-ratio, do not reject artifacts slower than the original even "
                        "when this machine has every CPU feature of the target")
    p.add_argument("--max-samples", type=int, default=DEFAULT_MAX_SAMPLES,
                   help="use at most this many calibration samples")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads for measurements")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--attestation-key", type=Path, default=None,
                   help="PEM private key (ECDSA P-256 or Ed25519) to sign the artifact's in-toto attestation, "
                        "written beside it as <output>.intoto.json (docs/security.md); default "
                        f"${contract.ATTESTATION_KEY_ENV}; none: not attested")
    p.add_argument("--source-uri", default="",
                   help="the source's URI as the attestation should name it (default: the path given)")
    trust = p.add_argument_group("source signature", "the source model's OpenSSF model-signing bundle, checked "
                                                     "offline before anything is made (docs/security.md)")
    trust.add_argument("--source-signature", type=Path, default=None, help="the source's model-signing bundle")
    trust.add_argument("--trusted-signers", type=Path, default=None,
                       help="accepted signers' PEM public keys: a file or a directory of *.pem/*.pub")
    trust.add_argument("--trusted-ca", type=Path, action="append", default=[],
                       help="an accepted signers' PEM CA certificate chain (repeatable)")
    trust.add_argument("--require-signed", action="store_true", help="refuse a source without a signature")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import sys

    from edgewise.api.optimization_report import OptimizationReport
    from edgewise.optimize import attestation
    from edgewise.optimize.errors import OptimizeError
    from edgewise.optimize.pipeline import Options, optimize
    from edgewise.optimize.target import Target
    from edgewise.shared import tracing

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    tracing.configure("edgewise-optimize")  # only when OTEL_* asks for traces
    try:
        signed = _source_signature(args)
    except _Untrusted as err:
        print(f"edgewise optimize: {err}", file=sys.stderr)
        return EXIT_UNTRUSTED
    if args.device is not None and args.target != "openvino":
        print(f"edgewise optimize: --device applies to --target openvino only, not {args.target}; leave it out",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        target = Target(runtime=args.target, precision=args.precision,
                        cpu_features=frozenset(args.cpu_features), device=args.device)
        options = Options(
            quantization=args.quantization, keep_float=tuple(args.keep_float),
            keep_first_last=args.keep_first_last, calibrate_method=args.calibrate_method,
            max_samples=args.max_samples, fallback=not args.no_fallback,
            gate=_gate(args.min_cosine, args.max_top1_drop_percent),
            max_memory_mib=args.max_memory_mib, node_allocatable_mib=args.node_allocatable_mib,
            max_latency_ratio=args.max_latency_ratio, auto_speed_gate=not args.no_speed_gate,
            threads=args.threads, measure_latency=not args.no_latency, measure_memory=not args.no_memory)
        report = optimize(args.src, args.output, target, calibration=args.calibration,
                          validation=args.validation, options=options)
        if report.outcome == "Optimized":
            key = args.attestation_key or attestation.key_from_env(os.environ)
            attested = attestation.attest(Path(args.output), report, args.source_uri or str(args.src), key, signed)
            report = report.model_copy(update={"notes": [*report.notes, attested.message]})
    except OptimizeError as err:
        print(f"edgewise optimize: {err.reason}: {err}", file=sys.stderr)
        if args.report:
            OptimizationReport.failed(err.reason, str(err)).write(args.report)
        return EXIT_BAD_INPUT if err.reason in ("InvalidModel", "CalibrationMismatch") else EXIT_FAILED
    if args.report:
        report.write(args.report)
    else:
        print(report.to_json())
    print(report.summary(), file=sys.stderr)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    return {"Optimized": EXIT_OK, "OptimizationRejected": EXIT_REJECTED,
            "DoesNotFit": EXIT_DOES_NOT_FIT}.get(report.outcome, EXIT_FAILED)


def _gate(min_cosine: float | None, max_top1_drop_percent: float | None) -> AccuracyGate:
    """The gate asked for on the command line, the CRD's defaults for what was not given."""
    from edgewise.api.model import AccuracyGate

    given = {"min_cosine": min_cosine, "max_top1_drop_percent": max_top1_drop_percent}
    return AccuracyGate(**{k: v for k, v in given.items() if v is not None})


class _Untrusted(Exception):
    """The source's signature is refused by the trust policy, or the policy cannot be read."""


def _source_signature(args: argparse.Namespace) -> SourceSignature | None:
    """The source's signer when its signature verifies; None for an unsigned source the policy allows;
    _Untrusted (with the policy's words) otherwise. Nothing is checked without any trust flag."""
    if not (args.source_signature or args.trusted_signers or args.trusted_ca or args.require_signed):
        return None
    from edgewise.shared.trust.keys import KeyLoadError
    from edgewise.shared.trust.source_signature import bundle_sha256, evaluate_source, policy_from_files
    from edgewise.shared.trust.statement import SourceSignature

    try:
        policy = policy_from_files(args.trusted_signers, tuple(args.trusted_ca), args.require_signed)
    except KeyLoadError as err:
        raise _Untrusted(str(err)) from err
    decision = evaluate_source(Path(args.src), args.source_signature, policy)
    if not decision.allowed:
        raise _Untrusted(f"{decision.trust}: {decision.message}")
    if args.source_signature is None:
        import sys

        print(f"note: {decision.message}", file=sys.stderr)
        return None
    return SourceSignature(decision.signer, bundle_sha256(args.source_signature))
