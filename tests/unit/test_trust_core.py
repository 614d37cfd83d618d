"""The trust core: keys, DSSE envelopes, statements and the node's verdict, each refusal by its reason."""

from __future__ import annotations

import base64
import datetime
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from trust_support import SOURCE_SHA, attest, derived, generate_ec, sha256

from edgewise.shared.trust import dsse
from edgewise.shared.trust.keys import (
    KeyLoadError,
    Signer,
    TrustedKeys,
    key_id,
    pem_blocks,
    private_pem,
    public_pem,
)
from edgewise.shared.trust.statement import (
    DERIVED_MODEL,
    STATEMENT_TYPE,
    TENSORRT_PLAN,
    MalformedStatement,
    Statement,
    TensorRTPlan,
)
from edgewise.shared.trust.verify import Expected, NodeTrust, Reason, check

ARTIFACT = b"an int8 artifact"


def trust(*signers: Signer, require_signed: bool = False) -> NodeTrust:
    return NodeTrust(TrustedKeys.of(s.public_key() for s in signers), require_signed)


def expect(artifact: bytes = ARTIFACT, source: str | None = SOURCE_SHA) -> Expected:
    return Expected(sha256(artifact), source)


# ---- keys -----------------------------------------------------------------------------------------

def test_a_key_id_is_the_sha256_of_the_public_key_and_the_same_from_pem() -> None:
    signer = generate_ec()
    loaded = TrustedKeys.from_pem(public_pem(signer.public_key()))
    assert loaded.ids() == [signer.key_id] == [key_id(signer.public_key())]
    assert len(signer.key_id) == 64 and signer.key_id != generate_ec().key_id


def test_a_pem_bundle_and_a_directory_both_give_every_key(tmp_path) -> None:
    old, new = generate_ec(), Signer.from_key(ed25519.Ed25519PrivateKey.generate())
    bundle = public_pem(old.public_key()) + public_pem(new.public_key())
    assert set(TrustedKeys.from_pem(bundle).ids()) == {old.key_id, new.key_id}
    (tmp_path / "old.pem").write_bytes(public_pem(old.public_key()))
    (tmp_path / "new.pub").write_bytes(public_pem(new.public_key()))
    (tmp_path / "..data").mkdir()  # a mounted ConfigMap's bookkeeping: not a key
    (tmp_path / "README").write_text("not a key")
    assert set(TrustedKeys.load(tmp_path).ids()) == {old.key_id, new.key_id}


def _self_signed(private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    """A certificate as the chart makes one around the key it generates (Sprig's genSelfSignedCertWithKey)."""
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "edgewise-operator-attestation")])
    now = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private_key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(private_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_a_certificate_counts_as_its_public_key_and_nothing_else() -> None:
    """Helm can only wrap a key it generates in a certificate: the nodes trust the key inside. Expired (as this
    one is) or self-signed does not matter: the key is pinned, not the certificate's chain or dates."""
    signer = generate_ec()
    cert = _self_signed(signer.private_key)  # type: ignore[arg-type]
    assert TrustedKeys.from_pem(cert).ids() == [signer.key_id]
    other = generate_ec()
    assert set(TrustedKeys.from_pem(cert + public_pem(other.public_key())).ids()) == {signer.key_id, other.key_id}
    with pytest.raises(KeyLoadError, match="only ECDSA P-256 and Ed25519"):
        TrustedKeys.from_pem(_self_signed(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    # A private key beside it is never taken for a trusted key, and the signers' policy reads bare keys only.
    assert TrustedKeys.from_pem(private_pem(other) + cert).ids() == [signer.key_id]
    assert pem_blocks(cert + public_pem(other.public_key())) == [public_pem(other.public_key())]


def test_a_missing_key_file_or_an_empty_directory_is_a_key_load_error(tmp_path) -> None:
    with pytest.raises(KeyLoadError, match="cannot read trusted keys"):
        TrustedKeys.load(tmp_path / "absent.pem")
    with pytest.raises(KeyLoadError, match="no \\*.pem"):
        TrustedKeys.load(tmp_path)


def test_keys_of_other_curves_and_files_without_keys_are_refused_when_loaded(tmp_path) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(KeyLoadError, match="only P-256"):
        TrustedKeys.from_pem(public_pem(p384.public_key()))  # type: ignore[arg-type]
    with pytest.raises(KeyLoadError, match="no PEM public key"):
        TrustedKeys.from_pem(b"hello")
    with pytest.raises(KeyLoadError, match="not a PEM private key"):
        Signer.load(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    key_file = tmp_path / "signing.pem"
    signer = generate_ec()
    key_file.write_bytes(private_pem(signer))
    assert Signer.load(key_file).key_id == Signer.load(private_pem(signer)).key_id == signer.key_id


# ---- DSSE -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [generate_ec, lambda: Signer.from_key(ed25519.Ed25519PrivateKey.generate())])
def test_an_envelope_verifies_with_its_key_among_several(make) -> None:
    signer, other = make(), generate_ec()
    env = dsse.Envelope.parse(dsse.sign(b"payload", "text/plain", signer).to_json())
    assert dsse.verify(env, TrustedKeys.of([other.public_key(), signer.public_key()])) == signer.key_id


def test_an_altered_payload_or_type_is_a_bad_signature_and_an_unknown_key_untrusted() -> None:
    signer = generate_ec()
    env = dsse.sign(b"payload", "text/plain", signer)
    keys = TrustedKeys.of([signer.public_key()])
    with pytest.raises(dsse.BadSignature):
        dsse.verify(dsse.Envelope(env.payload_type, b"payloaD", env.signatures), keys)
    with pytest.raises(dsse.BadSignature):  # the type is signed too
        dsse.verify(dsse.Envelope("application/json", env.payload, env.signatures), keys)
    with pytest.raises(dsse.UntrustedKey, match="not among the 1 trusted"):
        dsse.verify(env, TrustedKeys.of([generate_ec().public_key()]))
    with pytest.raises(dsse.UntrustedKey, match="no trusted key"):
        dsse.verify(env, TrustedKeys.of([]))


def test_a_signature_without_a_key_id_still_verifies_with_the_right_key_only() -> None:
    signer = generate_ec()
    env = dsse.sign(b"p", "t", signer)
    anonymous = dsse.Envelope("t", b"p", (dsse.Signature("", env.signatures[0].sig),))
    assert dsse.verify(anonymous, TrustedKeys.of([signer.public_key()])) == signer.key_id
    with pytest.raises(dsse.UntrustedKey):
        dsse.verify(anonymous, TrustedKeys.of([generate_ec().public_key()]))


@pytest.mark.parametrize("raw", [b"", b"[]", b'{"payloadType": "t", "payload": "!!", "signatures": []}',
                                 b'{"payloadType": "t", "payload": "", "signatures": []}', b"x" * (2 << 20)])
def test_anything_but_an_envelope_is_malformed(raw: bytes) -> None:
    with pytest.raises(dsse.Malformed):
        dsse.Envelope.parse(raw)


def test_pae_is_dsse_v1() -> None:
    assert dsse.pae("t", b"ab") == b"DSSEv1 1 t 2 ab"


# ---- statements -----------------------------------------------------------------------------------

def test_a_derived_model_statement_round_trips_and_is_in_toto_v1() -> None:
    s = derived(sha256(ARTIFACT))
    doc = json.loads(s.to_json())
    assert doc["_type"] == STATEMENT_TYPE and doc["predicateType"] == DERIVED_MODEL
    assert doc["subject"] == [{"name": "model.onnx", "digest": {"sha256": sha256(ARTIFACT)}}]
    assert doc["predicate"]["source"]["digest"] == {"sha256": SOURCE_SHA}
    assert doc["predicate"]["gates"]["accuracy"]["numbers"]["minCosine"] == 0.998
    assert doc["predicate"]["toolchain"]["onnxruntime"] == "1.31.1"
    assert Statement.parse(s.to_json()) == s


def test_a_plan_statement_names_its_onnx_and_tensorrt() -> None:
    s = Statement("model.plan", "b" * 64, TensorRTPlan("c" * 64, "10.3.0", "8.7", "fp16", "jetson-1"))
    doc = json.loads(s.to_json())
    assert doc["predicateType"] == TENSORRT_PLAN and doc["predicate"]["onnx"]["digest"]["sha256"] == "c" * 64
    assert doc["predicate"]["tensorrt"]["version"] == "10.3.0"
    assert Statement.parse(s.to_json()) == s


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(_type="https://in-toto.io/Statement/v0.1"),
    lambda d: d.update(predicateType="https://slsa.dev/provenance/v1"),
    lambda d: d["subject"].append(d["subject"][0]),
    lambda d: d["subject"][0]["digest"].update(sha256="not hex"),
    lambda d: d["predicate"]["source"]["digest"].pop("sha256"),
    lambda d: d["predicate"]["gates"]["accuracy"]["numbers"].update(minCosine="NaN"),
])
def test_statements_that_a_verifier_cannot_judge_are_malformed(mutate) -> None:
    doc = json.loads(derived(sha256(ARTIFACT)).to_json())
    mutate(doc)
    with pytest.raises(MalformedStatement):
        Statement.parse(json.dumps(doc).encode())


# ---- the node's verdict ---------------------------------------------------------------------------

def test_a_good_attestation_is_verified_and_names_its_key() -> None:
    signer = generate_ec()
    verdict = check(sha256(ARTIFACT), attest(ARTIFACT, signer), trust(signer), expect())
    assert verdict.ok and verdict.reason is Reason.VERIFIED and verdict.key_id == signer.key_id
    assert "source signed by key 0123" in verdict.message


def test_a_flipped_byte_is_a_digest_mismatch() -> None:
    signer = generate_ec()
    flipped = bytes([ARTIFACT[0] ^ 1]) + ARTIFACT[1:]
    verdict = check(sha256(flipped), attest(ARTIFACT, signer), trust(signer), expect())
    assert not verdict.ok and verdict.reason is Reason.DIGEST_MISMATCH


def test_another_artifacts_attestation_is_a_subject_mismatch() -> None:
    signer = generate_ec()
    verdict = check(sha256(ARTIFACT), attest(b"another model's artifact", signer), trust(signer), expect())
    assert verdict.reason is Reason.SUBJECT_MISMATCH and "another artifact" in verdict.message


def test_an_untrusted_or_rotated_out_key_is_untrusted_and_two_keys_may_be_trusted_at_once() -> None:
    old, new = generate_ec(), generate_ec()
    env = attest(ARTIFACT, old)
    assert check(sha256(ARTIFACT), env, trust(old, new), expect()).ok  # during the rotation
    verdict = check(sha256(ARTIFACT), env, trust(new), expect())  # after it
    assert verdict.reason is Reason.UNTRUSTED_KEY and "rotated out" in verdict.message


def test_a_tampered_attestation_is_a_bad_signature() -> None:
    signer = generate_ec()
    doc = json.loads(attest(ARTIFACT, signer))
    statement = json.loads(base64.b64decode(doc["payload"]))
    statement["predicate"]["gates"]["accuracy"]["numbers"]["minCosine"] = 0.999999  # a better number
    doc["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    verdict = check(sha256(ARTIFACT), json.dumps(doc).encode(), trust(signer), expect())
    assert verdict.reason is Reason.BAD_SIGNATURE


def test_another_source_is_a_source_mismatch_and_no_source_cannot_be_checked() -> None:
    signer = generate_ec()
    env = attest(ARTIFACT, signer)
    verdict = check(sha256(ARTIFACT), env, trust(signer), expect(source="d" * 64))
    assert verdict.reason is Reason.SOURCE_MISMATCH and SOURCE_SHA in verdict.message
    assert check(sha256(ARTIFACT), env, trust(signer), expect(source=None)).reason is Reason.SOURCE_NOT_PINNED


def test_an_unsigned_source_is_refused_only_where_signed_sources_are_required() -> None:
    signer = generate_ec()
    env = attest(ARTIFACT, signer, signed_by=None)
    assert check(sha256(ARTIFACT), env, trust(signer), expect()).ok
    verdict = check(sha256(ARTIFACT), env, trust(signer, require_signed=True), expect())
    assert verdict.reason is Reason.UNSIGNED_SOURCE


def test_no_attestation_or_garbage_is_refused_and_the_source_itself_needs_none() -> None:
    signer = generate_ec()
    assert check(sha256(ARTIFACT), None, trust(signer), expect()).reason is Reason.NO_ATTESTATION
    assert check(sha256(ARTIFACT), b"{}", trust(signer), expect()).reason is Reason.MALFORMED_ATTESTATION
    as_is = check(sha256(ARTIFACT), None, trust(signer), expect(source=sha256(ARTIFACT)))
    assert as_is.ok and as_is.reason is Reason.IS_SOURCE
    strict = check(sha256(ARTIFACT), None, trust(signer, require_signed=True), expect(source=sha256(ARTIFACT)))
    assert not strict.ok


def test_a_plan_attestation_does_not_pass_for_a_model() -> None:
    signer = generate_ec()
    from edgewise.shared.trust.statement import sign_statement
    env = sign_statement(Statement("model.plan", sha256(ARTIFACT), TensorRTPlan("c" * 64, "10", "8.7", "fp16", "n")),
                         signer)
    assert check(sha256(ARTIFACT), env, trust(signer), expect()).reason is Reason.MALFORMED_ATTESTATION


def test_private_pem_round_trips() -> None:
    signer = generate_ec()
    assert Signer.load(private_pem(signer)).key_id == signer.key_id


def test_a_public_key_is_kept_beside_its_private_key_under_another_name() -> None:
    from edgewise import contract
    from edgewise.shared.trust.keys import public_key_path

    assert str(public_key_path("/var/cache/plan-key/node.pem")) == "/var/cache/plan-key/node.pem.pub"
    assert public_key_path("key").name == "key.pub" and public_key_path("k.pub").name == "k.pub.pub"
    assert public_key_path(contract.PLAN_KEY_FILE).name == contract.PLAN_PUBLIC_KEY_FILE  # what pods are given


def test_a_plan_is_judged_by_its_digest_signer_subject_onnx_and_tensorrt() -> None:
    from edgewise.shared.trust.statement import sign_statement
    from edgewise.shared.trust.verify import ExpectedPlan, check_plan

    node = generate_ec()
    plan, onnx = b"engine bytes", "c" * 64
    env = sign_statement(Statement("model.plan", sha256(plan), TensorRTPlan(onnx, "10.3.0", "8.7", "fp16", "n1")), node)
    keys = TrustedKeys.of([node.public_key()])
    want = ExpectedPlan(sha256(plan), onnx, "10.3.0")
    assert check_plan(sha256(plan), env, keys, want).reason is Reason.VERIFIED
    assert check_plan(sha256(b"other"), env, keys, want).reason is Reason.DIGEST_MISMATCH
    assert check_plan(sha256(plan), None, keys, want).reason is Reason.NO_ATTESTATION
    other = ExpectedPlan(sha256(b"other"), onnx, "10.3.0")
    assert check_plan(sha256(b"other"), env, keys, other).reason is Reason.SUBJECT_MISMATCH
    assert check_plan(sha256(plan), env, keys, ExpectedPlan(sha256(plan), "d" * 64, "10.3.0")
                      ).reason is Reason.SOURCE_MISMATCH
    assert check_plan(sha256(plan), attest(plan, node), keys, want).reason is Reason.MALFORMED_ATTESTATION
