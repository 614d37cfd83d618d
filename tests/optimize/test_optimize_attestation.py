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
    src = tmp_path / "src.onnx"
    if not src.exists():  # a test that signed it first keeps its bytes
        om.transformer(src, layers=1)
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


def _sign(model: Path, signer_key: Path, bundle: Path) -> None:
    from model_signing import signing

    signing.Config().use_elliptic_key_signer(private_key=signer_key).sign(model, bundle)


def test_a_signed_source_is_checked_first_and_its_signer_is_bound_into_the_attestation(tmp_path: Path) -> None:
    from edgewise.shared.trust.keys import public_pem
    from edgewise.shared.trust.source_signature import model_signing_hint

    operator, publisher = generate_ec(), generate_ec()
    (tmp_path / "operator.pem").write_bytes(private_pem(operator))
    (tmp_path / "publisher.pem").write_bytes(private_pem(publisher))
    signers = tmp_path / "signers"
    signers.mkdir()
    (signers / "publisher.pub").write_bytes(public_pem(publisher.public_key()))
    src = om.transformer(tmp_path / "src.onnx", layers=1)
    _sign(src, tmp_path / "publisher.pem", tmp_path / "src.sig")
    _, proc = _optimize(tmp_path, "--attestation-key", str(tmp_path / "operator.pem"), "--source-signature",
                        str(tmp_path / "src.sig"), "--trusted-signers", str(signers), "--require-signed")
    assert proc.returncode == 0, proc.stderr
    artifact = (tmp_path / "int8.onnx").read_bytes()
    envelope = (tmp_path / "int8.onnx.intoto.json").read_bytes()
    predicate = Statement.parse(dsse.Envelope.parse(envelope).payload).predicate
    assert isinstance(predicate, DerivedModel) and predicate.source_signature is not None
    assert predicate.source_signature.signer == f"key {model_signing_hint(public_pem(publisher.public_key()))[:16]}"
    assert predicate.source_signature.bundle_sha256 == hashlib.sha256((tmp_path / "src.sig").read_bytes()).hexdigest()
    # A node that requires signed sources takes it, offline, with the operator's public key alone.
    digest, source = hashlib.sha256(artifact).hexdigest(), hashlib.sha256(src.read_bytes()).hexdigest()
    node = NodeTrust(TrustedKeys.of([operator.public_key()]), require_signed_source=True)
    assert check(digest, envelope, node, Expected(digest, source)).reason is Reason.VERIFIED


def test_a_source_the_policy_refuses_makes_nothing(tmp_path: Path) -> None:
    from edgewise.shared.trust.keys import public_pem

    publisher, stranger = generate_ec(), generate_ec()
    (tmp_path / "stranger.pem").write_bytes(private_pem(stranger))
    (tmp_path / "publisher.pub").write_bytes(public_pem(publisher.public_key()))
    src = om.transformer(tmp_path / "src.onnx", layers=1)
    _sign(src, tmp_path / "stranger.pem", tmp_path / "src.sig")
    _, unknown = _optimize(tmp_path, "--source-signature", str(tmp_path / "src.sig"),
                           "--trusted-signers", str(tmp_path / "publisher.pub"))
    assert unknown.returncode == 5 and "UnknownSigner" in unknown.stderr, unknown.stderr
    _, unsigned = _optimize(tmp_path, "--trusted-signers", str(tmp_path / "publisher.pub"), "--require-signed")
    assert unsigned.returncode == 5 and "Unsigned" in unsigned.stderr and "requireSigned" in unsigned.stderr
    assert not (tmp_path / "int8.onnx").exists()
