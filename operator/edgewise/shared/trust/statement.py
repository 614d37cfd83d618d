"""in-toto Statement v1 for what Edgewise derives: an optimized ONNX artifact, or a TensorRT plan.

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": "model.onnx", "digest": {"sha256": <artifact>}}],
     "predicateType": DERIVED_MODEL | TENSORRT_PLAN,
     "predicate": {...}}

A derived model's predicate binds the source (URI, digest, and its signature's signer and
bundle digest when it was signed), how it was derived (technique, precision, runtime), the
accuracy, memory and speed gates' numbers, and the toolchain's versions (onnxruntime, onnx,
Edgewise). A plan's names the ONNX artifact it was built from, the TensorRT version, the GPU
compute capability and the node that built it.

Plain dataclasses and JSON: the node images carry no protobuf schema for this, and `parse`
checks every field a verifier reads, so a statement that parses is one it can judge.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgewise.shared.trust import dsse
from edgewise.shared.trust.keys import Signer

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
DERIVED_MODEL = "https://edgewise.io/attestations/derived-model/v1"
TENSORRT_PLAN = "https://edgewise.io/attestations/tensorrt-plan/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"  # DSSE payloadType of an in-toto statement
_HEX = re.compile(r"^[0-9a-f]{64}$")


class MalformedStatement(ValueError):
    """The payload is not a statement this module can judge."""


@dataclass(frozen=True)
class SourceSignature:
    """Who signed the source model (a key id or a certificate's identity) and which bundle says so."""

    signer: str
    bundle_sha256: str


@dataclass(frozen=True)
class Gate:
    """One gate's verdict and the numbers it was decided on (as the optimizer reported them)."""

    passed: bool
    numbers: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DerivedModel:
    source_uri: str
    source_sha256: str
    source_signature: SourceSignature | None
    technique: str  # e.g. "int8 dynamic per-channel", "fp16", "fp32"
    precision: str
    runtime: str  # the hardware class's runtime the artifact was made for
    gates: Mapping[str, Gate]  # "accuracy", "memory", "speed": those that ran
    versions: Mapping[str, str]  # "edgewise", "onnxruntime", "onnx", ...


@dataclass(frozen=True)
class TensorRTPlan:
    onnx_sha256: str  # the attested ONNX artifact the plan was built from
    tensorrt_version: str
    compute_capability: str
    precision: str
    node: str  # the node whose agent built and attests it


Predicate = DerivedModel | TensorRTPlan


@dataclass(frozen=True)
class Statement:
    subject_name: str
    subject_sha256: str
    predicate: Predicate

    @property
    def predicate_type(self) -> str:
        return DERIVED_MODEL if isinstance(self.predicate, DerivedModel) else TENSORRT_PLAN

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    def to_dict(self) -> dict[str, Any]:
        return {"_type": STATEMENT_TYPE,
                "subject": [{"name": self.subject_name, "digest": {"sha256": self.subject_sha256}}],
                "predicateType": self.predicate_type, "predicate": _predicate_dict(self.predicate)}

    @classmethod
    def parse(cls, payload: bytes) -> Statement:
        try:
            doc = json.loads(payload)
            return _statement(doc)
        except MalformedStatement:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
            raise MalformedStatement(f"not an Edgewise in-toto statement: {type(err).__name__}: {err}") from err


def _digest(value: str) -> dict[str, str]:
    return {"sha256": value}


def _predicate_dict(p: Predicate) -> dict[str, Any]:
    if isinstance(p, TensorRTPlan):
        return {"onnx": {"digest": _digest(p.onnx_sha256)}, "tensorrt": {"version": p.tensorrt_version},
                "computeCapability": p.compute_capability, "precision": p.precision, "node": p.node}
    sig = p.source_signature
    return {
        "source": {"uri": p.source_uri, "digest": _digest(p.source_sha256),
                   "signature": None if sig is None else {"signer": sig.signer,
                                                          "bundle": {"digest": _digest(sig.bundle_sha256)}}},
        "derivation": {"technique": p.technique, "precision": p.precision, "runtime": p.runtime},
        "gates": {name: {"passed": g.passed, "numbers": dict(g.numbers)} for name, g in p.gates.items()},
        "toolchain": dict(p.versions),
    }


def _hex(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _HEX.match(value):
        raise MalformedStatement(f"{what} is not a hex sha256")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise MalformedStatement(f"{what} is not a string")
    return value


def _statement(doc: dict[str, Any]) -> Statement:
    if doc.get("_type") != STATEMENT_TYPE:
        raise MalformedStatement(f"_type is {doc.get('_type')!r}, not {STATEMENT_TYPE}")
    subjects = doc["subject"]
    if not isinstance(subjects, list) or len(subjects) != 1:
        raise MalformedStatement("an Edgewise statement has exactly one subject")
    name = _str(subjects[0]["name"], "subject.name")
    digest = _hex(subjects[0]["digest"]["sha256"], "subject.digest.sha256")
    kind, p = doc.get("predicateType"), doc["predicate"]
    if kind == TENSORRT_PLAN:
        return Statement(name, digest, TensorRTPlan(
            _hex(p["onnx"]["digest"]["sha256"], "predicate.onnx.digest.sha256"),
            _str(p["tensorrt"]["version"], "predicate.tensorrt.version"),
            _str(p["computeCapability"], "predicate.computeCapability"),
            _str(p["precision"], "predicate.precision"), _str(p["node"], "predicate.node")))
    if kind != DERIVED_MODEL:
        raise MalformedStatement(f"predicateType {kind!r} is none of Edgewise's")
    src, sig = p["source"], p["source"].get("signature")
    gates = {}
    for gname, g in dict(p.get("gates") or {}).items():
        numbers = {str(k): float(v) for k, v in dict(g.get("numbers") or {}).items()}
        if not all(math.isfinite(v) for v in numbers.values()):
            raise MalformedStatement(f"gate {gname} has a number that is not finite")
        gates[str(gname)] = Gate(bool(g["passed"]), numbers)
    return Statement(name, digest, DerivedModel(
        source_uri=_str(src["uri"], "predicate.source.uri"),
        source_sha256=_hex(src["digest"]["sha256"], "predicate.source.digest.sha256"),
        source_signature=None if sig is None else SourceSignature(
            _str(sig["signer"], "predicate.source.signature.signer"),
            _hex(sig["bundle"]["digest"]["sha256"], "predicate.source.signature.bundle.digest.sha256")),
        technique=_str(p["derivation"]["technique"], "predicate.derivation.technique"),
        precision=_str(p["derivation"]["precision"], "predicate.derivation.precision"),
        runtime=_str(p["derivation"]["runtime"], "predicate.derivation.runtime"),
        gates=gates, versions={str(k): str(v) for k, v in dict(p.get("toolchain") or {}).items()}))


def sign_statement(statement: Statement, signer: Signer) -> bytes:
    """The statement in a DSSE envelope signed by `signer`, as the bytes stored next to the artifact."""
    return dsse.sign(statement.to_json(), PAYLOAD_TYPE, signer).to_json()
