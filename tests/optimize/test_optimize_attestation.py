"""`edgewise optimize --attestation-key`: a real int8 artifact of a small transformer, attested beside it; the
attestation verifies against the key's public half and binds the source's digest and the accuracy gate's numbers."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import optimize_models_support as om

from edgewise.shared.trust import dsse
from edgewise.shared.trust.keys import TrustedKeys, generate_ec, private_pem
from edgewise.shared.trust.statement import DerivedModel, Statement
from edgewise.shared.trust.verify import Expected, NodeTrust, Reason, check


def _optimize(tmp_path: Path, *extra: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    src = om.transformer(tmp_path / "src.onnx", layers=1)
    out = tmp_path / "int8.onnx"
    proc = subprocess.run([sys.executable, "-m", "edgewise", "optimize", str(src), "-o", str(out), "--precision",
                           "int8", "--no-latency", "--no-memory", "--no-speed-gate", "--threads", "1",
                           "--report", str(tmp_path / "report.json"), *extra],
                          capture_output=True, text=True, timeout=300, check=False)
    return src, proc


def test_the_artifact_is_attested_with_the_key_given(tmp_path: Path) -> None:
    signer = generate_ec()
    key = tmp_path / "key.pem"
    key.write_bytes(private_pem(signer))
    src, proc = _optimize(tmp_path, "--attestation-key", str(key), "--source-uri", "https://models.example/t.onnx")
    assert proc.returncode == 0, proc.stderr
    artifact, envelope = tmp_path / "int8.onnx", (tmp_path / "int8.onnx.intoto.json").read_bytes()
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    source = hashlib.sha256(src.read_bytes()).hexdigest()
    verdict = check(digest, envelope, NodeTrust(TrustedKeys.of([signer.public_key()])), Expected(digest, source))
    assert verdict.reason is Reason.VERIFIED, verdict.message
    statement = Statement.parse(dsse.Envelope.parse(envelope).payload)
    assert isinstance(statement.predicate, DerivedModel)
    assert statement.predicate.source_uri == "https://models.example/t.onnx"
    assert statement.predicate.precision == "int8" and statement.predicate.gates["accuracy"].passed
    assert 0.9 < statement.predicate.gates["accuracy"].numbers["minCosine"] <= 1.0
    assert statement.predicate.versions["onnxruntime"] and statement.predicate.versions["onnx"]
    assert f"attested with key {signer.key_id[:16]}" in proc.stderr


def test_without_a_key_nothing_is_attested_and_it_says_so(tmp_path: Path) -> None:
    _, proc = _optimize(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "int8.onnx").exists() and not (tmp_path / "int8.onnx.intoto.json").exists()
    assert "not attested: the optimizer was given no signing key" in proc.stderr
