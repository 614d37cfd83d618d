"""DSSE envelopes (Dead Simple Signing Envelope, the wrapping in-toto attestations travel in).

The signature covers PAE(payloadType, payload) — the type is signed too, so a payload cannot be
passed off as another kind of document. Verification accepts a SET of trusted keys (two at
once during a key rotation) and fails with a distinct exception per cause, so a node can say
which link of the chain broke: `Malformed`, `UntrustedKey` (signed, but by no key trusted
here), `BadSignature` (a trusted key's id, but the bytes were not signed by it).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from edgewise.shared.trust.keys import Signer, TrustedKeys, verify_raw

MAX_ENVELOPE_BYTES = 1 << 20  # an attestation is a few KiB; anything this large is not one


class EnvelopeError(Exception):
    """The envelope does not verify; subclasses say why."""


class Malformed(EnvelopeError):
    """Not a DSSE envelope (JSON, fields, base64)."""


class UntrustedKey(EnvelopeError):
    """Every signature is by a key that is not trusted here."""


class BadSignature(EnvelopeError):
    """A signature names a trusted key but does not verify: the payload or the signature was changed."""


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def to_json(self) -> bytes:
        doc = {"payloadType": self.payload_type, "payload": base64.b64encode(self.payload).decode(),
               "signatures": [{"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode()} for s in self.signatures]}
        return json.dumps(doc, indent=2, sort_keys=True).encode()

    @classmethod
    def parse(cls, raw: bytes) -> Envelope:
        if len(raw) > MAX_ENVELOPE_BYTES:
            raise Malformed(f"an attestation of {len(raw)} bytes is larger than {MAX_ENVELOPE_BYTES}")
        try:
            doc = json.loads(raw)
            sigs = tuple(Signature(str(s.get("keyid", "")), base64.b64decode(s["sig"], validate=True))
                         for s in doc["signatures"])
            envelope = cls(str(doc["payloadType"]), base64.b64decode(doc["payload"], validate=True), sigs)
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as err:
            raise Malformed(f"not a DSSE envelope: {type(err).__name__}: {err}") from err
        if not envelope.signatures:
            raise Malformed("the envelope carries no signature")
        return envelope


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is actually signed."""
    t = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


def sign(payload: bytes, payload_type: str, signer: Signer) -> Envelope:
    return Envelope(payload_type, payload, (Signature(signer.key_id, signer.sign(pae(payload_type, payload))),))


def verify(envelope: Envelope, trusted: TrustedKeys) -> str:
    """The key id of a trusted key that signed `envelope`; UntrustedKey or BadSignature otherwise.

    A signature whose keyid is empty or unknown is tried against every trusted key (DSSE makes
    keyid a hint only); it counts as untrusted unless one of them verifies it.
    """
    if not len(trusted):
        raise UntrustedKey("no trusted key is configured")
    data = pae(envelope.payload_type, envelope.payload)
    named_trusted = False
    for s in envelope.signatures:
        key = trusted.get(s.keyid)
        if key is not None:
            named_trusted = True
            if verify_raw(key, s.sig, data):
                return s.keyid
            continue
        for kid in trusted.ids():  # an unnamed or unknown keyid: maybe a trusted key all the same
            candidate = trusted.get(kid)
            if candidate is not None and verify_raw(candidate, s.sig, data):
                return kid
    if named_trusted:
        raise BadSignature("the signature of a trusted key does not match the attestation: it was altered "
                           "after signing")
    signers = ", ".join(s.keyid[:16] or "(no key id)" for s in envelope.signatures)
    raise UntrustedKey(f"signed by key {signers}, which is not among the {len(trusted)} trusted key(s) "
                       f"({', '.join(k[:16] for k in trusted.ids())})")
