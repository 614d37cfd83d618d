"""The source model's signature against a trust policy: a pure decision with words for humans.

Inputs: the policy (which signers are trusted, whether an unsigned model may deploy) and what
checking the model's signature bundle found (`SignatureCheck`, from source_signature.py, or
None when the model carries no signature). Output: Signed(signer) / Unsigned / BadSignature /
UnknownSigner, whether the model may deploy, and a message that says what is wrong and how to
fix it. Default policy: unsigned models are allowed (and reported as Unsigned).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class SourceTrust(StrEnum):
    SIGNED = "Signed"
    UNSIGNED = "Unsigned"
    BAD_SIGNATURE = "BadSignature"
    UNKNOWN_SIGNER = "UnknownSigner"


@dataclass(frozen=True)
class TrustPolicy:
    """Accepted signers of source models: PEM public keys and PEM CA certificate chains."""

    public_keys: tuple[bytes, ...] = ()
    certificate_chains: tuple[bytes, ...] = ()
    require_signed: bool = False

    @property
    def names_signers(self) -> bool:
        return bool(self.public_keys or self.certificate_chains)


@dataclass(frozen=True)
class SignatureCheck:
    """What verifying the bundle found. `signer`: the key id or certificate identity it names."""

    outcome: Literal["verified", "bad_signature", "unknown_signer"]
    signer: str = ""
    detail: str = ""  # the verifier's own words (for logs; may be long)


@dataclass(frozen=True)
class SourceDecision:
    trust: SourceTrust
    allowed: bool
    message: str
    signer: str = ""


def decide(policy: TrustPolicy, check: SignatureCheck | None) -> SourceDecision:
    if check is None:
        if policy.require_signed:
            return SourceDecision(SourceTrust.UNSIGNED, False, (
                "the source model carries no signature and the trust policy requires one (requireSigned): nothing "
                "is deployed; sign the model with model-signing (a key or a certificate the policy names) and set "
                "source.signature to its bundle, or set requireSigned: false"))
        return SourceDecision(SourceTrust.UNSIGNED, True, (
            "the source model carries no signature: deployed because the trust policy allows unsigned models; "
            "sign it with model-signing and set source.signature to know who made it"))
    if check.outcome == "verified":
        return SourceDecision(SourceTrust.SIGNED, True, f"the source model is signed by {check.signer}", check.signer)
    if check.outcome == "bad_signature":
        return SourceDecision(SourceTrust.BAD_SIGNATURE, False, (
            f"the source model's signature by {check.signer or 'a trusted signer'} does not match its bytes: the "
            "model or the bundle was changed after signing; nothing is deployed. Sign the model again, or point "
            "source.uri and source.sha256 at the model that was signed"), check.signer)
    known = "no signer" if not policy.names_signers else "a signer it does not name"
    return SourceDecision(SourceTrust.UNKNOWN_SIGNER, False, (
        f"the source model is signed by {check.signer or 'an unknown key'}, and the trust policy names {known}: "
        "nothing is deployed. Add that signer's public key or CA certificate to the trust policy if it is "
        "trusted, or sign the model with a key the policy names"), check.signer)
