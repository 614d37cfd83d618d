"""Run the containers of simulated pods as real local processes.

kwok makes pods Running but runs nothing. For tests and the demo that need real
inference, this "process kubelet" takes Running pods (selected by namespace and
labels), and for each one runs its init containers to completion and then its
containers in the background — with the pod's own arguments, environment
(downward API included) and `emptyDir` volumes mapped to a directory per pod.

Projected ServiceAccount token volumes are filled as a kubelet fills them: a
TokenRequest for the pod's ServiceAccount, bound to the pod (so the token names
the pod and its node), with the volume's audience and expiry. They are written
once, when the pod starts (the kubelet would rotate them; pods here live shorter).

Only Edgewise's own entry points can run here (`edgewise fetch|serve|agent`,
as `python -m edgewise …`); a container of another image (Triton) is reported
as not runnable. Inside a pod, binding every address means binding the pod's
own IP, so `edgewise serve` gets `--host <pod IP>` (and the agent, on the host
network, its node's IP through the downward API, as in a real cluster).

An init container that exits non-zero is reported in the pod's status as a kubelet
reports it (not Ready, the container's last state terminated with its log's tail
as the message), so the operator reads why, e.g. a fetch that refused an artifact.

Pods that run to completion (restartPolicy Never or OnFailure: a Job's pods) run
in a thread, and when they end the runner reports the pod Succeeded or Failed, as
a kubelet would; the Job controller takes it from there. (kwok's own stage for Job
pods would mark them Succeeded without running anything, so the dev cluster does
not load it.)
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from edgewise.devcluster import processes
from edgewise.devcluster.processes import Running

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


class NotRunnable(Exception):
    """The container's image is not one whose entry point exists on this machine."""


@dataclass
class PodProcesses:
    uid: str
    name: str
    namespace: str
    pod_ip: str
    node: str
    workdir: Path
    containers: dict[str, Running] = field(default_factory=dict)
    error: str = ""
    batch: subprocess.Popen[str] | None = None  # the running container of a run-to-completion pod
    pre_stop: float = 0.0  # seconds of the longest preStop sleep of its containers


def local_argv(container: dict[str, Any], env: dict[str, str], python: str = sys.executable) -> list[str]:
    """The container's command line as a local process: `edgewise …` → `python -m edgewise …`."""
    argv = [_expand(a, env) for a in (container.get("command") or []) + (container.get("args") or [])]
    if not argv or Path(argv[0]).name != "edgewise":
        raise NotRunnable(f"container {container.get('name')!r} runs {argv[:1] or ['(image entrypoint)']}, "
                          "which does not exist on this machine")
    return [python, "-m", "edgewise", *argv[1:]]


def _expand(value: str, env: dict[str, str]) -> str:
    # Kubernetes expands $(VAR) in command and args from the container's env; unknown refs stay as they are.
    return _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), value)


def container_env(container: dict[str, Any], pod: dict[str, Any],
                  secret: Callable[[str, str], str] | None = None) -> dict[str, str]:
    """env of the container, with the downward API fields Edgewise uses resolved from the pod,
    and Secret keys through `secret(name, key)`."""
    fields = {
        "status.hostIP": pod["status"].get("hostIP", ""),
        "status.podIP": pod["status"].get("podIP", ""),
        "metadata.name": pod["metadata"]["name"],
        "metadata.namespace": pod["metadata"]["namespace"],
        "spec.nodeName": pod["spec"].get("nodeName", ""),
    }
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = _expand(str(item["value"]), env)
        elif (ref := (item.get("valueFrom") or {}).get("fieldRef")) and ref.get("fieldPath") in fields:
            env[item["name"]] = fields[ref["fieldPath"]]
        elif (ref := (item.get("valueFrom") or {}).get("secretKeyRef")) and secret is not None:
            env[item["name"]] = secret(ref["name"], ref["key"])
    return env


def map_paths(argv: list[str], mounts: dict[str, Path]) -> list[str]:
    """Rewrite paths under a volume's mountPath to the volume's local directory."""
    out = []
    for arg in argv:
        for mount_path, local in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
            if arg == mount_path or arg.startswith(mount_path.rstrip("/") + "/"):
                arg = str(local) + arg[len(mount_path.rstrip("/")):]
                break
        out.append(arg)
    return out


class PodRunner:
    """Keeps one set of local processes per Running pod that matches; call `sync()` or `start()`."""

    def __init__(self, api: k8s.ApiClient, workdir: Path, namespace: str, label_selector: str = "",
                 python: str = sys.executable, init_timeout: float = 120.0,
                 nodes: frozenset[str] | None = None) -> None:
        self.core = k8s.CoreV1Api(api)
        self.workdir = workdir
        self.namespace = namespace
        self.label_selector = label_selector
        # Only pods on these nodes (None: any). Beside a real node, the runner plays only the kwok nodes.
        self.nodes = nodes
        self.python = python
        self.init_timeout = init_timeout
        self.pods: dict[str, PodProcesses] = {}
        # Pods deleted from the API whose containers still run their preStop sleep, as a kubelet keeps
        # a terminating pod's containers running: still serving until SIGTERM.
        self.terminating: dict[str, PodProcesses] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- control -----------------------------------------------------------------------------------

    def start(self, interval: float = 0.5) -> PodRunner:
        self._thread = threading.Thread(target=self._loop, args=(interval,), daemon=True, name="podrunner")
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        with self._lock:
            for uid in list(self.pods):
                self._stop_pod(uid)
            for uid in list(self.terminating):
                self._stop_now(self.terminating.pop(uid))

    def __enter__(self) -> PodRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.sync()
            except Exception:  # the loop must outlive a flaky API call
                log.exception("pod runner sync failed")

    # -- one pass ----------------------------------------------------------------------------------

    def sync(self) -> None:
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=self.label_selector).items
        live = {p.metadata.uid: p for p in pods
                if p.status.phase == "Running" and p.status.pod_ip and not p.metadata.deletion_timestamp
                and (self.nodes is None or p.spec.node_name in self.nodes)}
        with self._lock:
            for uid in [u for u in self.pods if u not in live]:
                self._stop_pod(uid)
            new = {uid: pod for uid, pod in live.items() if uid not in self.pods}
            for pod in new.values():  # before any pod starts: starting one can take seconds
                self._free_ip(pod.status.pod_ip)
            for uid, pod in new.items():
                if not self._stop.is_set():
                    raw = self.core.api_client.sanitize_for_serialization(pod)
                    if raw["spec"].get("restartPolicy", "Always") == "Always":
                        self.pods[uid] = self._start_pod(raw)
                    else:
                        self.pods[uid] = self._start_batch_pod(raw)

    def running(self) -> dict[str, PodProcesses]:
        with self._lock:
            return dict(self.pods)

    def still_serving(self) -> dict[str, PodProcesses]:
        """Terminating pods whose containers run their preStop sleep (their servers still answer)."""
        with self._lock:
            return dict(self.terminating)

    def _start_pod(self, pod: dict[str, Any]) -> PodProcesses:
        meta, spec = pod["metadata"], pod["spec"]
        proc, volumes = self._prepare(pod)
        workdir = proc.workdir
        try:
            for container in spec.get("initContainers") or []:
                argv, env = self._argv(container, pod, volumes)
                done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True,
                                      timeout=self.init_timeout, cwd=workdir)
                (workdir / f"{container['name']}.log").write_text(done.stdout + done.stderr)
                if done.returncode != 0:
                    self._report_failed_init(pod, container, done.returncode, done.stdout + done.stderr)
                    raise NotRunnable(f"init container {container['name']} exited {done.returncode}: "
                                      f"{done.stderr.strip()[-500:]}")
            for container in spec.get("containers") or []:
                argv, env = self._argv(container, pod, volumes)
                if not spec.get("hostNetwork") and "--host" not in argv and argv[3:4] == ["serve"]:
                    argv += ["--host", proc.pod_ip]
                if argv[3:4] == ["agent"] and "--apiserver" not in argv:
                    argv += self._in_cluster_args(container, volumes)
                proc.containers[container["name"]] = processes.start(
                    container["name"], argv, workdir, env=env)
        except (NotRunnable, subprocess.TimeoutExpired) as err:
            proc.error = str(err)
            log.warning("pod %s/%s: %s", meta["namespace"], meta["name"], err)
        return proc

    def _report_failed_init(self, pod: dict[str, Any], container: dict[str, Any], code: int, output: str) -> None:
        """Say in the pod's status that an init container failed, as a kubelet does: not Ready, the container
        waiting to be tried again, its last state terminated with its message — with terminationMessagePolicy
        FallbackToLogsOnError, the tail of its log (a kubelet keeps the last 2048 bytes). The phase stays
        Running: kwok's pod-ready stage would make a Pending pod Ready again."""
        meta = pod["metadata"]
        fallback = container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ended = {"exitCode": code, "reason": "Error", **({"message": output[-2048:]} if fallback else {})}
        waiting = f"containers with incomplete status: [{container['name']}]"
        status = {
            "conditions": [{"type": t, "status": "False", "reason": "ContainersNotInitialized", "message": waiting}
                           for t in ("Initialized", "Ready", "ContainersReady")],
            "initContainerStatuses": [{"name": container["name"], "ready": False, "restartCount": 1,
                                       "image": container.get("image", ""), "imageID": "",
                                       "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                       "lastState": {"terminated": ended}}],
            "containerStatuses": [{"name": c["name"], "ready": False, "restartCount": 0, "image": c.get("image", ""),
                                   "imageID": "", "state": {"waiting": {"reason": "PodInitializing"}}}
                                  for c in pod["spec"].get("containers") or []],
        }
        try:
            self.core.patch_namespaced_pod_status(meta["name"], meta["namespace"], {"status": status})
        except Exception:  # the pod may be gone already
            log.warning("pod %s/%s: could not report its failed init container", meta["namespace"], meta["name"])

    def _start_batch_pod(self, pod: dict[str, Any]) -> PodProcesses:
        """Run the pod's containers to completion in a thread, then report its phase."""
        meta, spec = pod["metadata"], pod["spec"]
        proc, volumes = self._prepare(pod)
        workdir = proc.workdir

        def run() -> None:
            statuses, failed = [], False
            for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                code, reason = 1, "Error"
                try:
                    argv, env = self._argv(container, pod, volumes)
                    with open(workdir / f"{container['name']}.log", "w") as out:
                        proc.batch = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out,
                                                      stderr=subprocess.STDOUT, text=True, cwd=workdir)
                        code = proc.batch.wait()
                    reason = "Completed" if code == 0 else "Error"
                except NotRunnable as err:
                    proc.error = str(err)
                if self._stop.is_set():
                    return  # torn down, not finished: leave the pod to its owner
                statuses.append({"name": container["name"], "ready": False, "restartCount": 0,
                                 "image": container.get("image", ""), "imageID": "",
                                 "state": {"terminated": {"exitCode": code, "reason": reason}}})
                if code != 0:
                    failed = True
                    break
            phase = "Failed" if failed else "Succeeded"
            try:
                self.core.patch_namespaced_pod_status(meta["name"], meta["namespace"], {"status": {
                    "phase": phase, "containerStatuses": statuses,
                    "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}]}})
            except Exception:  # the pod may be gone already
                log.warning("pod %s/%s: could not report phase %s", meta["namespace"], meta["name"], phase)

        threading.Thread(target=run, daemon=True, name=f"pod-{meta['name']}").start()
        return proc

    def _prepare(self, pod: dict[str, Any]) -> tuple[PodProcesses, dict[str, Path]]:
        """The pod's record and its volumes: emptyDir, configMap and projected ones a directory of the pod's
        own, hostPath ones a directory of its node's own (the node agent's cache survives its pod)."""
        meta, spec = pod["metadata"], pod["spec"]
        workdir = self.workdir / meta["namespace"] / f"{meta['name']}-{meta['uid'][:8]}"
        pre_stop = max([float(((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0))
                        for c in spec.get("containers") or []] or [0.0])
        proc = PodProcesses(uid=meta["uid"], name=meta["name"], namespace=meta["namespace"],
                            pod_ip=pod["status"]["podIP"], node=spec.get("nodeName", ""), workdir=workdir,
                            pre_stop=pre_stop)
        volumes = {}
        for vol in spec.get("volumes") or []:
            if "emptyDir" in vol or "projected" in vol or "configMap" in vol:
                volumes[vol["name"]] = workdir / "volumes" / vol["name"]
                volumes[vol["name"]].mkdir(parents=True, exist_ok=True)
            if "projected" in vol:
                self._project_tokens(pod, vol["projected"], volumes[vol["name"]])
            if "configMap" in vol:
                self._project_config_map(meta["namespace"], vol["configMap"], volumes[vol["name"]])
            if "hostPath" in vol:
                host = self.workdir / "nodes" / proc.node / vol["hostPath"]["path"].lstrip("/")
                host.mkdir(parents=True, exist_ok=True)
                volumes[vol["name"]] = host
        return proc, volumes

    def _in_cluster_args(self, container: dict[str, Any], volumes: dict[str, Path]) -> list[str]:
        """What a process cannot find at the in-cluster paths: the apiserver and the mounted ServiceAccount
        token (the agent checks its callers' tokens with it)."""
        mounts = {m["mountPath"]: volumes.get(m["name"]) for m in container.get("volumeMounts") or []}
        account_dir = mounts.get(SERVICE_ACCOUNT_DIR)
        if account_dir is None:
            return []
        return ["--apiserver", self.core.api_client.configuration.host,
                "--apiserver-token-file", str(account_dir / "token"), "--apiserver-ca", str(account_dir / "ca.crt")]

    def _project_tokens(self, pod: dict[str, Any], projected: dict[str, Any], directory: Path) -> None:
        """Write the volume's sources as a kubelet does: pod-bound tokens from the TokenRequest API, and
        ConfigMap keys (the API access volume's `kube-root-ca.crt`)."""
        meta, spec = pod["metadata"], pod["spec"]
        account = spec.get("serviceAccountName") or "default"
        for source in projected.get("sources") or []:
            if cm := source.get("configMap"):
                self._project_config_map(meta["namespace"], cm, directory)
            want = source.get("serviceAccountToken")
            if not want:
                continue
            body = k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(
                audiences=[want["audience"]] if want.get("audience") else [],
                expiration_seconds=int(want.get("expirationSeconds", 3600)),
                bound_object_ref=k8s.V1BoundObjectReference(
                    kind="Pod", api_version="v1", name=meta["name"], uid=meta["uid"])))
            try:
                token = self.core.create_namespaced_service_account_token(account, meta["namespace"], body)
            except k8s.ApiException as err:  # as a kubelet would, the pod runs; its token is missing
                log.warning("pod %s/%s: no token for ServiceAccount %s: %s", meta["namespace"], meta["name"],
                            account, err.reason)
                continue
            path = directory / want["path"]
            path.write_text(token.status.token)
            path.chmod(0o600)

    def _project_config_map(self, namespace: str, source: dict[str, Any], directory: Path) -> None:
        try:
            data = self.core.read_namespaced_config_map(source["name"], namespace).data or {}
        except k8s.ApiException as err:
            log.warning("configMap %s/%s for a projected volume: %s", namespace, source["name"], err.reason)
            return
        for item in source.get("items") or [{"key": k, "path": k} for k in data]:
            if item["key"] in data:
                (directory / item["path"]).write_text(data[item["key"]])

    def _argv(self, container: dict[str, Any], pod: dict[str, Any], volumes: dict[str, Path]
              ) -> tuple[list[str], dict[str, str]]:
        env = container_env(container, pod, functools.partial(self._secret, pod["metadata"]["namespace"]))
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts") or []
                  if m["name"] in volumes}
        argv = local_argv(container, env, self.python)
        # Only the container's own arguments name paths inside the pod; the interpreter is ours.
        return argv[:3] + map_paths(argv[3:], mounts), env

    def _secret(self, namespace: str, name: str, key: str) -> str:
        secret = self.core.read_namespaced_secret(name, namespace)
        return base64.b64decode((secret.data or {})[key]).decode()

    def _stop_pod(self, uid: str) -> None:
        proc = self.pods.pop(uid)
        if proc.pre_stop > 0 and proc.containers and not self._stop.is_set():
            # The kubelet runs a preStop hook before SIGTERM: the server keeps answering meanwhile.
            self.terminating[uid] = proc
            timer = threading.Timer(proc.pre_stop, self._after_pre_stop, args=(uid,))
            timer.daemon = True
            timer.start()
            return
        self._stop_now(proc)

    def _free_ip(self, ip: str) -> None:
        """A kubelet never reuses an IP while the old pod's containers run; kwok may (its pod-delete
        stage waits out the preStop sleep, see DevCluster._stage, but not our servers' exit). So a
        terminating pod holding the new pod's IP ends its preStop early."""
        for uid, proc in list(self.terminating.items()):
            if proc.pod_ip == ip:
                self._stop_now(self.terminating.pop(uid))

    def _after_pre_stop(self, uid: str) -> None:
        with self._lock:
            proc = self.terminating.pop(uid, None)
        if proc is not None:
            self._stop_now(proc)

    def _stop_now(self, proc: PodProcesses) -> None:
        if proc.batch is not None and proc.batch.poll() is None:
            proc.batch.kill()
        for running in proc.containers.values():
            processes.stop(running, grace=15)
        shutil.rmtree(proc.workdir / "volumes", ignore_errors=True)

