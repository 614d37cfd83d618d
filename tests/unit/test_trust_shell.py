"""The source-trust gate's shell, without a cluster: the policy's ConfigMap, fetching the bundle and the model
(pinned by digest), verifying them with model-signing offline, and caching what it found."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from kubernetes import client
from test_trust_source_policy import sign_model
from trust_support import generate_ec

from edgewise.api.resources import EdgeModel
from edgewise.api.settings import OperatorSettings
from edgewise.controller.source_trust import SourceTrust, policy_from_config_map
from edgewise.core.plan import ResolvedProfile
from edgewise.core.trust_gate import NOT_CHECKED
from edgewise.shared.trust.keys import public_pem
from edgewise.shared.trust.policy import SignatureCheck


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _model(model: Path, bundle: Path | None, bundle_sha: str | None = None) -> EdgeModel:
    source: dict = {"uri": model.as_uri(), "sha256": _sha(model)}
    if bundle is not None:
        source["signature"] = {"uri": bundle.as_uri(), "sha256": bundle_sha or _sha(bundle)}
    return EdgeModel.model_validate({
        "metadata": {"name": "m", "namespace": "vision", "uid": "u", "generation": 1},
        "spec": {"version": "1", "profileRef": "p", "source": source}})


def _profile(config_map: str | None = "signers", require_signed: bool = False) -> ResolvedProfile:
    from edgewise.api.resources import DeploymentProfile
    spec = {"classes": [{"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"}, "runtime": "onnxruntime"}],
            "trustPolicy": {**({"configMap": config_map} if config_map else {}), "requireSigned": require_signed}}
    return ResolvedProfile(name="p", spec=DeploymentProfile.model_validate({"metadata": {"name": "p"},
                                                                           "spec": spec}).spec)


def _trust(tmp_path: Path, config_maps: dict, calls: list | None = None) -> SourceTrust:
    def read(ns: str, name: str):
        if calls is not None:
            calls.append((ns, name))
        found = config_maps.get((ns, name))
        if isinstance(found, Exception):
            raise found
        return found
    return SourceTrust(OperatorSettings(local_source_dirs=(str(tmp_path),)), read)


def test_config_map_keys_by_suffix() -> None:
    a, b = generate_ec(), generate_ec()
    policy = policy_from_config_map({"a.pem": public_pem(a.public_key()).decode(),
                                     "b.pub": public_pem(b.public_key()).decode(),
                                     "ca.crt": "-----BEGIN CERTIFICATE-----\n", "README": "ignored"}, True)
    assert len(policy.public_keys) == 2 and len(policy.certificate_chains) == 1 and policy.require_signed


def test_a_model_signed_by_a_key_of_the_config_map_is_signed(tmp_path) -> None:
    signer = generate_ec()
    model, bundle = sign_model(tmp_path, signer)
    trust = _trust(tmp_path, {("vision", "signers"): {"k.pem": public_pem(signer.public_key()).decode()}})
    verdict = trust.verdict(_model(model, bundle), _profile(require_signed=True))
    assert (verdict.allowed, verdict.status, verdict.reason) == (True, "True", "Signed")
    assert verdict.signer.startswith("key ")
    assert verdict.bundle_sha256 == _sha(bundle)  # what the optimizer's attestation binds


def test_a_signer_not_in_the_config_map_and_a_changed_model_are_refused(tmp_path) -> None:
    signer = generate_ec()
    model, bundle = sign_model(tmp_path, signer)
    other = _trust(tmp_path, {("vision", "signers"): {"k.pem": public_pem(generate_ec().public_key()).decode()}})
    assert other.verdict(_model(model, bundle), _profile()).reason == "UnknownSigner"
    model.write_bytes(b"other bytes")  # its sha256 pin follows (the writer changed both), the signature does not
    trusted = _trust(tmp_path, {("vision", "signers"): {"k.pem": public_pem(signer.public_key()).decode()}})
    verdict = trusted.verdict(_model(model, bundle), _profile())
    assert (verdict.allowed, verdict.reason) == (False, "BadSignature")


def test_unsigned_needs_no_download_and_follows_require_signed(tmp_path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    trust = _trust(tmp_path, {("vision", "signers"): {}})
    assert trust.verdict(_model(model, None), _profile()).allowed
    refused = trust.verdict(_model(model, None), _profile(require_signed=True))
    assert (refused.allowed, refused.reason) == (False, "Unsigned")
    # A missing ConfigMap does not matter to an unsigned model: only the requirement does.
    assert _trust(tmp_path, {}).verdict(_model(model, None), _profile()).allowed


def test_what_cannot_be_checked_is_held_and_not_cached(tmp_path) -> None:
    signer = generate_ec()
    model, bundle = sign_model(tmp_path, signer)
    keys = {"k.pem": public_pem(signer.public_key()).decode()}
    missing = _trust(tmp_path, {}).verdict(_model(model, bundle), _profile())
    assert (missing.allowed, missing.status, missing.reason) == (False, "Unknown", NOT_CHECKED)
    assert "vision/signers does not exist" in missing.message
    forbidden = _trust(tmp_path, {("vision", "signers"): client.ApiException(status=403)})
    assert "HTTP 403" in forbidden.verdict(_model(model, bundle), _profile()).message
    pinned_wrong = _trust(tmp_path, {("vision", "signers"): keys}).verdict(
        _model(model, bundle, bundle_sha="0" * 64), _profile())
    assert pinned_wrong.reason == NOT_CHECKED and "signature bundle does not match its sha256" in pinned_wrong.message
    # file:// outside the directories the operator may read: refused in fixed words, never opened.
    outside = SourceTrust(OperatorSettings(), lambda ns, n: keys).verdict(_model(model, bundle), _profile())
    assert outside.reason == NOT_CHECKED and "file://" in outside.message


def test_a_verdict_is_cached_per_source_bundle_and_signers(tmp_path) -> None:
    model, bundle = sign_model(tmp_path, generate_ec())
    checks: list[Path] = []

    def check(path, bundle_path, policy):
        checks.append(path)
        return SignatureCheck("unknown_signer", "key 00")
    trust = SourceTrust(OperatorSettings(local_source_dirs=(str(tmp_path),)),
                        lambda ns, n: {"k.pem": public_pem(generate_ec().public_key()).decode()}, check)
    # Each read of the ConfigMap here yields another key: the signers changed, so it is checked again.
    trust.verdict(_model(model, bundle), _profile())
    trust.verdict(_model(model, bundle), _profile())
    assert len(checks) == 2
    fixed = {"k.pem": public_pem(generate_ec().public_key()).decode()}
    trust = SourceTrust(OperatorSettings(local_source_dirs=(str(tmp_path),)), lambda ns, n: fixed, check)
    for _ in range(3):
        assert trust.verdict(_model(model, bundle), _profile()).reason == "UnknownSigner"
    assert len(checks) == 3


def test_the_builtin_profile_uses_the_operators_policy(tmp_path) -> None:
    from edgewise.api.builtin import BUILTIN_PROFILE, BUILTIN_PROFILE_NAME
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    calls: list = []
    trust = SourceTrust(OperatorSettings(trust_policy_config_map="trust/signers", require_signed_sources=True),
                        lambda ns, n: calls.append((ns, n)) or {})
    verdict = trust.verdict(_model(model, None), ResolvedProfile(BUILTIN_PROFILE_NAME, BUILTIN_PROFILE, builtin=True))
    assert (verdict.allowed, verdict.reason) == (False, "Unsigned") and calls == [("trust", "signers")]
    assert "operator's trust policy" in verdict.message


@pytest.mark.parametrize("require", [False, True])
def test_a_profile_without_trust_policy_uses_the_operators(tmp_path, require) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    from edgewise.api.resources import DeploymentProfile
    spec = DeploymentProfile.model_validate({"metadata": {"name": "p"}, "spec": {"classes": [
        {"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"}, "runtime": "onnxruntime"}]}}).spec
    trust = SourceTrust(OperatorSettings(require_signed_sources=require), lambda ns, n: None)
    assert trust.verdict(_model(model, None), ResolvedProfile("p", spec)).allowed is not require
