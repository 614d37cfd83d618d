"""Source models' signatures: OpenSSF model-signing bundles made with local keys, verified offline, and the
trust policy's decision on each case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from model_signing import signing
from trust_support import generate_ec

from edgewise.shared.trust.keys import Signer, private_pem, public_pem
from edgewise.shared.trust.policy import SignatureCheck, SourceTrust, TrustPolicy, decide
from edgewise.shared.trust.source_signature import check_signature, evaluate_source, model_signing_hint


def sign_model(tmp_path: Path, signer: Signer, model: bytes = b"onnx bytes" * 100) -> tuple[Path, Path]:
    key = tmp_path / f"{signer.key_id[:8]}.pem"
    key.write_bytes(private_pem(signer))
    path, bundle = tmp_path / "model.onnx", tmp_path / "model.sig"
    path.write_bytes(model)
    signing.Config().use_elliptic_key_signer(private_key=key).sign(path, bundle)
    return path, bundle


def policy(*signers: Signer, require_signed: bool = False) -> TrustPolicy:
    return TrustPolicy(public_keys=tuple(public_pem(s.public_key()) for s in signers), require_signed=require_signed)


# ---- the pure decision ----------------------------------------------------------------------------

def test_unsigned_is_allowed_by_default_and_refused_under_require_signed() -> None:
    lax = decide(TrustPolicy(), None)
    assert lax.trust is SourceTrust.UNSIGNED and lax.allowed and "allows unsigned" in lax.message
    strict = decide(TrustPolicy(require_signed=True), None)
    assert strict.trust is SourceTrust.UNSIGNED and not strict.allowed and "requireSigned" in strict.message


def test_bad_and_unknown_signatures_never_deploy_whatever_the_policy() -> None:
    for require in (False, True):
        bad = decide(TrustPolicy(require_signed=require), SignatureCheck("bad_signature", "key ab"))
        unknown = decide(TrustPolicy(require_signed=require), SignatureCheck("unknown_signer", "key cd"))
        assert (bad.trust, bad.allowed) == (SourceTrust.BAD_SIGNATURE, False)
        assert (unknown.trust, unknown.allowed) == (SourceTrust.UNKNOWN_SIGNER, False)
        assert "changed after signing" in bad.message and "Add that signer" in unknown.message
    signed = decide(TrustPolicy(require_signed=True), SignatureCheck("verified", "key ef"))
    assert (signed.trust, signed.allowed, signed.signer) == (SourceTrust.SIGNED, True, "key ef")


# ---- with model-signing, offline ------------------------------------------------------------------

def test_a_model_signed_by_a_trusted_key_is_signed_by_it(tmp_path) -> None:
    signer = generate_ec()
    model, bundle = sign_model(tmp_path, signer)
    decision = evaluate_source(model, bundle, policy(generate_ec(), signer, require_signed=True))
    assert decision.trust is SourceTrust.SIGNED and decision.allowed
    assert decision.signer == f"key {model_signing_hint(public_pem(signer.public_key()))[:16]}"


def test_a_changed_model_is_a_bad_signature(tmp_path) -> None:
    signer = generate_ec()
    model, bundle = sign_model(tmp_path, signer)
    data = bytearray(model.read_bytes())
    data[10] ^= 1
    model.write_bytes(bytes(data))
    check = check_signature(model, bundle, policy(signer))
    assert check.outcome == "bad_signature" and "mismatch" in check.detail.lower()
    assert evaluate_source(model, bundle, policy(signer)).trust is SourceTrust.BAD_SIGNATURE


def test_a_signer_the_policy_does_not_name_is_unknown_including_a_key_rotated_out(tmp_path) -> None:
    old, new = generate_ec(), generate_ec()
    model, bundle = sign_model(tmp_path, old)
    assert evaluate_source(model, bundle, policy(old, new)).trust is SourceTrust.SIGNED  # during the rotation
    after = evaluate_source(model, bundle, policy(new))
    assert after.trust is SourceTrust.UNKNOWN_SIGNER and not after.allowed


def test_a_bundle_that_is_not_one_is_a_bad_signature_and_no_bundle_is_unsigned(tmp_path) -> None:
    signer = generate_ec()
    model, bundle = sign_model(tmp_path, signer)
    bundle.write_text("not json")
    assert evaluate_source(model, bundle, policy(signer)).trust is SourceTrust.BAD_SIGNATURE
    none = evaluate_source(model, None, policy(signer, require_signed=True))
    assert none.trust is SourceTrust.UNSIGNED and not none.allowed


def test_a_bundle_whose_signature_was_swapped_for_another_keys_is_refused(tmp_path) -> None:
    trusted, other = generate_ec(), generate_ec()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    model, bundle = sign_model(tmp_path / "a", trusted)
    _, other_bundle = sign_model(tmp_path / "b", other)
    doc, foreign = json.loads(bundle.read_text()), json.loads(other_bundle.read_text())
    doc["dsseEnvelope"]["signatures"] = foreign["dsseEnvelope"]["signatures"]  # keeps the trusted key's hint
    bundle.write_text(json.dumps(doc))
    assert evaluate_source(model, bundle, policy(trusted)).trust is SourceTrust.BAD_SIGNATURE


@pytest.mark.parametrize("require_signed", [False, True])
def test_with_no_signer_named_a_signed_model_is_from_an_unknown_signer(tmp_path, require_signed) -> None:
    model, bundle = sign_model(tmp_path, generate_ec())
    decision = evaluate_source(model, bundle, TrustPolicy(require_signed=require_signed))
    assert decision.trust is SourceTrust.UNKNOWN_SIGNER and "names no signer" in decision.message


def test_a_policy_reads_signers_from_a_pem_bundle_or_a_directory(tmp_path) -> None:
    from edgewise.shared.trust.keys import KeyLoadError
    from edgewise.shared.trust.source_signature import policy_from_files

    a, b = generate_ec(), generate_ec()
    bundle = tmp_path / "signers.pem"
    bundle.write_bytes(public_pem(a.public_key()) + public_pem(b.public_key()))
    assert len(policy_from_files(bundle).public_keys) == 2
    d = tmp_path / "dir"
    d.mkdir()
    (d / "a.pub").write_bytes(public_pem(a.public_key()))
    (d / "notes.txt").write_text("not a key")
    policy = policy_from_files(d, require_signed=True)
    assert len(policy.public_keys) == 1 and policy.require_signed
    model, sig = sign_model(tmp_path, a)
    assert evaluate_source(model, sig, policy).trust is SourceTrust.SIGNED
    with pytest.raises(KeyLoadError):
        policy_from_files(tmp_path / "absent.pem")


# ---- certificate-based signatures (a publisher's certificate under a CA the policy names) ----------

def _cert(subject: str, key, issuer_key=None, issuer_name: str | None = None, ca: bool = False):  # noqa: ANN001
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]) if issuer_name else name
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                                            crl_sign=ca, encipher_only=False, decipher_only=False), critical=True))
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pem(cert) -> bytes:  # noqa: ANN001
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def certificate_signed(tmp_path: Path, model: bytes = b"onnx bytes" * 100) -> tuple[Path, Path, bytes]:
    """A model signed with a publisher's certificate issued by a CA; returns (model, bundle, the CA's PEM)."""
    ca_key, leaf_key = generate_ec().private_key, generate_ec().private_key
    ca = _cert("Edgewise Test Publishers CA", ca_key, ca=True)
    leaf = _cert("publisher.example", leaf_key, ca_key, "Edgewise Test Publishers CA")
    files = {"leaf.pem": private_pem(Signer.from_key(leaf_key)), "leaf.crt": _pem(leaf), "ca.crt": _pem(ca)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    path, bundle = tmp_path / "model.onnx", tmp_path / "model.sig"
    path.write_bytes(model)
    signer = signing.Config().use_certificate_signer(
        private_key=tmp_path / "leaf.pem", signing_certificate=tmp_path / "leaf.crt",
        certificate_chain=[tmp_path / "ca.crt"])
    signer.sign(path, bundle)
    return path, bundle, _pem(ca)


def test_a_model_signed_with_a_certificate_of_a_trusted_ca_is_signed_by_its_subject(tmp_path) -> None:
    model, bundle, ca = certificate_signed(tmp_path)
    decision = evaluate_source(model, bundle, TrustPolicy(certificate_chains=(ca,), require_signed=True))
    assert decision.trust is SourceTrust.SIGNED and decision.allowed, decision
    assert decision.signer == "CN=publisher.example"


def test_a_changed_model_under_a_trusted_certificate_is_a_bad_signature(tmp_path) -> None:
    model, bundle, ca = certificate_signed(tmp_path)
    model.write_bytes(b"tampered" + model.read_bytes())
    decision = evaluate_source(model, bundle, TrustPolicy(certificate_chains=(ca,)))
    assert decision.trust is SourceTrust.BAD_SIGNATURE and not decision.allowed, decision


def test_a_certificate_from_a_ca_the_policy_does_not_name_is_an_unknown_signer(tmp_path) -> None:
    model, bundle, _ = certificate_signed(tmp_path)
    other_ca = _pem(_cert("Someone Else's CA", generate_ec().private_key, ca=True))
    decision = evaluate_source(model, bundle, TrustPolicy(certificate_chains=(other_ca,)))
    assert decision.trust is SourceTrust.UNKNOWN_SIGNER and not decision.allowed, decision
    assert decision.signer == "CN=publisher.example"
