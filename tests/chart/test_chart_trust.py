"""The chart's trust values: the operator's attestation key (generated, or a Secret given), the nodes' trusted
public keys in a ConfigMap, the source-signing policy, and the one ConfigMap read the operator may make."""

from __future__ import annotations

import base64

from chart_support import NAMESPACE, RELEASE, Helm, env_of, one, operator_pod
from cryptography.hazmat.primitives.asymmetric import ec

from edgewise.api.settings import OperatorSettings
from edgewise.shared.trust.keys import Signer, TrustedKeys, public_pem

SECRET = f"{RELEASE}-operator-attestation-key"
KEY_FILE = "/etc/edgewise/attestation/key.pem"


def _mounts(docs: list) -> tuple[dict, dict]:
    spec = operator_pod(docs)["spec"]
    (container,) = spec["containers"]
    return ({m["name"]: m for m in container["volumeMounts"]}, {v["name"]: v for v in spec["volumes"]})


def test_by_default_nothing_of_trust_is_rendered(helm: Helm) -> None:
    docs = helm.template()
    assert not [d for d in docs if d["kind"] in ("Secret", "ConfigMap")]
    mounts, volumes = _mounts(docs)
    assert "attestation-key" not in mounts and "attestation-key" not in volumes
    s = OperatorSettings.from_env(env_of(docs))
    assert (s.attestation_key_file, s.node_trusted_keys_config_map, s.trust_policy_config_map,
            s.require_signed_sources) == ("", "", "", False)


def test_a_generated_key_is_an_ec_p256_key_the_operator_loads_and_is_kept(helm: Helm) -> None:
    docs = helm.template({"trust": {"attestationKey": {"generate": True}}})
    secret = one(docs, "Secret")
    assert secret["metadata"]["name"] == SECRET and secret["metadata"]["namespace"] == NAMESPACE
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    signer = Signer.load(base64.b64decode(secret["data"]["key.pem"]))
    key = signer.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert public_pem(key).startswith(b"-----BEGIN PUBLIC KEY-----")
    mounts, volumes = _mounts(docs)
    assert volumes["attestation-key"]["secret"] == {"secretName": SECRET, "defaultMode": 0o440}
    assert mounts["attestation-key"] == {"name": "attestation-key", "mountPath": "/etc/edgewise/attestation",
                                         "readOnly": True}
    assert OperatorSettings.from_env(env_of(docs)).attestation_key_file == KEY_FILE


def test_an_existing_secret_is_mounted_and_none_is_made(helm: Helm) -> None:
    docs = helm.template({"trust": {"attestationKey": {"existingSecret": "mine"}}})
    assert not [d for d in docs if d["kind"] == "Secret"]
    _, volumes = _mounts(docs)
    assert volumes["attestation-key"]["secret"]["secretName"] == "mine"
    assert OperatorSettings.from_env(env_of(docs)).attestation_key_file == KEY_FILE
    assert "not both" in helm.refuses({"trust": {"attestationKey": {"generate": True, "existingSecret": "mine"}}})


def test_the_nodes_public_keys_go_where_the_agent_and_the_watched_namespaces_read_them(helm: Helm) -> None:
    pem = public_pem(Signer.load(_generated(helm)).public_key()).decode()
    docs = helm.template({"operator": {"watchNamespaces": ["vision", "retail"]},
                          "trust": {"nodeTrustedKeys": {"configMap": "ew-trust", "publicKeys": [pem]}}})
    maps = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "ConfigMap"}
    assert sorted(maps) == ["edgewise-node", "retail", "vision"]
    assert all(m["metadata"]["name"] == "ew-trust" and m["data"] == {"key-0.pem": pem} for m in maps.values())
    assert OperatorSettings.from_env(env_of(docs)).node_trusted_keys_config_map == "ew-trust"
    assert "needs trust.nodeTrustedKeys.configMap" in helm.refuses(
        {"trust": {"nodeTrustedKeys": {"publicKeys": [pem]}}})
    # Named only (made by you): the operator renders with it, the chart makes none.
    named = helm.template({"trust": {"nodeTrustedKeys": {"configMap": "ew-trust"}}})
    assert not [d for d in named if d["kind"] == "ConfigMap"]


def test_a_generated_key_is_trusted_by_the_nodes_with_no_step_by_hand(helm: Helm) -> None:
    """Helm cannot write a bare public key; it wraps the generated key in a self-signed certificate, which the
    nodes load as that key alone. Keys given as values stay trusted beside it (a rotation's old key)."""
    old = public_pem(Signer.load(_generated(helm)).public_key()).decode()
    docs = helm.template({"operator": {"watchNamespaces": ["vision"]},
                          "trust": {"attestationKey": {"generate": True},
                                    "nodeTrustedKeys": {"configMap": "ew-trust", "publicKeys": [old]}}})
    operator_key = Signer.load(base64.b64decode(one(docs, "Secret")["data"]["key.pem"]))
    maps = {d["metadata"]["namespace"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    assert sorted(maps) == ["edgewise-node", "vision"]
    for data in maps.values():
        assert sorted(data) == ["key-0.pem", "operator.pem"]
        assert data["operator.pem"].startswith("-----BEGIN CERTIFICATE-----")
        assert TrustedKeys.from_pem(data["operator.pem"].encode()).ids() == [operator_key.key_id]
        both = TrustedKeys.from_pem((data["operator.pem"] + data["key-0.pem"]).encode())
        assert operator_key.key_id in both and len(both) == 2
    # Generated, with no ConfigMap named: nodes check digests only, and nothing is written for them.
    assert not [d for d in helm.template({"trust": {"attestationKey": {"generate": True}}}) if d["kind"] == "ConfigMap"]
    # A Secret of your own is read at install (`lookup`); `helm template` cannot, so it writes no key for it.
    given = helm.template({"trust": {"attestationKey": {"existingSecret": "mine"},
                                     "nodeTrustedKeys": {"configMap": "ew-trust"}}})
    assert not [d for d in given if d["kind"] == "ConfigMap"]


def _host_path_rule(docs: list) -> dict:
    (policy,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy" and d["metadata"]["name"].endswith(
        "-workloads")]
    (rule,) = [v for v in policy["spec"]["validations"] if "hostPath" in v["expression"]]
    return rule


def test_the_plan_check_is_off_by_default_and_only_then_may_runtime_pods_mount_the_plan_key_directory(
        helm: Helm) -> None:
    from edgewise.core.pods import plan_key_host_dir

    off = helm.template()
    assert OperatorSettings.from_env(env_of(off)).node_plan_check is False
    assert "plan-key" not in _host_path_rule(off)["expression"]
    on = helm.template({"agent": {"cacheDir": "/data/edgewise/"}, "trust": {"nodePlanCheck": True}})
    s = OperatorSettings.from_env(env_of(on))
    assert s.node_plan_check is True
    rule = _host_path_rule(on)
    # Exactly the directory the operator renders (agent.cacheDir's plan-key), read-only, for non-agent workloads.
    assert f'!variables.agent && v.hostPath.path == "{plan_key_host_dir(s.agent_cache_dir)}"' in rule["expression"]
    assert "m.?readOnly.orValue(false)" in rule["expression"]
    assert 'variables.agent && v.hostPath.path == "/data/edgewise/"' in rule["expression"]


def test_the_operator_reads_config_maps_by_name_only(helm: Helm) -> None:
    (role,) = [d for d in helm.template()
               if d["kind"] == "ClusterRole" and d["metadata"]["name"] == f"{RELEASE}-operator"]
    rules = role["rules"]
    cm = [r for r in rules if "configmaps" in r["resources"]]
    assert cm == [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]
    assert not [r for r in rules if "secrets" in r["resources"]]  # the ClusterRole reads no Secret


def test_the_schema_refuses_a_bad_policy_reference(helm: Helm) -> None:
    assert "policyConfigMap" in helm.refuses({"trust": {"policyConfigMap": "Not/A/Name"}})
    assert "publicKeys" in helm.refuses({"trust": {"nodeTrustedKeys": {"configMap": "x", "publicKeys": ["nope"]}}})


def _generated(helm: Helm) -> bytes:
    return base64.b64decode(one(helm.template({"trust": {"attestationKey": {"generate": True}}}),
                                "Secret")["data"]["key.pem"])
