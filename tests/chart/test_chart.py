"""The Helm chart, rendered by the real `helm`: lint, defaults, every option, the schema, the settings it passes."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from chart_support import (
    ALL_OPTIONS,
    CHART,
    NAMESPACE,
    RELEASE,
    Helm,
    env_of,
    one,
    operator_pod,
    operator_service_account,
    values_doc,
)

from edgewise.api.settings import DEFAULT_NGC_RELEASE, ENV_PREFIX, OperatorSettings

VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
# Read by `edgewise operator run` itself, not by OperatorSettings.
CLI_ENV = {"EDGEWISE_LOG_LEVEL"}
# Values ALL_OPTIONS leaves at their default: booleans whose other side has its own test, and
# the Jetson tags whose empty default is what derives them from images.ngcRelease.
KEPT_DEFAULTS = {"artifacts.enabled", "trust.attestationKey.generate",  # its other side has a test of its own
                 "serviceAccount.create", "images.tritonJetson.tag", "images.triton.tag",
                 "images.triton.repository"}


def _lookup(values: dict[str, Any], key: str) -> Any:
    node: Any = values
    for part in key.split("."):
        node = node[part]
    return node


def test_lint_strict_passes_with_defaults_and_with_every_option(helm: Helm) -> None:
    for values in ({}, ALL_OPTIONS):
        out = helm.run("lint", "--strict", str(CHART), values=values)
        assert out.returncode == 0 and "0 chart(s) failed" in out.stdout, out.stdout + out.stderr


def test_every_option_is_set_by_the_all_options_render() -> None:
    keys = [key for key, _ in values_doc().leaves(SCHEMA, VALUES)]
    assert len(keys) > 40
    for key in keys:
        assert _lookup(ALL_OPTIONS, key) != _lookup(VALUES, key) or key in KEPT_DEFAULTS, key


def test_defaults_render_the_operator_and_the_agent_namespace(helm: Helm) -> None:
    docs = helm.template()
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"} <= kinds
    ns = one(docs, "Namespace")
    assert ns["metadata"]["name"] == "edgewise-node"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    pod = operator_pod(docs)
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert container["image"] == "edgewise/operator:0.1.0"
    assert spec["serviceAccountName"] == operator_service_account(docs)["metadata"]["name"] == f"{RELEASE}-operator"
    for absent in ("imagePullSecrets", "nodeSelector", "tolerations", "affinity", "priorityClassName"):
        assert absent not in spec, absent
    assert "annotations" not in pod["metadata"]
    # Liveness and readiness both ask the work probe kopf serves on --liveness.
    liveness = next(a for a in container["args"] if a.startswith("--liveness=")).removeprefix("--liveness=")
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "health")
    assert liveness == f"http://0.0.0.0:{port}/healthz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe


def test_every_option_reaches_the_operator_deployment(helm: Helm) -> None:
    docs = helm.template(ALL_OPTIONS)
    op = ALL_OPTIONS["operator"]
    deployment = one(docs, "Deployment")
    pod = operator_pod(docs)
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert container["image"] == "registry.local:5000/acme/edgewise-operator:9.9.9"
    assert container["imagePullPolicy"] == "Always"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror-pull"}]
    assert (spec["nodeSelector"], spec["tolerations"], spec["affinity"]) == (
        op["nodeSelector"], op["tolerations"], op["affinity"])
    assert spec["priorityClassName"] == "edgewise-critical"
    assert spec["securityContext"] == op["podSecurityContext"]
    assert container["securityContext"] == op["securityContext"]
    assert container["resources"] == op["resources"]
    assert pod["metadata"]["annotations"] == op["podAnnotations"]
    labels = pod["metadata"]["labels"]
    assert labels["team"] == "ml-platform"
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert ["--namespace=vision", "--namespace=retail"] == [a for a in container["args"] if a.startswith("--ns") or
                                                              a.startswith("--namespace")]
    (artifacts,) = [v for v in spec["volumes"] if v["name"] == "artifacts"]
    assert artifacts["persistentVolumeClaim"] == {"claimName": "edgewise-artifacts"}
    sa = operator_service_account(docs)
    assert sa["metadata"]["name"] == spec["serviceAccountName"] == "edgewise-op"
    assert sa["metadata"]["annotations"] == {"example.com/owner": "ml"}
    assert "Namespace" not in {d["kind"] for d in docs}  # agent.createNamespace: false


def test_pod_labels_cannot_break_the_selector(helm: Helm) -> None:
    docs = helm.template({"operator": {"podLabels": {"app.kubernetes.io/instance": "other", "team": "a"}}})
    labels = operator_pod(docs)["metadata"]["labels"]
    assert labels["app.kubernetes.io/instance"] == RELEASE and labels["team"] == "a"


def _restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    """What the `restricted` Pod Security Standard refuses, as far as a pod template shows it."""
    out = [flag for flag in ("hostNetwork", "hostPID", "hostIPC") if pod_spec.get(flag)]
    out += [v["name"] for v in pod_spec.get("volumes", []) if "hostPath" in v]
    pod_sc = pod_spec.get("securityContext", {})
    for c in [*pod_spec.get("initContainers", []), *pod_spec["containers"]]:
        sc = c.get("securityContext", {})
        checks = {
            "non-root": sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True
            and sc.get("runAsUser", pod_sc.get("runAsUser")) != 0,
            "no privilege escalation": sc.get("allowPrivilegeEscalation") is False and not sc.get("privileged"),
            "drop ALL": sc.get("capabilities", {}).get("drop") == ["ALL"] and not sc.get("capabilities", {}).get("add"),
            "seccomp": sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
            in ("RuntimeDefault", "Localhost"),
            # Not in the standard, but the chart promises it: nothing writes outside its volumes.
            "read-only root": sc.get("readOnlyRootFilesystem") is True,
        }
        out += [f"{c['name']}: {what}" for what, ok in checks.items() if not ok]
    return out


@pytest.mark.parametrize("values", [{}, ALL_OPTIONS], ids=["defaults", "every-option"])
def test_the_operator_pod_passes_restricted(helm: Helm, values: dict[str, Any]) -> None:
    assert _restricted_violations(operator_pod(helm.template(values))["spec"]) == []


def test_the_restricted_check_bites(helm: Helm) -> None:
    # Helm merges maps into the defaults: a key goes only when set to null.
    loose = {"operator": {"podSecurityContext": {"runAsUser": 0, "seccompProfile": None},
                          "securityContext": {"privileged": True, "capabilities": None,
                                              "readOnlyRootFilesystem": False}}}
    violations = _restricted_violations(operator_pod(helm.template(loose))["spec"])
    assert {"operator: non-root", "operator: no privilege escalation", "operator: drop ALL",
            "operator: seccomp", "operator: read-only root"} == set(violations)


def test_default_settings_round_trip_and_agree_with_the_operators_defaults(helm: Helm) -> None:
    env = env_of(helm.template())
    unknown = {k for k in env if k.removeprefix(ENV_PREFIX).lower() not in OperatorSettings.model_fields
               and not k.startswith("OTEL_")} - CLI_ENV
    assert not unknown, f"the chart sets env no setting reads: {unknown}"
    chart = OperatorSettings.from_env(env)
    code = OperatorSettings()
    # The chart enables the built-in artifact store and runs in its release namespace; everything
    # else it sets must be exactly the operator's own default, so `operator run` and the chart agree.
    differ = {"namespace", "artifact_dir", "artifact_url"}
    for name in OperatorSettings.model_fields:
        if name not in differ:
            assert getattr(chart, name) == getattr(code, name), name
    assert chart.namespace == NAMESPACE
    assert chart.artifact_url == f"http://{RELEASE}-operator-artifacts.{NAMESPACE}.svc:8090"
    assert (chart.agent_image, chart.onnxruntime_image) == ("edgewise/agent:0.1.0", "edgewise/onnxruntime:0.1.0")
    assert chart.openvino_image == "edgewise/node-openvino:0.1.0"
    assert chart.triton_image == "nvidia/tritonserver:25.01-py3-igpu"
    assert chart.tensorrt_fetch_image == "edgewise/triton-jetson:25.01-0.1.0"
    assert chart.agent_namespace == "edgewise-node"


def test_every_option_round_trips_through_the_operator_settings(helm: Helm) -> None:
    s = OperatorSettings.from_env(env_of(helm.template(ALL_OPTIONS)))
    assert s.image(s.agent_image) == "registry.local:5000/acme/agent:1.2.3"
    # The tracing values: the operator's OTEL_* variables, passed on to agents and Jobs.
    assert s.trace_env == {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.monitoring:4318",
                           "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
    assert s.image(s.onnxruntime_image) == "registry.local:5000/acme/onnxruntime:1.2.3"
    assert s.image(s.openvino_image) == "registry.local:5000/acme/node-openvino:1.2.4"
    assert s.image(s.triton_image) == "registry.local:5000/nvidia/tritonserver:25.03-py3-igpu"
    assert s.image(s.tensorrt_fetch_image) == "registry.local:5000/acme/triton-jetson:25.03-0.1.0"
    assert s.image(s.operator_image) == "registry.local:5000/acme/edgewise-operator:9.9.9"
    assert (s.ngc_release, s.image_pull_secrets, s.image_pull_policy) == ("25.03", ("regcred", "mirror-pull"),
                                                                         "Always")
    assert (s.namespace, s.agent_namespace) == (NAMESPACE, "ew-node")
    assert (s.agent_cache_dir, s.agent_keep, s.agent_max_cache) == ("/data/edgewise", 3, "50Gi")
    assert s.agent_node_selector == {"edgewise.io/edge": "true", "kubernetes.io/os": "linux"}  # helm merges maps
    assert (s.nvidia_runtime_class, s.gpu_resource) == ("nvidia-legacy", "nvidia.com/gpu.shared")
    assert (s.workers, s.resync_seconds) == (4, 120)
    assert (s.probe_max_reconcile_seconds, s.probe_max_queue_age_seconds) == (900, 1200)
    assert (s.optimize_memory_mib, s.optimize_timeout_seconds, s.optimize_retry_seconds) == (8192, 600, 30)
    assert (s.trust_policy_config_map, s.require_signed_sources) == ("trust/signers", True)
    assert (s.node_trusted_keys_config_map, s.attestation_key_file) == ("ew-trust",
                                                                        "/etc/edgewise/attestation/key.pem")
    assert s.node_plan_check is True
    bandwidth = s.agent_bandwidth
    assert (bandwidth.site_label, bandwidth.time_zone, bandwidth.one_copy_per_site) == ("edgewise.io/site",
                                                                                        "Europe/Berlin", False)
    assert (bandwidth.budget("factory-a").bytes_per_second, bandwidth.budget("elsewhere").daily_bytes) == (
        1_000_000, 20_000_000_000)


def test_without_the_artifact_store_or_a_created_service_account(helm: Helm) -> None:
    docs = helm.template({"artifacts": {"enabled": False}, "serviceAccount": {"create": False, "name": "ops"}})
    # Only the metrics Service is left: the artifact store's is gone with the store.
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Service"] == [f"{RELEASE}-operator-metrics"]
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"] == ["edgewise-node-agent"]
    env = env_of(docs)
    assert "EDGEWISE_ARTIFACT_DIR" not in env and OperatorSettings.from_env(env).artifact_dir == ""
    assert operator_pod(docs)["spec"]["serviceAccountName"] == "ops"


# Bad values, and where helm's message points (a JSON pointer, or the unknown key).
BAD_VALUES = [
    ({"operator": {"workers": "two"}}, "/operator/workers"),
    ({"operator": {"nodeselector": {"a": "b"}}}, "'nodeselector' not allowed"),  # misspelt: closed section
    ({"operator": {"image": {"pullPolicy": "Sometimes"}}}, "/operator/image/pullPolicy"),
    ({"operator": {"tolerations": [{"key": "a", "operator": "Exist"}]}}, "/operator/tolerations/0/operator"),
    ({"operator": {"podAnnotations": {"a": 1}}}, "/operator/podAnnotations/a"),
    ({"operator": {"logLevel": "LOUD"}}, "/operator/logLevel"),
    ({"imagePullSecrets": "regcred"}, "/imagePullSecrets"),
    ({"imagePullSecrets": [{"nam": "regcred"}]}, "/imagePullSecrets/0"),
    ({"imageRegistry": "https://registry.local"}, "/imageRegistry"),
    ({"images": {"ngcRelease": 25.01}}, "/images/ngcRelease"),
    ({"images": {"node": "edgewise/node:0.1.0"}}, "'node' not allowed"),  # the value this chart had before
    ({"agent": {"namespace": "Edge_Node"}}, "/agent/namespace"),
    ({"agent": {"maxCacheSize": "20 GB"}}, "/agent/maxCacheSize"),
    ({"artifacts": {"enabled": "yes"}}, "/artifacts/enabled"),
]


@pytest.mark.parametrize(("values", "names"), BAD_VALUES, ids=[n for _, n in BAD_VALUES])
def test_the_schema_refuses_bad_values_and_names_them(helm: Helm, values: dict[str, Any], names: str) -> None:
    err = helm.refuses(values)
    assert "values don't meet the specifications of the schema" in err and names in err, err


def test_the_top_level_stays_open_for_other_sections(helm: Helm) -> None:
    helm.template({"extensions": {"anything": True}})  # a key of a sibling chart or tool


def test_the_ngc_release_from_the_command_line(helm: Helm) -> None:
    # --set keeps 25.03 a string (only a values file needs quotes: BAD_VALUES has the float refused).
    env = env_of(helm.template({}, "--set", "images.ngcRelease=25.03"))
    assert env["EDGEWISE_TRITON_IMAGE"] == "nvidia/tritonserver:25.03-py3-igpu"
    assert env["EDGEWISE_TENSORRT_FETCH_IMAGE"] == "edgewise/triton-jetson:25.03-0.1.0"


def test_one_ngc_release_by_default_in_the_chart_the_operator_and_the_jetson_dockerfile() -> None:
    dockerfile = (CHART.parents[1] / "runtime-images" / "Dockerfile.triton-jetson").read_text()
    in_dockerfile = set(re.findall(r"^ARG \w+=\S*?(\d{2}\.\d{2})", dockerfile, flags=re.MULTILINE))
    assert in_dockerfile == {VALUES["images"]["ngcRelease"]} == {DEFAULT_NGC_RELEASE}


def test_the_agent_cannot_be_created_in_the_release_namespace(helm: Helm) -> None:
    err = helm.refuses({"agent": {"namespace": NAMESPACE}})
    assert "agent.createNamespace=false" in err and "privileged" in err, err
    env = env_of(helm.template({"agent": {"namespace": NAMESPACE, "createNamespace": False}}))
    assert env["EDGEWISE_AGENT_NAMESPACE"] == NAMESPACE
