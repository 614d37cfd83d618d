"""The trust fields of the API: source.signature, a profile's trustPolicy, the operator's trust settings, and what
the CRDs tell the apiserver about them."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from edgewise.api.crd import rendered
from edgewise.api.model import Source
from edgewise.api.profile import DeploymentProfileSpec
from edgewise.api.settings import OperatorSettings

DIGEST = "a" * 64


def _schema(kind_file: str) -> dict:
    return yaml.safe_load(rendered()[kind_file])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]


def test_a_source_may_carry_its_model_signing_bundle_pinned_by_digest() -> None:
    source = Source.model_validate({"uri": "https://m.example/m.onnx", "sha256": DIGEST,
                                    "signature": {"uri": "https://m.example/m.onnx.sig", "sha256": "b" * 64}})
    assert source.signature is not None and source.signature.sha256 == "b" * 64
    assert Source.model_validate({"uri": "https://m.example/m.onnx", "sha256": DIGEST}).signature is None
    with pytest.raises(ValidationError):
        Source.model_validate({"uri": "https://m.example/m.onnx", "sha256": DIGEST,
                               "signature": {"uri": "ftp://m.example/m.sig"}})


def test_the_crd_requires_a_digest_for_an_http_signature_and_describes_it() -> None:
    signature = _schema("edgewise.io_edgemodels.yaml")["spec"]["properties"]["source"]["properties"]["signature"]
    assert "model-signing bundle" in signature["description"]
    rules = [v["rule"] for v in signature["x-kubernetes-validations"]]
    assert any("http" in r and "has(self.sha256)" in r for r in rules)
    assert signature["properties"]["uri"]["maxLength"] == 2048


def test_a_profiles_trust_policy_defaults_to_allowing_unsigned_models() -> None:
    spec = DeploymentProfileSpec.model_validate({"classes": [{"name": "cpu", "runtime": "onnxruntime"}],
                                                 "trustPolicy": {"configMap": "signers"}})
    assert spec.trust_policy is not None
    assert (spec.trust_policy.config_map, spec.trust_policy.require_signed) == ("signers", False)
    assert DeploymentProfileSpec.model_validate({"classes": [{"name": "cpu", "runtime": "onnxruntime"}]}
                                                ).trust_policy is None
    with pytest.raises(ValidationError):
        DeploymentProfileSpec.model_validate({"classes": [{"name": "cpu", "runtime": "onnxruntime"}],
                                              "trustPolicy": {"configMap": "Not_A_Name"}})
    policy = _schema("edgewise.io_deploymentprofiles.yaml")["spec"]["properties"]["trustPolicy"]
    assert policy["properties"]["requireSigned"]["default"] is False
    assert ".pem" in policy["properties"]["configMap"]["description"]


def test_the_operators_trust_settings_come_from_its_environment() -> None:
    s = OperatorSettings.from_env({"EDGEWISE_ATTESTATION_KEY_FILE": "/var/run/secrets/edgewise.io/attest/key.pem",
                                   "EDGEWISE_REQUIRE_SIGNED_SOURCES": "true",
                                   "EDGEWISE_TRUST_POLICY_CONFIG_MAP": "edgewise-system/signers"})
    assert s.attestation_key_file.endswith("key.pem") and s.require_signed_sources
    assert s.trust_policy_config_map == "edgewise-system/signers"
    defaults = OperatorSettings.from_env({})
    assert (defaults.attestation_key_file, defaults.require_signed_sources) == ("", False)
