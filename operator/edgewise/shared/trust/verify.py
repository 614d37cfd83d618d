"""May this artifact run here? Its digest and attestation against the node's pinned trust, offline.

Pure: the caller hashes the bytes and reads the attestation (from the cache, the agent or the
source); this decides, with everything it needs local — the trusted public keys are pinned in
the node's configuration, so a node with no uplink decides exactly as one with an uplink.

Checks, in order, each with its own `Reason`:
1. the bytes hash to the digest asked for (DIGEST_MISMATCH);
2. the artifact IS the pinned source (served as it is, no derivation): nothing to attest;
3. there is an attestation (NO_ATTESTATION), a DSSE envelope of an in-toto statement
   (MALFORMED_ATTESTATION), signed by a trusted key (UNTRUSTED_KEY, BAD_SIGNATURE);
4. its subject is this artifact (SUBJECT_MISMATCH: another artifact's attestation);
5. it derives from the source the EdgeModel pins (SOURCE_MISMATCH; SOURCE_NOT_PINNED when the
   caller did not say which source), and that source was signed when the node requires it
   (UNSIGNED_SOURCE).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from edgewise.shared.trust import dsse
from edgewise.shared.trust.keys import TrustedKeys
from edgewise.shared.trust.statement import (
    PAYLOAD_TYPE,
    DerivedModel,
    MalformedStatement,
    Statement,
    TensorRTPlan,
)


class Reason(StrEnum):
    """Why an artifact may or may not run; the value is the metric label and the API's `kind`."""

    VERIFIED = "verified"
    IS_SOURCE = "is_source"
    DIGEST_MISMATCH = "digest_mismatch"
    NO_ATTESTATION = "no_attestation"
    MALFORMED_ATTESTATION = "malformed_attestation"
    UNTRUSTED_KEY = "untrusted_key"
    BAD_SIGNATURE = "bad_signature"
    SUBJECT_MISMATCH = "subject_mismatch"
    SOURCE_NOT_PINNED = "source_not_pinned"
    SOURCE_MISMATCH = "source_mismatch"
    UNSIGNED_SOURCE = "unsigned_source"


OK_REASONS = frozenset({Reason.VERIFIED, Reason.IS_SOURCE})


@dataclass(frozen=True)
class NodeTrust:
    """What a node trusts: the operator's attestation keys (two during a rotation), and whether a
    source model must have been signed (the attestation says whether it was, and by whom)."""

    keys: TrustedKeys
    require_signed_source: bool = False


@dataclass(frozen=True)
class Expected:
    artifact_sha256: str
    source_sha256: str | None  # the EdgeModel's pinned source; None when the caller did not say


@dataclass(frozen=True)
class Verdict:
    reason: Reason
    message: str
    key_id: str = ""  # the trusted key that signed the attestation
    statement: Statement | None = None

    @property
    def ok(self) -> bool:
        return self.reason in OK_REASONS


def _open(envelope: bytes, keys: TrustedKeys, what: str) -> tuple[str, Statement] | Verdict:
    """(the trusted key that signed it, the statement), or the Verdict that refuses it."""
    try:
        env = dsse.Envelope.parse(envelope)
        if env.payload_type != PAYLOAD_TYPE:
            raise dsse.Malformed(f"payloadType {env.payload_type!r}, not {PAYLOAD_TYPE}")
        key_id = dsse.verify(env, keys)
        return key_id, Statement.parse(env.payload)
    except (dsse.Malformed, MalformedStatement) as err:
        return Verdict(Reason.MALFORMED_ATTESTATION, f"{what} is unreadable: {err}")
    except dsse.UntrustedKey as err:
        return Verdict(Reason.UNTRUSTED_KEY, f"{what} is {err}; a node trusts only the keys in its trusted-keys "
                                             "configuration (a key rotated out no longer counts)")
    except dsse.BadSignature as err:
        return Verdict(Reason.BAD_SIGNATURE, f"{what}: {err}")


def check(actual_sha256: str, envelope: bytes | None, trust: NodeTrust, expected: Expected) -> Verdict:
    """The verdict on an artifact whose bytes hash to `actual_sha256`, with its attestation `envelope`."""
    want = expected.artifact_sha256
    if actual_sha256 != want:
        return Verdict(Reason.DIGEST_MISMATCH, f"the artifact's bytes do not hash to sha256 {want}: altered in "
                                               "transit or at rest")
    if expected.source_sha256 is not None and expected.source_sha256 == want and not trust.require_signed_source:
        return Verdict(Reason.IS_SOURCE, "the artifact is the pinned source model itself (served as it is)")
    if envelope is None:
        return Verdict(Reason.NO_ATTESTATION, f"no attestation for sha256 {want}: the node trusts only artifacts "
                                              "the operator attested (is the operator's signing key configured?)")
    opened = _open(envelope, trust.keys, f"the attestation of sha256 {want}")
    if isinstance(opened, Verdict):
        return opened
    key_id, statement = opened
    if statement.subject_sha256 != want:
        return Verdict(Reason.SUBJECT_MISMATCH, f"the attestation is for another artifact (sha256 "
                                                f"{statement.subject_sha256}), not for sha256 {want}", key_id,
                       statement)
    predicate = statement.predicate
    if not isinstance(predicate, DerivedModel):
        return Verdict(Reason.MALFORMED_ATTESTATION, "the attestation is a TensorRT plan's, not a derived model's",
                       key_id, statement)
    if expected.source_sha256 is None:
        return Verdict(Reason.SOURCE_NOT_PINNED, "the request names no source digest, so the attestation's "
                                                 "source cannot be checked against the EdgeModel", key_id, statement)
    if predicate.source_sha256 != expected.source_sha256:
        return Verdict(Reason.SOURCE_MISMATCH, f"the artifact was derived from source sha256 "
                                               f"{predicate.source_sha256}, but the EdgeModel pins "
                                               f"{expected.source_sha256}", key_id, statement)
    if trust.require_signed_source and predicate.source_signature is None:
        return Verdict(Reason.UNSIGNED_SOURCE, "the artifact was derived from a source model that was not signed, "
                                               "and this node requires signed sources", key_id, statement)
    signed = f", source signed by {predicate.source_signature.signer}" if predicate.source_signature else ""
    return Verdict(Reason.VERIFIED, f"attested by key {key_id[:16]}: {predicate.technique} {predicate.precision} of "
                                    f"source sha256 {predicate.source_sha256[:16]}{signed}", key_id, statement)


@dataclass(frozen=True)
class ExpectedPlan:
    plan_sha256: str
    onnx_sha256: str  # the verified ONNX artifact the plan must have been built from
    tensorrt_version: str  # the TensorRT this node runs: a plan of another version does not load


def check_plan(actual_sha256: str, envelope: bytes | None, keys: TrustedKeys, expected: ExpectedPlan) -> Verdict:
    """The verdict on a TensorRT plan with its attestation by the agent that built it (or took it from a pod)."""
    want = expected.plan_sha256
    if actual_sha256 != want:
        return Verdict(Reason.DIGEST_MISMATCH, f"the plan's bytes do not hash to sha256 {want}")
    if envelope is None:
        return Verdict(Reason.NO_ATTESTATION, f"no attestation for the plan sha256 {want}")
    opened = _open(envelope, keys, f"the attestation of the plan sha256 {want}")
    if isinstance(opened, Verdict):
        return opened
    key_id, statement = opened
    plan = statement.predicate
    if statement.subject_sha256 != want:
        return Verdict(Reason.SUBJECT_MISMATCH, f"the attestation is for another plan (sha256 "
                                                f"{statement.subject_sha256})", key_id, statement)
    if not isinstance(plan, TensorRTPlan):
        return Verdict(Reason.MALFORMED_ATTESTATION, "the attestation is a derived model's, not a plan's", key_id,
                       statement)
    if plan.onnx_sha256 != expected.onnx_sha256:
        return Verdict(Reason.SOURCE_MISMATCH, f"the plan was built from ONNX sha256 {plan.onnx_sha256}, not from "
                                               f"{expected.onnx_sha256}", key_id, statement)
    if plan.tensorrt_version != expected.tensorrt_version:
        return Verdict(Reason.SOURCE_MISMATCH, f"the plan was built with TensorRT {plan.tensorrt_version}, this node "
                                               f"runs {expected.tensorrt_version}", key_id, statement)
    return Verdict(Reason.VERIFIED, f"plan built on {plan.node} from ONNX sha256 {plan.onnx_sha256[:16]} with "
                                    f"TensorRT {plan.tensorrt_version}, attested by key {key_id[:16]}", key_id,
                   statement)
