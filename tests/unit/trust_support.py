"""Attestations for the trust tests: keys, statements and envelopes made the way the optimizer makes them."""

from __future__ import annotations

import hashlib

from edgewise.shared.trust.keys import Signer, generate_ec
from edgewise.shared.trust.statement import DerivedModel, Gate, SourceSignature, Statement, sign_statement

SOURCE = b"the source model bytes"
SOURCE_SHA = hashlib.sha256(SOURCE).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def derived(artifact_sha256: str, source_sha256: str = SOURCE_SHA, signed_by: str | None = "key 0123") -> Statement:
    return Statement("model.onnx", artifact_sha256, DerivedModel(
        source_uri="https://models.example/m.onnx", source_sha256=source_sha256,
        source_signature=SourceSignature(signed_by, "a" * 64) if signed_by else None,
        technique="int8 dynamic per-channel", precision="int8", runtime="onnxruntime",
        gates={"accuracy": Gate(True, {"minCosine": 0.998, "limitMinCosine": 0.99}),
               "memory": Gate(True, {"peakMiB": 41.5, "limitMiB": 512.0})},
        versions={"edgewise": "0.1.0", "onnxruntime": "1.31.1", "onnx": "1.23.2"}))


def attest(artifact: bytes, signer: Signer, **kwargs: object) -> bytes:
    return sign_statement(derived(sha256(artifact), **kwargs), signer)  # type: ignore[arg-type]


__all__ = ["SOURCE", "SOURCE_SHA", "attest", "derived", "generate_ec", "sha256"]
