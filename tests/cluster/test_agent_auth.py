"""The node agent's callers, checked by the real apiserver: TokenReviews of projected tokens.

The agent runs as a process with the ServiceAccount and RBAC the chart gives it; pods
run through the pod runner, which fills their projected token volume the way a kubelet
does (a TokenRequest bound to the pod). A pod on the agent's node gets its model through
the agent; a pod on another node, a token for another audience and a made-up token get
nothing from it; the operator's ServiceAccount may stage but not read.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from edgewise import contract
from edgewise.core import pods
from edgewise.devcluster import processes
from edgewise.devcluster.cluster import DevCluster
from edgewise.devcluster.podrunner import PodRunner
from node.cache_support import REPO, SourceServer, free_port, http
from wait_support import wait_for

MODEL = b"an onnx model, as far as the agent cares " * 2000


@pytest.fixture
def source() -> Iterator[SourceServer]:
    server = SourceServer().start()
    yield server
    server.stop()


@pytest.fixture
def chart_rbac(cluster: DevCluster, namespace: str) -> Iterator[dict[str, str]]:
    """The chart's agent-rbac.yaml, applied for a release in `namespace`; the user names it defines."""
    release = f"a{uuid.uuid4().hex[:6]}"
    rendered = cluster.helm("template", release, str(REPO / "charts" / "edgewise"), "-n", namespace,
                            "--skip-crds", "--set", f"agent.namespace={namespace}",
                            "--set", "agent.createNamespace=false",
                            "--show-only", "templates/agent-rbac.yaml",
                            "--show-only", "templates/serviceaccount.yaml").stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    accounts = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d["metadata"]["name"]
                for d in docs if d["kind"] == "ServiceAccount"}
    try:
        yield accounts
    finally:
        for d in docs:
            if d["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                cluster.kubectl("delete", d["kind"].lower(), d["metadata"]["name"], "--ignore-not-found",
                                check=False)


def token(cluster: DevCluster, namespace: str, account: str, *audience: str) -> str:
    flags = [f"--audience={a}" for a in audience]
    return cluster.kubectl("create", "token", account, "-n", namespace, "--duration=1h", *flags).stdout.strip()


@pytest.fixture
def agent(cluster: DevCluster, namespace: str, fleet, chart_rbac, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The real agent for the first of two nodes, checking tokens as the chart's agent ServiceAccount."""
    nodes = fleet({"arm64-cpu": 2})
    own = tmp_path / "agent-sa.token"
    own.write_text(token(cluster, namespace, chart_rbac["node-agent"]))  # the default (apiserver) audience
    port = free_port()
    state = cluster.state()
    assert state is not None
    operator_user = f"system:serviceaccount:{namespace}:{chart_rbac['operator']}"
    argv = [sys.executable, "-m", "edgewise", "agent", "--host", "127.0.0.1", "--port", str(port),
            "--cache-dir", str(tmp_path / "cache"), "--node-name", nodes[0], "--operator-user", operator_user,
            "--apiserver", state.server, "--apiserver-token-file", str(own),
            "--apiserver-ca", str(cluster.pki / "ca.crt"), "--allow-host", "127.0.0.1",
            "--peer-user", f"system:serviceaccount:{namespace}:{chart_rbac['node-agent']}"]
    proc = processes.start("agent", argv, tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), 60, "the agent to listen")
        yield {"url": url, "nodes": nodes, "operator": chart_rbac["operator"], "log": tmp_path,
               "node-agent": chart_rbac["node-agent"]}
    finally:
        processes.stop(proc)


def _answers(url: str) -> bool:
    try:
        return http("GET", url + "/healthz", timeout=2)[0] == 200
    except OSError:
        return False


def fetch_pod(name: str, node: str, request: contract.FetchRequest) -> dict[str, Any]:
    """A run-to-completion pod of the real fetch container, with its real projected token volume."""
    security = pods.container_security(65532)
    return {
        "metadata": {"name": name, "labels": {"app": "agent-auth"}},
        "spec": {
            "nodeName": node, "restartPolicy": "Never", "automountServiceAccountToken": False,
            "securityContext": pods.pod_security(65532),
            "containers": [{"name": "fetch", "image": "edgewise/node:dev", "command": ["edgewise", "fetch"],
                            "args": request.to_args(), "securityContext": security,
                            "volumeMounts": [*pods.model_mounts(read_only=False), pods.agent_token_mount()]}],
            "volumes": pods.volumes(),
        },
    }


def listing(agent: dict[str, Any], bearer: str) -> list[dict[str, Any]]:
    status, _, body = http("GET", agent["url"] + "/v1/artifacts", token=bearer)
    assert status == 200, body
    return list(json.loads(body)["artifacts"])


def test_pods_of_the_agents_node_are_served_others_are_refused(
        cluster: DevCluster, namespace: str, agent, source, tmp_path: Path) -> None:
    digest = hashlib.sha256(MODEL).hexdigest()
    uri = source.add("/m.onnx", MODEL)
    operator = token(cluster, namespace, agent["operator"], contract.AGENT_AUDIENCE)
    with cluster.api_client() as api:
        core = k8s.CoreV1Api(api)
        for name, node in (("here", agent["nodes"][0]), ("elsewhere", agent["nodes"][1])):
            request = contract.FetchRequest(uri=uri, sha256=digest, model_name="detector", agent=agent["url"])
            core.create_namespaced_pod(namespace, fetch_pod(name, node, request))  # admitted under `restricted`
        with PodRunner(api, tmp_path / "pods", namespace, "app=agent-auth").start():
            for name in ("here", "elsewhere"):
                wait_for(lambda n=name: core.read_namespaced_pod(n, namespace).status.phase == "Succeeded",
                         120, f"pod {name} to fetch its model")
    logs = {p.parent.name.split("-")[0]: p.read_text() for p in (tmp_path / "pods").rglob("fetch.log")}
    assert "from the agent" in logs["here"], logs["here"]
    # The other node's pod has a valid token, bound to the wrong node: refused, it used the source.
    assert "HTTP 403" in logs["elsewhere"] and "from the source" in logs["elsewhere"], logs["elsewhere"]
    assert [(e["sha256"], e["models"]) for e in listing(agent, operator)] == [(digest, [f"{namespace}/detector"])]
    assert source.count("/m.onnx") == 2  # once for the agent, once for the refused pod


def test_tokens_for_another_audience_or_made_up_are_refused_and_the_operator_only_stages(
        cluster: DevCluster, namespace: str, agent, source) -> None:
    digest = hashlib.sha256(MODEL).hexdigest()
    uri = source.add("/m.onnx", MODEL)
    api_audience = token(cluster, namespace, agent["operator"])  # valid, but for the apiserver
    made_up = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjQxMDI0NDQ4MDB9.c2lnbmF0dXJl"
    for bearer in (api_audience, made_up):
        status, _, body = http("GET", f"{agent['url']}/v1/artifacts/{digest}?uri={uri}", token=bearer)
        assert status == 401, body
    operator = token(cluster, namespace, agent["operator"], contract.AGENT_AUDIENCE)
    status, _, body = http("GET", f"{agent['url']}/v1/artifacts/{digest}?uri={uri}", token=operator)
    assert status == 403, body  # the operator stages, it does not read through the agent
    body_json = json.dumps({"uri": uri, "sha256": digest, "model": "detector", "namespace": namespace}).encode()
    status, _, body = http("POST", agent["url"] + contract.AGENT_PREFETCH_PATH, body_json, token=operator)
    assert status in (200, 202), body
    wait_for(lambda: any(e["sha256"] == digest for e in listing(agent, operator)), 60, "the staged artifact")
    assert source.count("/m.onnx") == 1


def test_the_operator_asks_for_its_agent_token_with_its_own_service_account(
        cluster: DevCluster, namespace: str, agent) -> None:
    """The operator's side: SelfSubjectReview for its user name, TokenRequest (chart RBAC) for the token."""
    from edgewise.api.settings import OperatorSettings
    from edgewise.kube.agent_credentials import AgentCredentials

    sa_token = token(cluster, namespace, agent["operator"])
    state = cluster.state()
    assert state is not None
    configuration = k8s.Configuration(host=state.server, api_key={"authorization": f"Bearer {sa_token}"})
    configuration.ssl_ca_cert = str(cluster.pki / "ca.crt")
    with k8s.ApiClient(configuration) as api:
        credentials = AgentCredentials(api, OperatorSettings())
        assert credentials.user() == f"system:serviceaccount:{namespace}:{agent['operator']}"
        issued = credentials.token()
    assert issued
    status, _, body = http("GET", agent["url"] + "/v1/artifacts", token=issued)
    assert status == 200, body  # the agent knows this user as its operator


def test_the_agent_refuses_to_start_without_a_node_name(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "edgewise", "agent", "--cache-dir", str(tmp_path / "c"),
                           "--port", str(free_port())], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"}, cwd=REPO, check=False)
    assert proc.returncode == 2 and "--node-name" in proc.stderr


def test_another_nodes_agent_may_stage_and_read_by_digest_but_not_list_nor_set_the_budget(
        cluster: DevCluster, namespace: str, agent, source) -> None:
    """A peer of the site: the agents' own ServiceAccount, with a token of the agent audience."""
    digest = hashlib.sha256(MODEL).hexdigest()
    uri = source.add("/m.onnx", MODEL)
    peer = token(cluster, namespace, agent["node-agent"], contract.AGENT_AUDIENCE)
    body = json.dumps({"uri": uri, "sha256": digest, "model": "detector", "namespace": namespace,
                       "site": "elsewhere", "budget": {"bytesPerSecond": 1}}).encode()
    status, _, answer = http("POST", agent["url"] + contract.AGENT_PREFETCH_PATH, body, token=peer)
    assert status in (200, 202), answer
    wait_for(lambda: json.loads(http("GET", f"{agent['url']}{contract.AGENT_PREFETCH_PATH}/{digest}",
                                     token=peer)[2])["state"] == "ready", 60, "the peer's prefetch")
    status, _, data = http("GET", f"{agent['url']}/v1/artifacts/{digest}", token=peer)
    assert status == 200 and data == MODEL
    assert http("GET", agent["url"] + "/v1/artifacts", token=peer)[0] == 403  # the listing is the operator's
    health = json.loads(http("GET", agent["url"] + "/healthz")[2])
    assert health["bandwidth"]["site"] == "" and health["bandwidth"]["bytesPerSecond"] is None  # not a peer's say
    api_audience = token(cluster, namespace, agent["node-agent"])  # the agent's own token for the apiserver
    assert http("GET", f"{agent['url']}/v1/artifacts/{digest}", token=api_audience)[0] == 401
