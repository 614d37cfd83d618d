"""What OpenSSF model-signing (PyPI `model-signing`) says about a source model's signature bundle.

Key- or certificate-based, fully offline: no transparency log is asked, sites have no uplink.
The bundle names its signer (a public key's hint, or a certificate chain); the signer is looked
up among the policy's keys first, so "signed by someone we do not trust" (UnknownSigner) and
"signed by someone we trust, but not these bytes" (BadSignature) are told apart.

`model_signing` is imported lazily: it is an operator-side dependency, and the node images
that import the rest of edgewise.shared.trust do not carry it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from edgewise.shared.trust.keys import PEM_SUFFIXES, KeyLoadError, pem_blocks
from edgewise.shared.trust.policy import SignatureCheck, SourceDecision, TrustPolicy, decide


def model_signing_hint(public_pem: bytes) -> str:
    """model-signing's key hint: the hex sha256 of the key's PEM SubjectPublicKeyInfo, re-encoded."""
    key = serialization.load_pem_public_key(public_pem)
    return hashlib.sha256(key.public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def _bundle(bundle_path: Path) -> dict:
    try:
        return dict(json.loads(bundle_path.read_bytes()))
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"not a model-signing bundle: {err}") from err


def _leaf_identity(bundle: dict) -> str:
    """The signing certificate's subject (or SAN), for a certificate-based bundle."""
    material = bundle.get("verificationMaterial") or {}
    chain = (material.get("x509CertificateChain") or {}).get("certificates") or []
    raw = chain[0].get("rawBytes") if chain else (material.get("certificate") or {}).get("rawBytes")
    if not raw:
        return ""
    cert = x509.load_der_x509_certificate(base64.b64decode(raw))
    return cert.subject.rfc4514_string()


def check_signature(model_path: Path, bundle_path: Path, policy: TrustPolicy) -> SignatureCheck:
    """Verify the bundle over the model (a file or a directory) against the policy's signers."""
    from model_signing import verifying  # lazily: see the module's docstring

    try:
        bundle = _bundle(bundle_path)
    except ValueError as err:
        return SignatureCheck("bad_signature", "", str(err))
    hint = ((bundle.get("verificationMaterial") or {}).get("publicKey") or {}).get("hint", "")
    if hint or not policy.certificate_chains:
        keys = {model_signing_hint(pem): pem for pem in policy.public_keys}
        candidates = [keys[hint]] if hint in keys else ([] if hint else list(keys.values()))
        if not candidates:
            return SignatureCheck("unknown_signer", f"key {hint[:16]}" if hint else "", "no trusted key matches")
        last = ""
        for pem in candidates:
            with tempfile.NamedTemporaryFile(suffix=".pub") as f:
                f.write(pem)
                f.flush()
                try:
                    verifying.Config().use_elliptic_key_verifier(public_key=f.name).verify(model_path, bundle_path)
                except (ValueError, InvalidSignature) as err:  # model-signing raises both for a bad signature
                    last = str(err) or type(err).__name__
                    continue
            return SignatureCheck("verified", f"key {model_signing_hint(pem)[:16]}")
        return SignatureCheck("bad_signature", f"key {hint[:16]}" if hint else "", last)
    identity = _leaf_identity(bundle)
    with tempfile.TemporaryDirectory(prefix="edgewise-chain-") as tmp:
        chain_files = []
        for i, pem in enumerate(policy.certificate_chains):
            chain_files.append(Path(tmp) / f"chain-{i}.pem")
            chain_files[-1].write_bytes(pem)
        try:
            verifying.Config().use_certificate_verifier(certificate_chain=chain_files).verify(model_path, bundle_path)
        except ValueError as err:
            # model-signing says "Signature mismatch"/"Hash mismatch" when the chain held and the bytes
            # did not; anything else (an untrusted or broken chain) means the signer is not one we know.
            text = str(err)
            outcome = "bad_signature" if ("mismatch" in text.lower() and "key" not in text.lower()) \
                else "unknown_signer"
            return SignatureCheck(outcome, identity, text)  # type: ignore[arg-type]
        except Exception as err:  # noqa: BLE001 - certificate path validation raises its own kinds
            return SignatureCheck("unknown_signer", identity, f"{type(err).__name__}: {err}")
    return SignatureCheck("verified", identity or "a certificate of the trusted chain")


def evaluate_source(model_path: Path, bundle_path: Path | None, policy: TrustPolicy) -> SourceDecision:
    """The policy's decision on the model: unsigned when there is no bundle, else what it verifies to."""
    check = None if bundle_path is None else check_signature(Path(model_path), Path(bundle_path), policy)
    return decide(policy, check)


def bundle_sha256(bundle_path: Path) -> str:
    return hashlib.sha256(Path(bundle_path).read_bytes()).hexdigest()


def policy_from_files(public_keys: Path | None, certificate_chains: tuple[Path, ...] = (),
                      require_signed: bool = False) -> TrustPolicy:
    """A policy from PEM files: public keys (a file of one or more keys, or a directory of *.pem/*.pub, as
    a mounted ConfigMap) and CA chain files. KeyLoadError when a file is missing or holds no key."""
    keys: list[bytes] = []
    if public_keys is not None:
        files = [public_keys]
        if public_keys.is_dir():
            files = sorted(f for f in public_keys.iterdir() if f.suffix in PEM_SUFFIXES and not f.name.startswith("."))
        for f in files:
            try:
                blocks = pem_blocks(f.read_bytes())
            except OSError as err:
                raise KeyLoadError(f"{f}: cannot read signers' keys ({err.strerror or err})") from err
            if not blocks:
                raise KeyLoadError(f"{f}: no PEM public key in it")
            keys += blocks
    try:
        chains = tuple(Path(c).read_bytes() for c in certificate_chains)
    except OSError as err:
        raise KeyLoadError(f"cannot read a CA chain ({err})") from err
    return TrustPolicy(public_keys=tuple(keys), certificate_chains=chains, require_signed=require_signed)
