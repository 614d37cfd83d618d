"""The attestation of an artifact the optimizer derived: an in-toto statement, signed, written beside it.

The statement is built from the optimization report alone (pure: `statement_for`), so it says
exactly what the report says — the source's digest, the technique and precision, the accuracy,
memory and speed gates' numbers, the toolchain — and nothing the report did not measure.
`attest` signs it with the key it is given (a PEM path or PEM bytes: the operator's, from a
Secret) and writes `<artifact>.intoto.json`. Without a key it writes nothing and says so.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from edgewise import contract
from edgewise.api.optimization_report import OptimizationReport
from edgewise.shared.trust.keys import Signer
from edgewise.shared.trust.statement import DerivedModel, Gate, SourceSignature, Statement, sign_statement

log = logging.getLogger(__name__)

# The speed gate's numbers (optimize/gates.py `check_latency`), which the accepted verdict carries
# beside the accuracy gate's (optimize/pipeline.py `_with_speed`): the statement keeps them apart.
_SPEED_KEYS = frozenset({"latencyRatio", "latencyRatioLow", "latencyRatioHigh", "latencyRounds", "maxLatencyRatio"})


@dataclass(frozen=True)
class Attested:
    """What `attest` did: the file it wrote and the key it signed with, or why it wrote nothing."""

    path: Path | None
    key_id: str = ""
    message: str = ""


def edgewise_version() -> str:
    try:
        return version("edgewise")
    except PackageNotFoundError:
        return "unknown"


def statement_for(report: OptimizationReport, source_uri: str,
                  source_signature: SourceSignature | None = None) -> Statement:
    """The statement of the artifact `report` accepted. ValueError for a report that accepted none."""
    if report.outcome != "Optimized" or report.artifact is None or report.source is None or report.target is None:
        raise ValueError(f"only an accepted artifact is attested (the report says {report.outcome})")
    gates: dict[str, Gate] = {}
    if report.accuracy_gate is not None:
        verdict = report.accuracy_gate
        gates["accuracy"] = Gate(verdict.passed, {k: v for k, v in verdict.numbers.items() if k not in _SPEED_KEYS})
        speed = {k: v for k, v in verdict.numbers.items() if k in _SPEED_KEYS}
        if speed:
            gates["speed"] = Gate(verdict.passed, speed)
    if report.memory_gate is not None:
        gates["memory"] = Gate(report.memory_gate.passed, dict(report.memory_gate.numbers))
    elif report.memory is not None:
        gates["memory"] = Gate(True, {"peakMiB": report.memory.peak_mib})
    if "speed" not in gates and report.latency is not None:  # measured, not gated: the numbers all the same
        lat = report.latency
        gates["speed"] = Gate(True, {"latencyRatio": lat.ratio, "beforeMs": lat.before_ms, "afterMs": lat.after_ms})
    return Statement(contract.ONNX_FILENAME, report.artifact.sha256, DerivedModel(
        source_uri=source_uri, source_sha256=report.source.sha256, source_signature=source_signature,
        technique=report.technique, precision=report.precision, runtime=report.target.runtime, gates=gates,
        versions={"edgewise": edgewise_version(), **report.versions}))


def attestation_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + contract.ATTESTATION_SUFFIX)


def attest(artifact: Path, report: OptimizationReport, source_uri: str, signing_key: bytes | str | Path | None,
           source_signature: SourceSignature | None = None) -> Attested:
    """Sign the statement of `artifact` and write it beside it; nothing without a key."""
    if signing_key is None:
        message = "not attested: the optimizer was given no signing key"
        log.info("%s: %s", artifact, message)
        return Attested(None, message=message)
    signer = Signer.load(signing_key)
    envelope = sign_statement(statement_for(report, source_uri, source_signature), signer)
    out = attestation_path(artifact)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_bytes(envelope)
    os.replace(tmp, out)
    return Attested(out, signer.key_id, f"attested with key {signer.key_id[:16]}")


def key_from_env(env: dict[str, str] | os._Environ[str]) -> Path | None:
    """The signing key the operator passed to a job (contract.ATTESTATION_KEY_ENV), if any."""
    value = env.get(contract.ATTESTATION_KEY_ENV, "")
    return Path(value) if value else None


def source_signature_of(job_dir: Path) -> SourceSignature | None:
    """The source's signer as the operator checked it (contract.SOURCE_SIGNATURE_FILE), if it wrote one."""
    path = job_dir / contract.SOURCE_SIGNATURE_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return SourceSignature(str(data["signer"]), str(data["bundleSha256"]))
