"""`helm install` of the chart into the real control plane, in a namespace enforcing `restricted`.

The images are not run here (kwok nodes only; the real-node tests run them): this checks what
the API server decides about the chart — PodSecurity admission of the operator pod, the agent's
namespace, the commands NOTES.txt prints, and what `helm uninstall` leaves.
"""

from __future__ import annotations

import base64
import shlex
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_support import REPO, exists, get

from edgewise.api.settings import OperatorSettings
from edgewise.controller.reconcile import Reconciler
from edgewise.devcluster.cluster import DevCluster
from edgewise.shared.trust.keys import Signer, TrustedKeys, generate_ec, private_pem
from wait_support import wait_for

CHART = REPO / "charts" / "edgewise"


@pytest.fixture
def release(cluster: DevCluster, namespace: str) -> Iterator[tuple[str, str]]:
    """(release name, its NOTES) installed in the restricted `namespace`; uninstalled after."""
    name = f"ew{uuid.uuid4().hex[:6]}"
    out = cluster.helm("install", name, str(CHART), "-n", namespace, "--set", f"agent.namespace={namespace}-node")
    try:
        yield name, out.stdout.partition("NOTES:")[2]
    finally:
        cluster.helm("uninstall", name, "-n", namespace, check=False)
        cluster.kubectl("delete", "namespace", f"{namespace}-node", "--ignore-not-found", "--wait=false",
                        check=False)


def _pod_of(cluster: DevCluster, namespace: str, release: str, *values: str) -> dict[str, Any]:
    """The operator Pod the chart's Deployment would create, rendered with `values` (--set)."""
    sets = [a for v in values for a in ("--set", v)]
    rendered = cluster.helm("template", release, str(CHART), "-n", namespace, *sets).stdout
    (deployment,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"]
    template = deployment["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {**template["metadata"], "name": f"{release}-probe",
                                                             "namespace": namespace}, "spec": template["spec"]}


def test_the_operator_pod_is_admitted_where_restricted_is_enforced(
    cluster: DevCluster, namespace: str, release: tuple[str, str]
) -> None:
    name, _ = release
    selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/component=operator"
    wait_for(lambda: get(cluster, "pods", "-n", namespace, "-l", selector)["items"], 90,
             "the Deployment's operator pod (admitted under restricted)")
    # The same admission refuses the pod once the values loosen it: the check above can fail.
    loose = _pod_of(cluster, namespace, name, "operator.podSecurityContext.runAsNonRoot=false",
                    "operator.securityContext.allowPrivilegeEscalation=true")
    out = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(loose), check=False)
    assert out.returncode != 0 and "violates PodSecurity" in out.stderr, out.stderr
    default = _pod_of(cluster, namespace, name)
    cluster.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(default))


def test_the_chart_creates_the_agents_privileged_namespace(
    cluster: DevCluster, namespace: str, release: tuple[str, str]
) -> None:
    ns = get(cluster, "namespace", f"{namespace}-node")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    deployment = get(cluster, "deployment", f"{release[0]}-operator", "-n", namespace)
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["EDGEWISE_AGENT_NAMESPACE"] == f"{namespace}-node"


def test_the_notes_commands_work(cluster: DevCluster, namespace: str, release: tuple[str, str]) -> None:
    name, notes = release
    commands = [shlex.split(line.split("#")[0]) for line in notes.splitlines() if line.strip().startswith("kubectl ")]
    runnable = [c for c in commands if not any("<" in a for a in c) and "logs" not in c]  # kwok pods: no logs
    assert len(runnable) == 3, notes
    for command in runnable:
        out = cluster.kubectl(*command[1:], check=False)
        assert out.returncode == 0, f"{shlex.join(command)}: {out.stderr}"
    deployment = cluster.kubectl(*runnable[0][1:]).stdout
    assert f"{name}-operator" in deployment


def test_uninstall_leaves_the_crds_and_takes_the_agents_namespace(cluster: DevCluster, namespace: str) -> None:
    name = f"ew{uuid.uuid4().hex[:6]}"
    agent_ns = f"{namespace}-gone"
    cluster.helm("install", name, str(CHART), "-n", namespace, "--set", f"agent.namespace={agent_ns}")
    cluster.helm("uninstall", name, "-n", namespace, "--wait")
    assert exists(cluster, "crd", "edgemodels.edgewise.io") and exists(cluster, "crd", "deploymentprofiles.edgewise.io")
    assert not exists(cluster, "deployment", f"{name}-operator", "-n", namespace)

    def going() -> bool:
        return not exists(cluster, "namespace", agent_ns) or \
            get(cluster, "namespace", agent_ns)["status"]["phase"] == "Terminating"

    wait_for(going, 60, "the agent namespace going")


def test_a_missing_agent_namespace_is_reported_with_its_fix(cluster: DevCluster) -> None:
    missing = f"ew-node-{uuid.uuid4().hex[:6]}"
    with cluster.api_client() as api:
        reconciler = Reconciler(api, OperatorSettings(agent_namespace=missing))
        with pytest.raises(RuntimeError, match=f"namespace '{missing}' does not exist.*enforce=privileged"):
            reconciler.agent()


def test_the_nodes_trust_the_key_the_chart_holds_at_install_and_through_a_rotation(
        cluster: DevCluster, namespace: str, tmp_path: Path) -> None:
    """The chart writes the operator's key into the nodes' ConfigMap itself (a certificate around it), reading
    the Secret it generated or was given with `lookup`, which only a live install can: `helm template` cannot."""
    name, agent_ns = f"ew{uuid.uuid4().hex[:6]}", f"{namespace}-trust"
    trust = ["--set", f"agent.namespace={agent_ns}", "--set", "trust.nodeTrustedKeys.configMap=ew-trust"]

    def operator_key(secret: str) -> str:
        data = get(cluster, "secret", secret, "-n", namespace)["data"]["key.pem"]
        return Signer.load(base64.b64decode(data)).key_id

    def trusted() -> dict[str, list[str]]:
        data = get(cluster, "configmap", "ew-trust", "-n", agent_ns)["data"]
        return {k: TrustedKeys.from_pem(v.encode()).ids() for k, v in data.items()}

    cluster.helm("install", name, str(CHART), "-n", namespace, *trust, "--set", "trust.attestationKey.generate=true")
    try:
        generated = operator_key(f"{name}-operator-attestation-key")
        assert trusted() == {"operator.pem": [generated]}
        cluster.helm("upgrade", name, str(CHART), "-n", namespace, *trust, "--set",
                     "trust.attestationKey.generate=true", "--set", "operator.logLevel=DEBUG")
        assert operator_key(f"{name}-operator-attestation-key") == generated  # kept, and still the one trusted
        assert trusted() == {"operator.pem": [generated]}
        # A rotation's second step: the operator signs with a key of yours; the old one stays trusted beside it.
        new = generate_ec()
        cluster.kubectl("create", "secret", "generic", "mine", "-n", namespace,
                        f"--from-literal=key.pem={private_pem(new).decode()}")
        old = tmp_path / "old.pem"
        old.write_text(get(cluster, "configmap", "ew-trust", "-n", agent_ns)["data"]["operator.pem"])
        cluster.helm("upgrade", name, str(CHART), "-n", namespace, *trust, "--set",
                     "trust.attestationKey.existingSecret=mine", "--set-file",
                     f"trust.nodeTrustedKeys.publicKeys[0]={old}")
        assert trusted() == {"operator.pem": [new.key_id], "key-0.pem": [generated]}
    finally:
        cluster.helm("uninstall", name, "-n", namespace, check=False)
        cluster.kubectl("delete", "namespace", agent_ns, "--ignore-not-found", "--wait=false", check=False)
