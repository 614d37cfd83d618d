"""One real node beside the simulated fleet: a kubelet, kube-proxy, containerd and runc on this machine.

kwok nodes run no containers. The real node does: containerd (Debian's) runs pods with runc, the
CNI bridge plugin puts them on a bridge this module creates, kube-proxy makes Services work, and
the kubelet — the same Kubernetes release as the control plane, from the same multi-call binary —
runs init containers, probes and read-only root filesystems for real, and CoreDNS (hack/coredns/)
answers `<service>.<namespace>.svc.cluster.local` as it does on K3s.

What these machines need (docs/testing.md, "The real node"):
- cgroup v1: the kubelet runs only with `failCgroupV1: false`, and with the cgroupfs driver;
- root lacks CAP_SYS_RESOURCE: containerd must not lower `oom_score_adj` (`restrict_oom_score_adj`);
- no registry: the pause image is compiled from the `k8s.io/kubernetes` module's `pause.c` and
  imported with the images `make images` built; pods use `imagePullPolicy: IfNotPresent`;
- the kubelet refuses a loopback node IP: the node's address is the bridge's own.

Everything lives below the cluster directory or `/run/edgewise/<id>` (sockets, whose paths must be
short), and `teardown()` removes every process, mount, interface, iptables rule and cgroup it made.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from edgewise.devcluster import images, oci, processes
from edgewise.devcluster import realnode_host as host
from edgewise.devcluster.processes import Running
from edgewise.devcluster.tools import repo_root

NODE_NAME = "edgewise-real-1"
BRIDGE = "ewbr0"
POD_SUBNET = "10.244.0.0/24"
# The bridge's address: the pods' gateway, the node's InternalIP, and where the apiserver listens.
NODE_IP = "10.244.0.1"
CLUSTER_CIDR = "10.244.0.0/16"
CLUSTER_DOMAIN = "cluster.local"
# The kwok fleet beside a real node: its pod and node addresses are local to this machine (a `local`
# route on lo, so `edgewise serve` processes can bind any of them, as with loopback) and, unlike
# loopback, reachable from the real node's pods through the bridge.
KWOK_POD_CIDR = "10.245.0.0/16"
KWOK_NODE_CIDR = "10.246.0.0/16"
PAUSE_IMAGE = "edgewise/pause:3.10"
# The amd64 CPU class, labelled as Node Feature Discovery would label this machine's CPU.
DEVICE_CLASS = "amd64-cpu"
NFD = "feature.node.kubernetes.io"
SYSCTLS = ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables", "net/ipv4/conf/all/route_localnet")

StartFn = Callable[[str, list[str], "dict[str, str] | None"], Running]  # starts and records a component
KubeconfigFn = Callable[[Path, str], None]  # writes a kubeconfig for a client identity of the cluster's PKI


class RealNodeError(RuntimeError):
    pass


@dataclass(frozen=True)
class HostTools:
    containerd: str
    ctr: str
    runc: str
    cni_bin: str
    iptables_save: str

    @classmethod
    def find(cls) -> HostTools:
        """Debian's containerd, runc and CNI plugins; a clear error naming the packages when absent."""
        cni = next((d for d in ("/usr/lib/cni", "/opt/cni/bin") if Path(d, "bridge").exists()), "")
        found = {n: shutil.which(n) or "" for n in ("containerd", "ctr", "runc", "iptables-save")}
        missing = [n for n, p in found.items() if not p] + ([] if cni else ["CNI plugins"])
        if missing:
            raise RealNodeError(f"the real node needs {', '.join(missing)}: apt-get install containerd runc "
                                "containernetworking-plugins iptables (make test installs them)")
        return cls(found["containerd"], found["ctr"], found["runc"], cni, found["iptables-save"])


def cpu_labels(cpuinfo: str) -> dict[str, str]:
    """NFD's CPU labels for this machine, read from /proc/cpuinfo, never invented."""
    vendor, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    labels = {f"{NFD}/cpu-model.vendor_id": {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}.get(vendor, vendor)}
    for flag, name in (("avx2", "AVX2"), ("avx512f", "AVX512F"), ("avx512_vnni", "AVX512VNNI"),
                       ("avx_vnni", "AVXVNNI"), ("amx_tile", "AMXTILE")):
        if flag in flags:
            labels[f"{NFD}/cpu-cpuid.{name}"] = "true"
    return labels


def node_labels() -> dict[str, str]:
    return {**cpu_labels(Path("/proc/cpuinfo").read_text()), "edgewise.io/device-class": DEVICE_CLASS,
            "node.kubernetes.io/instance-type": "edgewise-dev-host"}


class RealNode:
    """The real node of one dev cluster directory."""

    def __init__(self, cluster_root: Path) -> None:
        self.root = cluster_root / "realnode"
        digest = hashlib.sha256(str(cluster_root).encode()).hexdigest()[:10]
        self.run_dir = Path("/run/edgewise") / digest  # unix sockets need short paths
        self.socket = self.run_dir / "containerd.sock"
        self.kubelet_dir = self.root / "kubelet"

    # -- network (before the apiserver, which listens on the bridge) ---------------------------------

    def prepare_network(self) -> None:
        if os.geteuid() != 0:
            raise RealNodeError("the real node needs root (bridge, containerd, kubelet)")
        if host.link_exists(BRIDGE) and not (self.root / "bridge-owner").exists():
            raise RealNodeError(f"interface {BRIDGE} exists but this cluster did not create it: another real "
                                "node is running (stop it with `edgewise dev cluster down --dir ...`)")
        self.root.mkdir(parents=True, exist_ok=True)
        self._save_sysctls()
        if not host.link_exists(BRIDGE):
            host.ip("link", "add", BRIDGE, "type", "bridge")
        (self.root / "bridge-owner").write_text(str(self.root))
        prefix = ipaddress.ip_network(POD_SUBNET).prefixlen
        subprocess.run(["ip", "addr", "replace", f"{NODE_IP}/{prefix}", "dev", BRIDGE], check=True)
        host.ip("link", "set", BRIDGE, "up")
        for cidr in (KWOK_POD_CIDR, KWOK_NODE_CIDR):
            subprocess.run(["ip", "route", "replace", "local", cidr, "dev", "lo"], check=True)
        # kube-proxy's Service rules must see traffic between pods on one bridge.
        host.write_sysctl("net/bridge/bridge-nf-call-iptables", "1")

    # -- components -------------------------------------------------------------------------------

    def start(self, start: StartFn, bin_dir: Path, pki: Path, kubeconfig: KubeconfigFn,
              images: list[Path]) -> None:
        """containerd, the pause image and `images`, then kubelet and kube-proxy."""
        tools = HostTools.find()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        containerd_config = self._containerd_config(tools)
        start("containerd", [tools.containerd, "--config", str(containerd_config)], None)
        self._wait_containerd(tools)
        self.import_images(tools, [self._pause_archive(), *images])
        for client in ("kubelet", "kube-proxy", "coredns"):
            kubeconfig(self.root / f"{client}.kubeconfig", client)
        start("coredns", [str(bin_dir / "coredns"), "-conf", str(self._corefile())], None)
        labels = ",".join(f"{k}={v}" for k, v in node_labels().items())
        start("kubelet", [str(bin_dir / "kubelet"), f"--config={self._kubelet_config(pki)}",
                          f"--kubeconfig={self.root / 'kubelet.kubeconfig'}",
                          f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}",
                          f"--node-labels={labels}", f"--root-dir={self.kubelet_dir}",
                          f"--cert-dir={self.root / 'kubelet-pki'}", "--v=1"], None)
        start("kube-proxy", [str(bin_dir / "kube-proxy"), f"--config={self._proxy_config()}"], None)

    def import_images(self, tools: HostTools, archives: list[Path]) -> None:
        for archive in archives:
            result = subprocess.run([tools.ctr, "--address", str(self.socket), "-n", "k8s.io", "images", "import",
                                     str(archive)],
                                    capture_output=True, text=True, timeout=600)
            if result.returncode != 0:
                raise RealNodeError(f"ctr images import {archive} failed: {result.stderr.strip()}")

    def _wait_containerd(self, tools: HostTools, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = subprocess.run([tools.ctr, "--address", str(self.socket), "version"],
                                capture_output=True).returncode == 0
            if ok:
                return
            time.sleep(0.3)
        raise RealNodeError(f"containerd did not answer on {self.socket} within {timeout:.0f}s")

    def _containerd_config(self, tools: HostTools) -> Path:
        cni_conf = self.root / "cni" / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        (cni_conf / "10-edgewise.conflist").write_text(json.dumps(self._cni_config(), indent=2))
        cri = {
            "sandbox_image": PAUSE_IMAGE,
            # Root here lacks CAP_SYS_RESOURCE, so runc cannot lower oom_score_adj below its own.
            "restrict_oom_score_adj": True,
            "netns_mounts_under_state_dir": True,
            "enable_selinux": False,
            "containerd": {
                "snapshotter": "overlayfs",
                "default_runtime_name": "runc",
                "runtimes": {"runc": {"runtime_type": "io.containerd.runc.v2",
                                      "options": {"BinaryName": tools.runc, "SystemdCgroup": False}}},
            },
            "cni": {"bin_dir": tools.cni_bin, "conf_dir": str(cni_conf), "max_conf_num": 1},
        }
        config = "\n".join([
            "version = 2",
            f'root = "{self.root / "containerd" / "root"}"',
            f'state = "{self.run_dir / "state"}"',
            '[grpc]', f'  address = "{self.socket}"',
            '[ttrpc]', f'  address = "{self.run_dir / "ttrpc.sock"}"',
            '[debug]', '  level = "warn"',
            '[plugins."io.containerd.grpc.v1.cri"]',
            *_toml_table(cri, 'plugins."io.containerd.grpc.v1.cri"'),
        ])
        path = self.root / "containerd.toml"
        path.write_text(config + "\n")
        return path

    def _cni_config(self) -> dict[str, object]:
        subnet = ipaddress.ip_network(POD_SUBNET)
        return {
            "cniVersion": "1.0.0",
            "name": "edgewise",
            "plugins": [{
                "type": "bridge", "bridge": BRIDGE, "isGateway": True, "hairpinMode": True,
                # Pod traffic stays on this machine: no masquerading out of the bridge.
                "ipMasq": False,
                "ipam": {"type": "host-local", "dataDir": str(self.root / "cni" / "ipam"),
                         "ranges": [[{"subnet": str(subnet), "gateway": NODE_IP}]],
                         "routes": [{"dst": "0.0.0.0/0"}]},
            }, {"type": "portmap", "capabilities": {"portMappings": True}}],
        }

    def _kubelet_config(self, pki: Path) -> Path:
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # These machines run cgroup v1, which the kubelet refuses unless told otherwise.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "address": NODE_IP,
            "port": processes.free_port(NODE_IP),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": processes.free_port(),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(pki / "ca.crt")}},
            "authorization": {"mode": "Webhook"},
            "failSwapOn": False,
            "maxPods": 40,
            "serializeImagePulls": False,
            "imageGCHighThresholdPercent": 100,
            # A developer's disk is not a node's: don't evict pods because the disk is fuller than 90%.
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "staticPodPath": "",
            "nodeStatusReportFrequency": "10s",
            "nodeStatusUpdateFrequency": "5s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "resolvConf": "/etc/resolv.conf",
            "clusterDNS": [NODE_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            "localStorageCapacityIsolation": False,
            "protectKernelDefaults": False,
            "makeIPTablesUtilChains": False,
        }
        path = self.root / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _proxy_config(self) -> Path:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.root / "kube-proxy.kubeconfig")},
            "hostnameOverride": NODE_NAME,
            "mode": "iptables",
            "clusterCIDR": CLUSTER_CIDR,
            "bindAddress": NODE_IP,
            "healthzBindAddress": f"127.0.0.1:{processes.free_port()}",
            "metricsBindAddress": f"127.0.0.1:{processes.free_port()}",
            # NodePorts only on the bridge: no route_localnet, nothing on the machine's other interfaces.
            "nodePortAddresses": [f"{NODE_IP}/32"],
            # Leave the host's conntrack sysctls alone.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }
        path = self.root / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _corefile(self) -> Path:
        """K3s's CoreDNS configuration, on the bridge address only; other names go to the host's resolver."""
        health, ready = processes.free_ports(2)
        corefile = "\n".join([
            ".:53 {",
            f"    bind {NODE_IP}",
            "    errors",
            f"    health 127.0.0.1:{health}",
            f"    ready 127.0.0.1:{ready}",
            f"    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{",
            f"        kubeconfig {self.root / 'coredns.kubeconfig'}",
            "        pods insecure",
            "        fallthrough in-addr.arpa ip6.arpa",
            "    }",
            "    cache 30",
            "    loadbalance",
            "    forward . /etc/resolv.conf",
            "}",
        ])
        path = self.root / "Corefile"
        path.write_text(corefile + "\n")
        return path

    def _pause_archive(self) -> Path:
        """The sandbox image: Kubernetes' own pause.c, compiled statically, as an OCI archive."""
        out = self.root / "pause.oci.tar"
        if out.exists():
            return out
        source = _pause_source()
        binary = self.root / "pause"
        subprocess.run(["gcc", "-Os", "-static", "-o", str(binary), str(source)], check=True,
                       capture_output=True)
        subprocess.run(["strip", str(binary)], check=False, capture_output=True)
        write_image(out, PAUSE_IMAGE, {"pause": binary.read_bytes()}, entrypoint=["/pause"], user="65535:65535")
        return out

    # -- teardown ---------------------------------------------------------------------------------

    def teardown(self) -> None:
        """Remove containers, mounts, the bridge, iptables rules, cgroups and sysctl changes we made.

        Runs after kubelet, kube-proxy and containerd were stopped, and also when they crashed: it
        does not need them.
        """
        host.kill_pod_processes()
        host.kill_shims(str(self.socket))
        host.unmount_below([self.root, self.run_dir, Path("/run/containerd/io.containerd.runtime.v2.task/k8s.io")])
        host.remove_cgroups()
        host.proxy_cleanup(self.root)
        host.drop_kube_chains()
        if (self.root / "bridge-owner").exists():
            if host.link_exists(BRIDGE):
                host.ip("link", "del", BRIDGE)
            for cidr in (KWOK_POD_CIDR, KWOK_NODE_CIDR):
                subprocess.run(["ip", "route", "del", "local", cidr, "dev", "lo"], capture_output=True)
        self._restore_sysctls()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        (self.root / "bridge-owner").unlink(missing_ok=True)

    def _save_sysctls(self) -> None:
        saved = self.root / "sysctls.json"
        if not saved.exists():
            saved.write_text(json.dumps({k: host.read_sysctl(k) for k in SYSCTLS}))

    def _restore_sysctls(self) -> None:
        saved = self.root / "sysctls.json"
        try:
            values = json.loads(saved.read_text())
        except (OSError, ValueError):
            return
        for key, value in values.items():
            if value is not None:
                host.write_sysctl(key, value)
        saved.unlink(missing_ok=True)


# -- helpers ---------------------------------------------------------------------------------------

def _pause_source() -> Path:
    """pause.c of the `k8s.io/kubernetes` module the control plane is built from (hack/controlplane/go.mod)."""
    module_dir = subprocess.run(["go", "list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes"],
                                cwd=repo_root() / "hack" / "controlplane", env={**os.environ, "GOTOOLCHAIN": "local"},
                                capture_output=True, text=True, check=True).stdout.strip()
    source = Path(module_dir, "build/pause/linux/pause.c")
    if not module_dir or not source.exists():
        raise RealNodeError("k8s.io/kubernetes's build/pause/linux/pause.c is missing: run hack/build-tools.sh "
                            "(it downloads the module)")
    return source


def write_image(out: Path, name: str, files: dict[str, bytes], entrypoint: list[str], user: str) -> None:
    """A one-layer image of `files` for this machine, which `ctr images import` names `name` as the kubelet does."""
    config = {"architecture": images.host_arch(), "os": "linux", "config": {"Entrypoint": entrypoint, "User": user}}
    oci.write_files_image(out, f"{images.REGISTRY}/{name}", files, config)


def _toml_table(table: dict[str, object], prefix: str) -> list[str]:
    """A nested dict as TOML: scalars first, then sub-tables (enough for containerd's config)."""
    lines: list[str] = []
    subs = {k: v for k, v in table.items() if isinstance(v, dict)}
    for key, value in table.items():
        if key in subs:
            continue
        lines.append(f"  {key} = {json.dumps(value) if not isinstance(value, bool) else str(value).lower()}")
    for key, value in subs.items():
        name = f"{prefix}.{key}"
        lines.append(f"[{name}]")
        lines.extend(_toml_table(value, name))  # type: ignore[arg-type]
    return lines
