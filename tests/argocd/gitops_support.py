"""Argo CD in core mode against the test cluster: its application controller, repo server and (for
actions) API server, all the one hack/argocd binary, with Debian's redis and a git repository
served over HTTP on loopback.

Nothing runs in the cluster: the components are processes on this machine with the admin
kubeconfig (core mode's components, no UI or Dex; the API server only so that `argocd app actions
run` works). Their namespace holds Argo CD's objects (Applications, the default AppProject, the
dev cluster's secret) and settings (argocd-cm with Edgewise's snippet merged in, argocd-secret).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from argocd.argocd_support import SNIPPET, argocd_binary
from argocd.git_http import GitHttp
from edgewise.devcluster import processes
from edgewise.devcluster.cluster import DevCluster
from wait_support import wait_for


def _crds() -> list[Path]:
    """Argo CD's CRDs, copied from its module next to the binary (the API server watches ApplicationSets too)."""
    crds = argocd_binary().resolve().parent / "crds"
    return [crds / "application-crd.yaml", crds / "appproject-crd.yaml", crds / "applicationset-crd.yaml"]


@dataclass
class ArgoCD:
    """A running Argo CD: its namespace, its git server, and the argocd CLI against its API server."""

    cluster: DevCluster
    namespace: str
    workdir: Path
    git: GitHttp
    server: str  # the dev cluster's API server, as Argo CD's destination
    api_port: int = 0

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.cluster.kubectl(*args, "-n", self.namespace, input=input).stdout

    def application(self, name: str, repo_url: str, path: str, dest_namespace: str) -> None:
        app = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
               "metadata": {"name": name, "namespace": self.namespace},
               "spec": {"project": "default",
                        "source": {"repoURL": repo_url, "targetRevision": "main", "path": path},
                        "destination": {"server": self.server, "namespace": dest_namespace},
                        "syncPolicy": {"automated": {"prune": True, "selfHeal": True}}}}
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(app))

    def refresh(self, name: str) -> None:
        """Ask the controller to look at git now, as a git server's webhook does."""
        self.kubectl("annotate", "--overwrite", "applications.argoproj.io", name, "argocd.argoproj.io/refresh=hard")

    def app(self, name: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", "applications.argoproj.io", name, "-o", "json")))

    def cli(self, *args: str) -> str:
        """The argocd CLI against the API server (plaintext on loopback, no auth)."""
        proc = subprocess.run([str(argocd_binary()), *args, "--server", f"127.0.0.1:{self.api_port}", "--plaintext",
                               "--auth-token", "unused", "--config", str(self.workdir / "cli-config")],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"argocd {' '.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted((self.workdir / "logs").glob("*.log")))


def _cluster_secret(cluster: DevCluster, namespace: str) -> tuple[dict[str, Any], str]:
    """The dev cluster as an Argo CD cluster, with the admin kubeconfig's credentials; and its URL.

    Argo CD's built-in in-cluster destination reads a pod's service account, which a process here
    has not."""
    kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
    server = kubeconfig["clusters"][0]["cluster"]
    user = kubeconfig["users"][0]["user"]
    config = {"tlsClientConfig": {"caData": server["certificate-authority-data"],
                                  "certData": user["client-certificate-data"], "keyData": user["client-key-data"]}}
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "dev-cluster", "namespace": namespace,
                           "labels": {"argocd.argoproj.io/secret-type": "cluster"}},
              "stringData": {"name": "dev", "server": server["server"], "config": json.dumps(config)}}
    return secret, str(server["server"])


def _settings(namespace: str) -> list[dict[str, Any]]:
    # An argocd-cm of its own; running_argocd merges the snippet in as docs/gitops.md says.
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "argocd-cm", "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "argocd"}}}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "argocd-secret", "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "argocd"}},
        "stringData": {"server.secretkey": uuid.uuid4().hex}}
    project = {"apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
               "metadata": {"name": "default", "namespace": namespace},
               "spec": {"sourceRepos": ["*"], "destinations": [{"server": "*", "namespace": "*"}],
                        "clusterResourceWhitelist": [{"group": "*", "kind": "*"}]}}
    return [cm, secret, project]


@contextmanager
def running_argocd(cluster: DevCluster, workdir: Path, with_api_server: bool = False,
                   reconcile_seconds: int = 5) -> Iterator[ArgoCD]:
    """Argo CD's controller and repo server (and API server) for the block, with their namespace."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is missing: `make apt` installs Debian's redis-server")
    binary = str(argocd_binary())
    namespace = f"argocd-{uuid.uuid4().hex[:6]}"
    logs = workdir / "logs"
    for crd in _crds():
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    cluster.wait_established("applications.argoproj.io", "appprojects.argoproj.io")
    cluster.kubectl("create", "namespace", namespace)
    dev, server = _cluster_secret(cluster, namespace)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([*_settings(namespace), dev]))
    cluster.kubectl("-n", namespace, "patch", "configmap", "argocd-cm", "--type", "merge", "--patch-file",
                    str(SNIPPET))
    redis_port, repo_port, repo_metrics, ctl_metrics, api_port, api_metrics = processes.free_ports(6)
    kube = ["--kubeconfig", str(cluster.kubeconfig), "--namespace", namespace]
    redis = ["--redis", f"127.0.0.1:{redis_port}"]
    started: list[processes.Running] = []
    with ExitStack() as stack:
        git = stack.enter_context(GitHttp(workdir / "git"))
        (workdir / "git").mkdir(parents=True, exist_ok=True)
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)
        # Git is polled every few seconds (the controller's resync, the repo server's revision cache),
        # not every 3 minutes; `refresh()` is the webhook a git server would call.
        env = {"HOME": str(workdir), "TMPDIR": str(workdir / "tmp"), "ARGOCD_GPG_ENABLED": "false",
               "ARGOCD_RECONCILIATION_TIMEOUT": f"{reconcile_seconds}s", "ARGOCD_RECONCILIATION_JITTER": "0s"}
        try:
            started.append(processes.start("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port),
                                                     "--save", "", "--appendonly", "no"], logs))
            started.append(processes.start("repo-server", [
                binary, "--address", "127.0.0.1", "--port", str(repo_port), "--metrics-port", str(repo_metrics),
                "--disable-tls", *redis], logs, {**env, "ARGOCD_BINARY_NAME": "argocd-repo-server"}))
            started.append(processes.start("application-controller", [
                binary, *kube, *redis, "--repo-server", f"127.0.0.1:{repo_port}", "--repo-server-plaintext",
                "--metrics-port", str(ctl_metrics), "--self-heal-timeout-seconds", "2",
                # The EdgeModel's health (with its message) in the Application's status.resources.
                "--persist-resource-health=true"],
                logs, {**env, "ARGOCD_BINARY_NAME": "argocd-application-controller"}))
            if with_api_server:
                started.append(processes.start("server", [
                    binary, *kube, *redis, "--repo-server", f"127.0.0.1:{repo_port}", "--repo-server-plaintext",
                    "--insecure", "--disable-auth", "--address", "127.0.0.1", "--port", str(api_port),
                    "--metrics-port", str(api_metrics)],
                    logs, {**env, "ARGOCD_BINARY_NAME": "argocd-server"}))
            argocd = ArgoCD(cluster, namespace, workdir, git, server, api_port if with_api_server else 0)
            wait_for(lambda: all(processes.alive(p) for p in started) and _listening(repo_port), 60,
                     "Argo CD's repo server")
            yield argocd
        finally:
            for p in reversed(started):
                processes.stop(p)
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
