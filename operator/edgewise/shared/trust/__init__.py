"""Trust in what runs on the devices: attestations of derived artifacts, their signatures, and checks.

Pure code that the operator (which signs) and the node runtime (which verifies, offline) both
import, so it lives in `edgewise.shared` and imports only `cryptography` (and, lazily, the
OpenSSF `model_signing` package in `source_signature`, which only the operator side needs).

    keys.py              key ids, private and trusted public keys (PEM, ECDSA P-256 or Ed25519)
    dsse.py              DSSE envelopes: sign, and verify against a set of trusted keys
    statement.py         in-toto Statement v1 for a derived artifact or a TensorRT plan
    verify.py            is this artifact's attestation good enough to serve it? a Verdict with a Reason
    policy.py            the source model's signature against a trust policy: Signed/Unsigned/...
    source_signature.py  what `model_signing` says about a source model's signature bundle
"""
