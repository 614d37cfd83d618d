"""`edgewise dev cluster up|down|status`: the local control plane's lifecycle.

Layout of the cluster directory (default .cache/devcluster):
  kubeconfig        admin kubeconfig for kubectl, helm, tests and the operator
  state.json        pids of the processes we started, ports, version
  logs/<name>.log   one log per component
  pki/, kubeconfigs/, etcd/, kwok.yaml
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from edgewise.devcluster import pki, processes
from edgewise.devcluster.processes import Running
from edgewise.devcluster.realnode import KWOK_NODE_CIDR, KWOK_POD_CIDR, NODE_IP, NODE_NAME, RealNode
from edgewise.devcluster.tools import ensure_tools, kwok_stage_files, repo_root

# Pod IPs come from one loopback range (per cluster, see pod_cidr), node InternalIPs from another,
# so real processes can listen "on" a simulated pod or node.
NODE_CIDR = "127.65.0.0/16"
# Virtual: kube-proxy on the real node (realnode.py) routes it there; kwok nodes run no kube-proxy.
SERVICE_CIDR = "10.96.0.0/16"
# Routable pod IPs for a simulated fleet (Simulation.fleet); nothing on this machine answers there.
FLEET_POD_CIDR = "10.128.0.0/14"
SERVICE_IP = "10.96.0.1"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
# When a deleted pod's containers are done (kwok's jq): its longest preStop sleep, plus a second
# for the servers to exit on SIGTERM, as a Go duration.
PRE_STOP_DONE = '"\\([.spec.containers[] | .lifecycle.preStop.sleep.seconds // 0] | max + 1)s"'


def default_root() -> Path:
    return repo_root() / ".cache" / "devcluster"


@dataclass
class ClusterState:
    server: str
    bin_dir: str
    processes: list[Running] = field(default_factory=list)
    started_at: float = 0.0
    real_node: bool = False

    @classmethod
    def load(cls, path: Path) -> ClusterState | None:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        raw["processes"] = [Running(**p) for p in raw.get("processes", [])]
        return cls(**raw)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))


class ClusterError(RuntimeError):
    pass


@dataclass(frozen=True)
class Simulation:
    """How hard the simulated fleet and the controllers watching it work the control plane.

    The defaults are what the tests have always run with. kwok renews each node's Lease every
    quarter of `node_lease_seconds`: at 40 s that is 10 s, i.e. 500 Lease writes a second for
    5,000 nodes, more than two shared cores serve beside a rollout. `fleet()` is for thousands
    of nodes: more kwok workers, and controllers allowed more requests per second so that the
    DaemonSet controller, not its client-side rate limit, paces pod creation — for a plain
    DaemonSet and for Edgewise alike.

    Its heartbeats are rare, so that they do not charge one measured phase and not another: a
    fleet made in a few minutes renews its Leases in bursts, and kwok's node heartbeat stage patches
    every node's status about 10 minutes after the last one (thousands of fat node writes, each
    re-examined by the DaemonSet controller, the scheduler and every node watcher), both landing in
    whichever rollout happens to run then. `fleet()` renews Leases every hour (the node lifecycle
    controller's grace period raised to two, so no node goes Unknown; Leases alone keep a node
    Ready) and beats every 6 hours: a bench of an hour or less sees neither. And its pods
    get routable (non-loopback) IPs, as pods on a real cluster do, so a Service's endpoint
    controllers write their EndpointSlices instead of being refused and retrying; nothing runs
    behind those IPs, so a fleet cluster cannot host the pod runner (devcluster/podrunner.py).
    """

    node_lease_seconds: int = 40
    node_monitor_grace_seconds: int = 0  # 0: the controller-manager's default
    node_monitor_period_seconds: int = 0  # 0: the controller-manager's default
    kwok_parallelism: int = 4
    controller_qps: int = 0  # --kube-api-qps of controller-manager and scheduler; 0: their defaults
    node_heartbeat_seconds: int = 0  # 0: kwok's heartbeat stage as shipped (about every 10 minutes)
    pod_cidr: str = ""  # "": a loopback range per cluster (pod_cidr()), where the pod runner serves
    # A deleted pod stays Terminating through its preStop sleep, as on a kubelet (see _stage).
    pods_terminate_after_pre_stop: bool = True

    @classmethod
    def fleet(cls) -> Simulation:
        return cls(node_lease_seconds=4 * 3600, node_monitor_grace_seconds=2 * 3600, node_monitor_period_seconds=30,
                   kwok_parallelism=16, controller_qps=200, node_heartbeat_seconds=6 * 3600,
                   pod_cidr=FLEET_POD_CIDR, pods_terminate_after_pre_stop=False)


def pod_cidr(root: Path) -> str:
    """A loopback /16 chosen by the cluster's directory (one of 64): the clusters of several clones on
    one machine, whose pod runners' servers all listen on loopback, rarely hand out the same pod IP."""
    n = int.from_bytes(hashlib.sha256(str(root).encode()).digest()[:2], "big") % 64
    return f"127.{128 + n}.0.0/16"


class DevCluster:
    """A control plane with a kwok fleet; with `real_node`, also one real kubelet node (realnode.py)
    that runs `images` (archives imported into its containerd)."""

    def __init__(self, root: Path | None = None, real_node: bool = False,
                 images: tuple[Path, ...] = (), simulation: Simulation | None = None) -> None:
        self.root = (root or default_root()).resolve()
        self.real_node = real_node
        self.simulation = simulation or Simulation()
        self.images = images
        # Beside a real node, simulated pods and nodes get addresses the real node's pods can reach.
        self.pod_cidr = KWOK_POD_CIDR if real_node else (self.simulation.pod_cidr or pod_cidr(self.root))
        self.node_cidr = KWOK_NODE_CIDR if real_node else NODE_CIDR
        self.kubeconfig = self.root / "kubeconfig"
        self.state_file = self.root / "state.json"
        self.logs = self.root / "logs"
        self.pki = self.root / "pki"

    # -- lifecycle ---------------------------------------------------------------------------------

    def state(self) -> ClusterState | None:
        return ClusterState.load(self.state_file)

    def running(self) -> bool:
        state = self.state()
        return bool(state and state.processes and all(processes.alive(p) for p in state.processes))

    def up(self, timeout: float = 180.0) -> ClusterState:
        """Start the control plane, or return the one already running from this directory."""
        if self.running():
            state = self.state()
            assert state is not None
            return state
        self.down()  # a half-dead cluster from an earlier run: clear it first
        bin_dir = ensure_tools()
        for sub in ("etcd", "logs", "pki", "kubeconfigs"):
            shutil.rmtree(self.root / sub, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        node = RealNode(self.root) if self.real_node else None
        if node:
            node.prepare_network()  # the apiserver listens on the bridge, where pods reach it
        pki.generate(self.pki, SERVICE_IP, (NODE_IP,) if node else ())

        address = NODE_IP if node else "127.0.0.1"
        apiserver_port = processes.free_port(address)
        server = f"https://{address}:{apiserver_port}"
        state = ClusterState(server=server, bin_dir=str(bin_dir), started_at=time.time(), real_node=bool(node))
        for client in pki.CLIENTS:
            self._write_kubeconfig(self.root / "kubeconfigs" / f"{client.name}.kubeconfig", server, client.name)
        self._write_kubeconfig(self.kubeconfig, server, "admin")

        try:
            etcd_url = self._start_etcd(state, bin_dir)
            self._start(state, "kube-apiserver", bin_dir, self._apiserver_args(address, apiserver_port, etcd_url))
            self._wait_ready(state, timeout)
            self._start(state, "kube-controller-manager", bin_dir, self._controller_manager_args())
            self._start(state, "kube-scheduler", bin_dir, self._scheduler_args())
            self._start(state, "kwok", bin_dir, self._kwok_args(bin_dir))
            self._wait_default_service_account(state, timeout)
            if node:
                node.start(lambda name, argv, env: self._start_argv(state, name, argv, env), bin_dir, self.pki,
                           lambda path, client: self._write_kubeconfig(path, server, client), list(self.images))
                self._wait(state, f"node {NODE_NAME} Ready", self._real_node_ready, timeout)
        except BaseException:
            self.down()
            raise
        return state

    def down(self) -> list[str]:
        """Stop every process this directory's state lists; return the names that were running."""
        state = self.state()
        stopped: list[str] = []
        if state:
            # Reverse start order: kwok and controllers before the apiserver, etcd last.
            for proc in reversed(state.processes):
                if processes.alive(proc):
                    stopped.append(proc.name)
                processes.stop(proc)
        if (state and state.real_node) or (self.root / "realnode").exists():
            RealNode(self.root).teardown()
        self.state_file.unlink(missing_ok=True)
        return stopped

    def restart(self, name: str, timeout: float = 120.0) -> Running:
        """Stop one component and start it again with the same command line and environment: same ports,
        data directory (etcd's, so the cluster's state survives) and certificates. Waits for /readyz."""
        state = self.state()
        old = next((p for p in state.processes if p.name == name), None) if state else None
        if state is None or old is None or not processes.alive(old):
            raise ClusterError(f"no running {name} in the cluster at {self.root}; start it with "
                               "`edgewise dev cluster up`")
        # Read from /proc before it goes: the state file keeps pids, not command lines.
        argv = Path(f"/proc/{old.pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
        raw_env = Path(f"/proc/{old.pid}/environ").read_bytes().rstrip(b"\0").decode().split("\0")
        env = dict(item.split("=", 1) for item in raw_env if "=" in item)
        processes.stop(old)
        new = processes.start(name, argv, self.logs, env)
        state.processes[state.processes.index(old)] = new
        state.save(self.state_file)
        self._wait_ready(state, timeout)
        return new

    def status(self) -> dict[str, object]:
        state = self.state()
        if not state:
            return {"running": False, "components": {}}
        return {
            "running": self.running(),
            "server": state.server,
            "kubeconfig": str(self.kubeconfig),
            "components": {p.name: {"pid": p.pid, "alive": processes.alive(p), "log": p.log}
                           for p in state.processes},
        }

    def api_client(self) -> k8s.ApiClient:
        """A kubernetes client for the admin user; use it as a context manager."""
        return k8s_config.new_client_from_config(config_file=str(self.kubeconfig))

    def tool(self, name: str) -> Path:
        state = self.state()
        if not state:
            raise ClusterError(f"no cluster is running from {self.root}; run `edgewise dev cluster up`")
        return Path(state.bin_dir) / name

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this cluster."""
        return self._run("kubectl", args, check, input, timeout)

    def wait_established(self, *crds: str, timeout: float = 60) -> None:
        """Wait until the apiserver serves each CRD (its Established condition).

        Not `kubectl wait --for=condition=Established`: right after an apply, a CRD whose status has
        no conditions yet makes it fail at once ("accessor error: <nil>") instead of waiting."""
        deadline = time.monotonic() + timeout
        pending = list(crds)
        while pending:
            got = self.kubectl("get", "crd", pending[0], "--ignore-not-found", "-o",
                               'jsonpath={.status.conditions[?(@.type=="Established")].status}').stdout
            if got.strip() == "True":
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise ClusterError(f"CRD {pending[0]} not Established after {timeout:.0f}s")
            time.sleep(0.2)

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self._run("helm", args, check, None, timeout)

    def _run(self, tool: str, args: tuple[str, ...], check: bool, input: str | None,
             timeout: float) -> subprocess.CompletedProcess[str]:
        argv = [str(self.tool(tool)), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise ClusterError(f"{tool} {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    # -- components --------------------------------------------------------------------------------

    def _start(self, state: ClusterState, name: str, bin_dir: Path, args: list[str]) -> Running:
        return self._start_argv(state, name, [str(bin_dir / name), *args], None)

    def _start_argv(self, state: ClusterState, name: str, argv: list[str], env: dict[str, str] | None) -> Running:
        proc = processes.start(name, argv, self.logs, env)
        state.processes.append(proc)
        state.save(self.state_file)
        return proc

    def _start_etcd(self, state: ClusterState, bin_dir: Path) -> str:
        client, peer = processes.free_port(), processes.free_port()
        url = f"http://127.0.0.1:{client}"
        self._start(state, "etcd", bin_dir, [
            "--name=devcluster", f"--data-dir={self.root / 'etcd'}",
            f"--listen-client-urls={url}", f"--advertise-client-urls={url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=devcluster=http://127.0.0.1:{peer}",
            # A throwaway test store: durability costs fsyncs we don't need.
            "--unsafe-no-fsync=true", "--log-level=warn",
        ])
        return url

    def _apiserver_args(self, address: str, port: int, etcd_url: str) -> list[str]:
        p = self.pki
        real_node = [
            # Pods on the real node reach the apiserver through the `kubernetes` Service: its endpoint
            # is the bridge address, so the endpoint reconciler runs.
            f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP",
        ] if address != "127.0.0.1" else [
            # Loopback addresses are not valid Endpoints; nothing needs the kubernetes Service's endpoints.
            "--endpoint-reconciler-type=none",
        ]
        return [
            f"--etcd-servers={etcd_url}",
            f"--bind-address={address}", f"--advertise-address={address}", f"--secure-port={port}",
            f"--tls-cert-file={p / 'apiserver.crt'}", f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=PodSecurity,NodeRestriction",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            *real_node,
            "--allow-privileged=true",
            "--profiling=false",
        ]

    def _controller_args(self, client: str) -> list[str]:
        """What controller-manager and scheduler share: their identity, a loopback port, no election."""
        kc = self.root / "kubeconfigs" / f"{client}.kubeconfig"
        return [
            f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", f"--secure-port={processes.free_port()}", "--leader-elect=false",
            "--profiling=false",
        ]

    def _controller_manager_args(self) -> list[str]:
        sim = self.simulation
        return [
            *self._controller_args("controller-manager"),
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={self.pki / 'sa.key'}",
            f"--root-ca-file={self.pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={self.pki / 'ca.crt'}",
            f"--cluster-signing-key-file={self.pki / 'ca.key'}",
            # Simulated nodes own no pod CIDRs; kwok hands out loopback pod IPs itself.
            "--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle",
            *self._qps(),
            *([f"--node-monitor-grace-period={sim.node_monitor_grace_seconds}s"]
              if sim.node_monitor_grace_seconds else []),
            *([f"--node-monitor-period={sim.node_monitor_period_seconds}s"]
              if sim.node_monitor_period_seconds else []),
        ]

    def _scheduler_args(self) -> list[str]:
        return [*self._controller_args("scheduler"), *self._qps()]

    def _qps(self) -> list[str]:
        qps = self.simulation.controller_qps
        return [f"--kube-api-qps={qps}", f"--kube-api-burst={2 * qps}"] if qps else []

    def _kwok_args(self, bin_dir: Path) -> list[str]:
        config = self.root / "kwok.yaml"
        options = {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokConfiguration",
            "metadata": {"name": "edgewise"},
            "options": {
                "cidr": self.pod_cidr,
                # only for nodes created without an InternalIP
                "nodeIP": str(ipaddress.ip_network(self.node_cidr).broadcast_address - 1),
                "manageNodesWithAnnotationSelector": f"{KWOK_ANNOTATION}=fake",
                # A test can take a node's status over (e.g. mark it NotReady) with this annotation.
                "disregardStatusWithAnnotationSelector": "kwok.x-k8s.io/status=custom",
                "serverAddress": f"127.0.0.1:{processes.free_port()}",
                "nodeLeaseDurationSeconds": self.simulation.node_lease_seconds,
                # The config file replaces the flag defaults, so the parallelisms must be given too.
                "nodeLeaseParallelism": self.simulation.kwok_parallelism,
                "nodePlayStageParallelism": self.simulation.kwok_parallelism,
                "podPlayStageParallelism": self.simulation.kwok_parallelism,
                "podsOnNodeSyncParallelism": self.simulation.kwok_parallelism,
            },
        }
        docs = [yaml.safe_dump(options)] + [self._stage(f) for f in kwok_stage_files(bin_dir)]
        config.write_text("\n---\n".join(docs))
        return [f"--kubeconfig={self.root / 'kubeconfigs' / 'kwok.kubeconfig'}", f"--config={config}"]

    def _stage(self, path: Path) -> str:
        """A kwok Stage as shipped, but for the node heartbeat's interval when the simulation sets one,
        and for when a deleted pod goes away."""
        stage = yaml.safe_load(path.read_text())
        beat = self.simulation.node_heartbeat_seconds
        if beat and "heartbeat" in path.name:
            stage["spec"]["delay"] = {"durationMilliseconds": beat * 1000, "jitterDurationMilliseconds": beat * 1100}
        elif path.name == "pod-delete.yaml" and self.simulation.pods_terminate_after_pre_stop:
            # kwok's fast stage removes a deleted pod at once and hands its IP to the next pod, while
            # the pod runner still serves the old pod's preStop sleep on that IP: a new canary's IP
            # would answer with the old model. A kubelet keeps the pod (and its IP) until its
            # containers exit: the preStop sleep, then SIGTERM. So does this stage.
            stage["spec"]["delay"] = {"durationMilliseconds": 0, "durationFrom": {"expressionFrom": PRE_STOP_DONE}}
        return yaml.safe_dump(stage)

    # -- readiness ---------------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
        return ctx

    def get(self, path: str, server: str | None = None) -> tuple[int, bytes]:
        state = self.state()
        base = server or (state.server if state else "")
        try:
            with urllib.request.urlopen(base + path, context=self._ssl_context(), timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def _wait(self, state: ClusterState, what: str, check, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in state.processes:
                if not processes.alive(proc):
                    raise ClusterError(f"{proc.name} exited while waiting for {what}; "
                                       f"last lines of {proc.log}:\n{processes.log_tail(proc)}")
            try:
                if check():
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.5)
        raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}; logs in {self.logs}")

    def _wait_ready(self, state: ClusterState, timeout: float) -> None:
        self._wait(state, "kube-apiserver /readyz", lambda: self.get("/readyz", state.server)[0] == 200, timeout)

    def _real_node_ready(self) -> bool:
        code, body = self.get(f"/api/v1/nodes/{NODE_NAME}")
        if code != 200:
            return False
        conditions = json.loads(body).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _wait_default_service_account(self, state: ClusterState, timeout: float) -> None:
        # Pods can't be admitted before the controller-manager made the namespace's default ServiceAccount.
        path = "/api/v1/namespaces/default/serviceaccounts/default"
        self._wait(state, "the default ServiceAccount", lambda: self.get(path, state.server)[0] == 200, timeout)

    # -- kubeconfigs -------------------------------------------------------------------------------

    def _write_kubeconfig(self, path: Path, server: str, client: str) -> None:
        def b64(name: str) -> str:
            return base64.b64encode((self.pki / name).read_bytes()).decode()

        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "edgewise-dev", "cluster": {
                "server": server, "certificate-authority-data": b64("ca.crt")}}],
            "users": [{"name": client, "user": {
                "client-certificate-data": b64(f"{client}.crt"), "client-key-data": b64(f"{client}.key")}}],
            "contexts": [{"name": "edgewise-dev", "context": {"cluster": "edgewise-dev", "user": client}}],
            "current-context": "edgewise-dev",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

