"""The operator's ServiceAccount, with the chart's real RBAC and admission policies: what it cannot do.

The chart is rendered with `helm template`, its RBAC and ValidatingAdmissionPolicies are applied
to the real apiserver (operator_support.Operator.install), and every request below is made as
the operator's ServiceAccount (kubectl --as). RBAC refuses what it can express (reading any
Secret, creating pods); the policies refuse the rest (node patches beyond edgewise.io/* labels,
Secrets and workloads that are not edgewise's, host access, privileged or root pods).
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from operator_support import Operator, apply, get

from edgewise.api.settings import OperatorSettings
from edgewise.core.agent import agent_daemonset
from edgewise.core.plan import plan_model
from edgewise.devcluster.cluster import DevCluster
from unit.planning_support import factory_floor, fleet, model
from wait_support import wait_for

HELM_SECRET = "sh.helm.release.v1.edgewise.v1"


class As:
    """Requests as the operator's ServiceAccount (the apiserver's impersonation), as the operator makes
    them: a write is one request (no read before a patch, unlike kubectl)."""

    def __init__(self, cluster: DevCluster, op: Operator) -> None:
        self.api = cluster.api_client()
        self.api.set_default_header("Impersonate-User", op.username)
        self.core = k8s.CoreV1Api(self.api)
        self.apps = k8s.AppsV1Api(self.api)

    def call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> str:
        """'' when the request passed, else the apiserver's answer (403: RBAC or a policy)."""
        try:
            fn(*args, **kw)
            return ""
        except k8s.ApiException as err:
            assert err.status in (403, 422), err.body  # refused, not broken
            return str(json.loads(err.body).get("message", err.body))


@pytest.fixture(scope="module")
def installed(cluster: DevCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The chart's RBAC and policies, installed; no operator process (requests are made as its account)."""
    with _installed(cluster, Path(tmp_path_factory.mktemp("rbac"))) as op:
        yield op


@contextlib.contextmanager
def _installed(cluster: DevCluster, workdir: Path, chart_values: Sequence[str] = ()) -> Iterator[Operator]:
    op = Operator(cluster, workdir, chart_values=list(chart_values))
    op.install()
    probe = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "probe", "namespace": op.namespace}}
    me = As(cluster, op)
    # Policies are enforced once the apiserver's admission plugin has loaded them.
    wait_for(lambda: "own Secrets" in me.call(me.core.create_namespaced_secret, op.namespace, probe, dry_run="All"),
             60, "the admission policies to be enforced")
    try:
        yield op
    finally:
        op.uninstall()


@pytest.fixture
def me(cluster: DevCluster, installed: Operator) -> Iterator[As]:
    a = As(cluster, installed)
    with a.api:
        yield a


def test_the_operator_reads_no_secret(cluster: DevCluster, installed: Operator, me: As) -> None:
    ns = installed.namespace
    apply(cluster, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": HELM_SECRET, "namespace": ns,
                                                                        "labels": {"owner": "helm"}},
                    "stringData": {"release": "the release"}})
    for fn, args in ((me.core.read_namespaced_secret, (HELM_SECRET, ns)),
                     (me.core.read_namespaced_secret, ("edgewise-optimize-x", ns)),
                     (me.core.list_namespaced_secret, (ns,)),
                     (me.core.list_secret_for_all_namespaces, ())):
        assert "cannot get resource" in me.call(fn, *args) or "cannot list resource" in me.call(fn, *args), fn
    assert "cannot list" in me.call(me.core.list_namespaced_secret, ns, label_selector="edgewise.io/optimization-job")
    assert "cannot watch" in me.call(me.core.list_namespaced_secret, ns, watch=True, timeout_seconds=1)


def test_the_operator_reads_config_maps_by_name_only(cluster: DevCluster, installed: Operator, me: As,
                                                     namespace: str) -> None:
    """Trust policies name their ConfigMap of signers: the operator gets it, and lists or writes none."""
    apply(cluster, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "signers", "namespace": namespace},
                    "data": {"publisher.pem": "-----BEGIN PUBLIC KEY-----"}})
    assert me.call(me.core.read_namespaced_config_map, "signers", namespace) == ""
    assert "cannot list" in me.call(me.core.list_namespaced_config_map, namespace)
    assert "cannot list" in me.call(me.core.list_config_map_for_all_namespaces)
    assert "cannot patch" in me.call(me.core.patch_namespaced_config_map, "signers", namespace,
                                     {"data": {"x": "y"}})
    assert "cannot delete" in me.call(me.core.delete_namespaced_config_map, "signers", namespace)


def test_the_operator_writes_only_its_own_secrets(cluster: DevCluster, installed: Operator, me: As) -> None:
    ns = installed.namespace
    apply(cluster, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": HELM_SECRET, "namespace": ns},
                    "stringData": {"release": "the release"}})
    own = {"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "edgewise-optimize-0123", "namespace": ns,
                        "labels": {"app.kubernetes.io/part-of": "edgewise"}},
           "stringData": {"token": "t"}}
    # What the operator does with a Job's token Secret: create, own (patch), delete.
    assert me.call(me.core.create_namespaced_secret, ns, own) == ""
    assert me.call(me.core.patch_namespaced_secret, "edgewise-optimize-0123", ns,
                   {"metadata": {"labels": {"edgewise.io/optimization-job": "0123"}}}) == ""
    assert me.call(me.core.delete_namespaced_secret, "edgewise-optimize-0123", ns) == ""

    policy = "edgewise operator writes only its own Secrets"
    other = copy.deepcopy(own)
    other["metadata"]["name"] = "database-password"
    assert policy in me.call(me.core.create_namespaced_secret, ns, other)
    unlabelled = copy.deepcopy(own)
    del unlabelled["metadata"]["labels"]
    assert policy in me.call(me.core.create_namespaced_secret, ns, unlabelled)
    # A patch answers with the Secret's data: refused before it is applied.
    assert policy in me.call(me.core.patch_namespaced_secret, HELM_SECRET, ns,
                             {"metadata": {"labels": {"app.kubernetes.io/part-of": "edgewise"}}})
    assert policy in me.call(me.core.delete_namespaced_secret, HELM_SECRET, ns)
    assert get(cluster, "secret", HELM_SECRET, "-n", ns)["metadata"].get("labels") is None


def test_the_operator_patches_only_edgewise_labels_of_nodes(cluster: DevCluster, installed: Operator, me: As,
                                                           fleet: Any) -> None:
    [node] = fleet({"arm64-cpu": 1})
    policy = "edgewise operator may change only edgewise.io/* labels of a node"
    # The one write it needs (the rollout bucket), the patch kube/writes.py (Writes.label_buckets) sends.
    assert me.call(me.core.patch_node, node, {"metadata": {"labels": {"edgewise.io/bucket": "7"}}}) == ""
    assert get(cluster, "node", node)["metadata"]["labels"]["edgewise.io/bucket"] == "7"
    for patch in ({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}},
                  {"metadata": {"labels": {"kubernetes.io/arch": "amd64"}}},
                  {"metadata": {"labels": {"kubernetes.io/arch": None}}},
                  {"metadata": {"labels": {"edgewise.io/bucket": "8", "example.com/x": "y"}}},
                  {"metadata": {"annotations": {"example.com/x": "y"}}},
                  {"metadata": {"finalizers": ["example.com/keep"]}},
                  {"spec": {"unschedulable": True}},
                  {"spec": {"taints": [{"key": "x", "effect": "NoSchedule"}]}}):
        assert policy in me.call(me.core.patch_node, node, patch), patch
    after = get(cluster, "node", node)
    assert after["metadata"]["labels"]["kubernetes.io/arch"] == "arm64"
    # Only the taint it tried is looked for: the node lifecycle controller may taint a kwok node not-ready
    # for a moment (seen once, in a full run), which is none of the operator's doing.
    assert after["metadata"]["labels"]["edgewise.io/bucket"] == "7"
    assert not [t for t in after["spec"].get("taints") or [] if t["key"] == "x"]
    assert "cannot delete resource" in me.call(me.core.delete_node, node)


def _rendered(namespace: str, class_name: str = "arm-cpu", settings: OperatorSettings | None = None
              ) -> dict[str, Any]:
    """A runtime DaemonSet exactly as the operator renders it."""
    plan = plan_model(model(), factory_floor(), fleet(jetson_orin=1, arm64_cpu=1), [], settings or OperatorSettings())
    manifest = copy.deepcopy(next(w.manifest for w in plan.workloads if w.class_name == class_name))
    manifest["metadata"]["namespace"] = namespace
    del manifest["metadata"]["ownerReferences"]  # no EdgeModel exists here to own it
    return manifest


def test_the_operator_creates_no_pod_but_what_it_renders(installed: Operator, me: As, namespace: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "anything"}]}}
    for ns in (namespace, installed.namespace):
        assert "cannot create resource" in me.call(me.core.create_namespaced_pod, ns, pod)

    rendered = _rendered(namespace)
    assert me.call(me.apps.create_namespaced_daemon_set, namespace, rendered, dry_run="All") == ""
    settings = OperatorSettings(namespace=installed.namespace, agent_namespace=installed.agent_namespace)
    agent = agent_daemonset(settings)
    assert me.call(me.apps.create_namespaced_daemon_set, installed.agent_namespace, agent, dry_run="All") == ""

    def variant(change: Callable[[dict[str, Any], dict[str, Any]], Any]) -> dict[str, Any]:
        d = copy.deepcopy(rendered)
        change(d, d["spec"]["template"]["spec"])
        return d

    host_path = {"name": "root", "hostPath": {"path": "/"}}
    refused = {
        "part of edgewise": variant(lambda d, p: d["metadata"]["labels"].pop("app.kubernetes.io/part-of")),
        "host's network": variant(lambda d, p: p.update(hostNetwork=True)),
        "network, PID or IPC": variant(lambda d, p: p.update(hostPID=True)),
        "mounts a hostPath": variant(lambda d, p: p.update(volumes=[*p["volumes"], host_path])),
        "never privileged": variant(lambda d, p: p["containers"][0].update(securityContext={"privileged": True})),
        "never escalate": variant(lambda d, p: p["containers"][0]["securityContext"].pop("allowPrivilegeEscalation")),
        "add no capabilities": variant(
            lambda d, p: p["initContainers"][0]["securityContext"].update(capabilities={"add": ["SYS_ADMIN"]})),
        "run as non-root": variant(lambda d, p: p["securityContext"].update(runAsNonRoot=False)),
        "toleration of every taint": variant(lambda d, p: p.update(tolerations=[{"operator": "Exists"}])),
    }
    for says, manifest in refused.items():
        answer = me.call(me.apps.create_namespaced_daemon_set, namespace, manifest, dry_run="All")
        assert says in answer, (says, answer)
    # The agent's exceptions are the agent's: the same DaemonSet under another name is refused.
    impostor = copy.deepcopy(agent)
    impostor["metadata"]["name"] = "edgewise-miner"
    assert "host's network" in me.call(me.apps.create_namespaced_daemon_set, installed.agent_namespace, impostor,
                                       dry_run="All")
    # And the agent's name in another namespace (the operator's own) has none of them.
    elsewhere = copy.deepcopy(agent)
    elsewhere["metadata"]["namespace"] = installed.namespace
    assert "host's network" in me.call(me.apps.create_namespaced_daemon_set, installed.namespace, elsewhere,
                                       dry_run="All")


def test_the_operator_leaves_other_workloads_alone(cluster: DevCluster, me: As, namespace: str) -> None:
    theirs = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "theirs", "namespace": namespace},
              "spec": {"selector": {"matchLabels": {"app": "theirs"}},
                       "template": {"metadata": {"labels": {"app": "theirs"}},
                                    "spec": {"containers": [{"name": "c", "image": "theirs:1"}]}}}}
    apply(cluster, theirs)
    says = "writes only workloads that are part of edgewise"
    assert says in me.call(me.apps.delete_namespaced_daemon_set, "theirs", namespace)
    assert says in me.call(me.apps.patch_namespaced_daemon_set, "theirs", namespace,
                           {"metadata": {"labels": {"app.kubernetes.io/part-of": "edgewise"}}})
    assert "part-of" not in json.dumps(get(cluster, "daemonset", "theirs", "-n", namespace)["metadata"])


def test_the_chart_ships_the_policies_it_is_tested_with(cluster: DevCluster) -> None:
    """`security.admissionPolicies: false` is the only way to leave them out."""
    from operator_support import REPO

    def kinds(*values: str) -> set[str]:
        out = cluster.helm("template", "t", str(REPO / "charts" / "edgewise"), *values).stdout
        return {d["kind"] for d in yaml.safe_load_all(out) if d}

    assert {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} <= kinds()
    assert not {"ValidatingAdmissionPolicy"} & kinds("--set", "security.admissionPolicies=false")


def test_the_chart_passes_its_security_values_to_the_operator(cluster: DevCluster) -> None:
    from operator_support import REPO

    out = cluster.helm("template", "t", str(REPO / "charts" / "edgewise"),
                       "--set", "security.allowedImages={ghcr.example/acme/ort,reg.example/ml/*}",
                       "--set", "security.prometheusAddresses={http://prom.monitoring:9090}",
                       "--set", "security.allowKeylessTolerations=true").stdout
    deployment = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment")
    env = {e["name"]: e.get("value", "") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    s = OperatorSettings.from_env(env)
    assert s.allowed_images == ("ghcr.example/acme/ort", "reg.example/ml/*")
    assert s.prometheus_addresses == ("http://prom.monitoring:9090",) and s.allow_keyless_tolerations
    default_env = {e["name"]: e.get("value", "") for e in next(
        d for d in yaml.safe_load_all(cluster.helm("template", "t", str(REPO / "charts" / "edgewise")).stdout)
        if d and d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    d = OperatorSettings.from_env(default_env)
    assert (d.allowed_images, d.prometheus_addresses, d.allow_keyless_tolerations) == ((), (), False)


def test_with_node_plan_check_runtime_pods_may_read_the_plan_key_directory_and_nothing_else(
        cluster: DevCluster, me: As, namespace: str, tmp_path: Path) -> None:
    """trust.nodePlanCheck: triton-tensorrt pods read the node's public plan key through a read-only hostPath of
    the agent's plan-key directory. The chart's policy lets exactly that through, and only when the value is set."""
    checked = _rendered(namespace, "jetson-orin", OperatorSettings(node_plan_check=True))
    spec = checked["spec"]["template"]["spec"]
    assert {"path": "/var/lib/edgewise/cache/plan-key", "type": "Directory"} in [
        v["hostPath"] for v in spec["volumes"] if "hostPath" in v]
    # Without the value (the module's install), the chart refuses the plan-key hostPath like any other.
    assert "mounts a hostPath" in me.call(me.apps.create_namespaced_daemon_set, namespace, checked, dry_run="All")

    def variant(change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        d = copy.deepcopy(checked)
        change(d["spec"]["template"]["spec"])
        return d

    def writable(p: dict[str, Any]) -> None:
        for m in p["initContainers"][0]["volumeMounts"]:
            if m["mountPath"].startswith("/etc/edgewise/plan-key"):
                m["readOnly"] = False

    def elsewhere(p: dict[str, Any]) -> None:
        next(v for v in p["volumes"] if "hostPath" in v)["hostPath"]["path"] = "/var/lib/edgewise/cache"

    with _installed(cluster, tmp_path, ["trust.nodePlanCheck=true"]) as op:
        checking = As(cluster, op)
        with checking.api:
            assert checking.call(checking.apps.create_namespaced_daemon_set, namespace, checked,
                                 dry_run="All") == ""
            for why, manifest in {"read-write": variant(writable),
                                  "the agent's whole cache": variant(elsewhere)}.items():
                answer = checking.call(checking.apps.create_namespaced_daemon_set, namespace, manifest, dry_run="All")
                assert "only its plan-key directory, read-only" in answer, (why, answer)
