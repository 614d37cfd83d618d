"""Running the real operator against the test cluster, as its own least-privileged ServiceAccount.

The operator runs as a subprocess (`python -m edgewise operator run`) with a
kubeconfig holding a token of a ServiceAccount bound to the Helm chart's
ClusterRole, so every integration test also proves the chart's RBAC suffices.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from edgewise import contract
from edgewise.api.settings import OperatorSettings
from edgewise.devcluster import processes, real_models
from edgewise.devcluster.cluster import DevCluster
from wait_support import wait_for

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def apply(
    cluster: DevCluster, docs: Iterable[dict[str, Any]] | dict[str, Any], check: bool = True
) -> subprocess.CompletedProcess[str]:
    items = [docs] if isinstance(docs, dict) else list(docs)
    return cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(items), check=check)


def example(name: str, namespace: str) -> list[dict[str, Any]]:
    """An example file's resources, moved into the test's namespace."""
    docs = [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]
    for d in docs:
        d["metadata"]["namespace"] = namespace
    return docs


def get(cluster: DevCluster, *args: str) -> dict[str, Any]:
    return dict(json.loads(cluster.kubectl("get", *args, "-o", "json").stdout))


def exists(cluster: DevCluster, *args: str) -> bool:
    return cluster.kubectl("get", *args, check=False).returncode == 0


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), {})


def classes(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """An EdgeModel's per-class status entries by class name."""
    return {c["name"]: c for c in obj.get("status", {}).get("classes") or []}


def rollout_classes(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """An EdgeModel's per-class rollout status entries by class name."""
    return {c["name"]: c for c in ((obj.get("status") or {}).get("rollout") or {}).get("classes") or []}


def wait_artifacts(cluster: DevCluster, ns: str, name: str, count: int, timeout: float) -> dict[str, Any]:
    """The EdgeModel once each of its `count` classes has a Ready artifact."""

    def ready(obj: dict[str, Any]) -> bool:
        cs = classes(obj)
        return len(cs) == count and all(c.get("artifactState") == "Ready" for c in cs.values())

    return wait_status(cluster, ns, name, ready, f"an artifact for each of {count} classes", timeout)


def digests_deployed(cluster: DevCluster, ns: str) -> set[str]:
    """The artifact digests the namespace's DaemonSets fetch."""
    out = set()
    for ds in get(cluster, "daemonsets", "-n", ns)["items"]:
        args = ds["spec"]["template"]["spec"]["initContainers"][0]["args"]
        out.add(args[args.index("--sha256") + 1])
    return out


def wait_status(
    cluster: DevCluster, ns: str, name: str, predicate: Callable[[dict[str, Any]], object], what: str,
    timeout: float = 90,
) -> dict[str, Any]:
    """The EdgeModel `name` once `predicate` holds for it."""

    def check() -> dict[str, Any] | None:
        obj = get(cluster, "edgemodel", name, "-n", ns)
        return obj if predicate(obj) else None

    return wait_for(check, timeout, f"{name}: {what}")  # type: ignore[return-value]


def running_pods(cluster: DevCluster, ns: str, model: str) -> list[dict[str, Any]]:
    """The Running (not terminating) pods of `model` that are on a node."""
    pods = get(cluster, "pods", "-n", ns, "-l", f"edgewise.io/model={model}")["items"]
    return [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
            and p["spec"].get("nodeName")]


def model_versions(cluster: DevCluster, ns: str, model: str) -> dict[str, str]:
    """node → version of its Running (not terminating) pod of `model` (the last one listed when two overlap)."""
    return {p["spec"]["nodeName"]: p["metadata"]["labels"]["edgewise.io/version"]
            for p in running_pods(cluster, ns, model)}


def events_of(cluster: DevCluster, ns: str, name: str) -> list[tuple[str, str]]:
    """(reason, message) of the Events about the object `name` in `ns`."""
    out = cluster.kubectl("get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}",
                          "-o", "json").stdout
    return [(e["reason"], e["message"]) for e in json.loads(out)["items"]]


def crash_loop(cluster: DevCluster, ns: str, pod: dict[str, Any]) -> None:
    """Report the pod's container crash-looping, as a kubelet would (kwok runs no container, and leaves a
    Running pod's status alone)."""
    statuses = [{**c, "ready": False, "started": False, "restartCount": 4,
                 "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting (test)"}},
                 "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}
                for c in pod["status"]["containerStatuses"]]
    conditions = [{**c, "status": "False"} if c["type"] in ("Ready", "ContainersReady") else c
                  for c in pod["status"]["conditions"]]
    patch = {"status": {"containerStatuses": statuses, "conditions": conditions}}
    cluster.kubectl("patch", "pod", pod["metadata"]["name"], "-n", ns, "--subresource=status", "--type=merge",
                    "-p", json.dumps(patch))


def node_ips(cluster: DevCluster, nodes: list[str]) -> dict[str, str]:
    """node → its InternalIP (a loopback address of this machine for a kwok node: a node agent can listen there)."""
    items = get(cluster, "nodes")["items"]
    return {n["metadata"]["name"]: next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
            for n in items if n["metadata"]["name"] in nodes}


def pods_by_node(cluster: DevCluster, ns: str, selector: str) -> dict[str, str]:
    """Running pods matching `selector`: node name → pod name."""
    items = get(cluster, "pods", "-n", ns, "-l", selector)["items"]
    return {
        p["spec"]["nodeName"]: p["metadata"]["name"]
        for p in items
        if p["status"].get("phase") == "Running" and p["spec"].get("nodeName")
    }


def set_node_ready(cluster: DevCluster, node: str, ready: bool, why: str = "uplink lost (test)") -> None:
    """Take a kwok node's status over and report it NotReady, or hand it back to kwok (Ready again)."""
    if ready:
        cluster.kubectl("annotate", "node", node, "kwok.x-k8s.io/status-")
        return
    cluster.kubectl("annotate", "node", node, "kwok.x-k8s.io/status=custom", "--overwrite")
    patch = {"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                                        "message": why}]}}
    cluster.kubectl("patch", "node", node, "--subresource=status", "--type=strategic", "-p", json.dumps(patch))


def install_crds(cluster: DevCluster) -> None:
    """Apply the project's CRDs and wait until the apiserver serves both."""
    cluster.kubectl("apply", "-f", str(REPO / "crds"))
    cluster.wait_established("edgemodels.edgewise.io", "deploymentprofiles.edgewise.io")


CLUSTER_POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


def wait_policies_enforced(cluster: DevCluster, policies: list[dict[str, Any]], timeout: float = 60) -> None:
    """Until the apiserver has compiled every policy (its status says which generation it checked)."""

    def checked() -> bool:
        for p in policies:
            status = get(cluster, "validatingadmissionpolicy", p["metadata"]["name"]).get("status") or {}
            if status.get("observedGeneration") is None:
                return False
            warnings = (status.get("typeChecking") or {}).get("expressionWarnings")
            assert not warnings, f"policy {p['metadata']['name']} does not type-check: {warnings}"
        return True

    wait_for(checked, timeout, "the admission policies to be checked by the apiserver")


@contextmanager
def running_operator(cluster: DevCluster, workdir: Path, extra_args: list[str] | None = None,
                     extra_env: dict[str, str] | None = None) -> Iterator[Operator]:
    """An installed, started operator for the duration of the block; uninstalled after."""
    op = Operator(cluster, workdir, extra_args, extra_env)
    op.install()
    op.start()
    try:
        yield op
    finally:
        op.uninstall()


# Every Operator a test made, while something still holds it: a failing test's report shows their logs.
_OPERATORS: weakref.WeakSet[Operator] = weakref.WeakSet()


def running_operators() -> list[Operator]:
    """The operators whose process runs now (a test may have made its own, outside the fixtures)."""
    return [op for op in _OPERATORS if op.proc is not None and op.proc.poll() is None]


class Operator:
    """One operator subprocess; `restart()` kills it and starts a fresh one."""

    def __init__(self, cluster: DevCluster, workdir: Path, extra_args: list[str] | None = None,
                 extra_env: dict[str, str] | None = None, chart_values: list[str] | None = None) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.extra_args = extra_args or []
        self.extra_env = extra_env or {}  # EDGEWISE_* settings
        self.chart_values = chart_values or []  # helm --set key=value, for what the chart renders differently
        # kopf's liveness endpoint with the work probe, as the chart's probes ask it.
        self.liveness_url = f"http://127.0.0.1:{processes.free_port()}/healthz"
        self.namespace = f"ew-system-{uuid.uuid4().hex[:6]}"
        # The agent's own namespace (privileged: host network, hostPath), one per operator under test.
        self.agent_namespace = f"{self.namespace}-node"
        self.release = f"ew{uuid.uuid4().hex[:6]}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "operator-0.log"
        self.starts = 0
        _OPERATORS.add(self)

    # -- setup ---------------------------------------------------------------------------------

    def install(self) -> None:
        c = self.cluster
        install_crds(c)
        c.kubectl("create", "namespace", self.namespace)
        # The agent needs host network and a hostPath: its namespace allows `privileged`, as the chart's does.
        apply(c, {"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": self.agent_namespace, "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}})
        apply(
            c,
            {
                "apiVersion": "node.k8s.io/v1",
                "kind": "RuntimeClass",
                "metadata": {"name": "nvidia"},
                "handler": "nvidia",
            },
        )
        rendered = c.helm(
            "template", self.release, str(REPO / "charts" / "edgewise"), "-n", self.namespace, "--skip-crds",
            "--set", f"agent.namespace={self.agent_namespace}", "--set", "agent.createNamespace=false",
            *(arg for value in self.chart_values for arg in ("--set", value)),
        ).stdout
        # The chart's RBAC and the admission policies that narrow it (the operator runs under both).
        kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
                 *CLUSTER_POLICY_KINDS}
        rbac = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] in kinds]
        assert {d["kind"] for d in rbac} == kinds
        apply(c, rbac)
        self.rbac = rbac
        sa = next(d["metadata"]["name"] for d in rbac if d["kind"] == "ServiceAccount"  # not the agent's
                  and d["metadata"]["labels"].get("app.kubernetes.io/component") == "operator")
        self.username = f"system:serviceaccount:{self.namespace}:{sa}"
        wait_policies_enforced(c, [d for d in rbac if d["kind"] == "ValidatingAdmissionPolicy"])
        token = c.kubectl("create", "token", sa, "-n", self.namespace, "--duration=4h").stdout.strip()
        admin = yaml.safe_load(c.kubeconfig.read_text())
        cluster_entry = admin["clusters"][0]
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": cluster_entry["cluster"]}],
            "users": [{"name": "edgewise-operator", "user": {"token": token}}],
            "contexts": [{"name": "operator", "context": {"cluster": "test", "user": "edgewise-operator"}}],
            "current-context": "operator",
        }
        self.kubeconfig = self.workdir / "operator.kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig))

    def uninstall(self) -> None:
        self.stop()
        for d in self.rbac:
            if d["kind"] in ("ClusterRole", "ClusterRoleBinding", *CLUSTER_POLICY_KINDS):  # the rest goes with
                self.cluster.kubectl(                                                     # the namespace
                    "delete", d["kind"].lower(), d["metadata"]["name"], "--ignore-not-found", check=False
                )
        for ns in (self.namespace, self.agent_namespace):
            self.cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)

    # -- process -------------------------------------------------------------------------------

    def start(self) -> None:
        self.log_path = self.workdir / f"operator-{self.starts}.log"
        self.starts += 1
        # One machine plays every node: the tests' file:// models are on "the node agent's host", which is
        # the operator's here, so the operator may read them there (and nowhere else): the tests' temporary
        # directories, the real models' cache and the virtualenv (real models that ship in wheels).
        local = ",".join([str(self.workdir.parent), tempfile.gettempdir(), str(real_models.CACHE), sys.prefix])
        env = {**os.environ, "EDGEWISE_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
               "EDGEWISE_LOCAL_SOURCE_DIRS": local, **self.extra_env}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgewise",
                "operator",
                "run",
                "--kubeconfig",
                str(self.kubeconfig),
                "--operator-namespace",
                self.namespace,
                "--agent-namespace",
                self.agent_namespace,
                "--resync-seconds",
                "600",
                "--liveness",
                self.liveness_url,
                *self.extra_args,
            ],
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            # Its own process group, as a container is: kill() takes its optimization workers with it.
            start_new_session=True,
        )
        wait_for(
            lambda: "queue drained" in self.log() or self.proc.poll() is not None,
            90,
            "the operator's first pass",
        )
        assert self.proc.poll() is None, self.log()

    def stop(self) -> None:
        if self.proc:
            processes.terminate(self.proc)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the operator and its worker processes at once, as a node loss or the OOM killer would:
        no shutdown handler runs, nothing is flushed."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc:
            self.proc.wait(30)
        self.proc = None

    # -- the node agents' side (real `edgewise agent` processes at the kwok nodes' InternalIPs) ---------

    def agent_account(self) -> str:
        """The chart's ServiceAccount of the node agent (in the agent namespace)."""
        return next(d["metadata"]["name"] for d in self.rbac if d["kind"] == "ServiceAccount"
                    and d["metadata"]["labels"].get("app.kubernetes.io/component") == "node-agent")

    def agent_token(self, *audience: str) -> str:
        """A token of the agent's ServiceAccount: for the apiserver (its TokenReviews), or with the audience
        edgewise-agent, for its peers."""
        return self.cluster.kubectl("create", "token", self.agent_account(), "-n", self.agent_namespace,
                                    "--duration=1h", *(f"--audience={a}" for a in audience)).stdout.strip()

    def agent_argv(self, node: str, ip: str, cache: Path, token_file: Path, *extra: str) -> list[str]:
        """`edgewise agent` for `node`, at its InternalIP and the agent port (where this operator calls it),
        checking callers by TokenReview as the chart's agent ServiceAccount (`token_file`)."""
        state = self.cluster.state()
        assert state is not None
        return [sys.executable, "-m", "edgewise", "agent", "--host", ip, "--port", str(contract.AGENT_PORT),
                "--cache-dir", str(cache), "--node-name", node, "--operator-user", self.username,
                "--apiserver", state.server, "--apiserver-token-file", str(token_file),
                "--apiserver-ca", str(self.cluster.pki / "ca.crt"), *extra]

    def settings_agent(self) -> str:
        """Name of the node agent DaemonSet (the operator's default setting)."""
        return OperatorSettings().agent_name

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 200) -> str:
        """The last `lines` lines of the current process's log (earlier processes' logs sit beside it)."""
        return "\n".join(self.log().splitlines()[-lines:])

    def settle(self, quiet: float = 2.0, timeout: float = 60) -> str:
        """Wait until the operator's queue drained and its log stayed quiet for `quiet` seconds."""

        def quiet_now() -> bool:
            before = self.log()
            time.sleep(quiet)
            return before == self.log() and "queue drained" in before

        wait_for(quiet_now, timeout, "the operator to settle")
        return self.log()
