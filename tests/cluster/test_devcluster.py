"""The local control plane is real: real components, real API, simulated kubelets only."""

from __future__ import annotations

import http.server
import ipaddress
import json
import threading
import time
from pathlib import Path

import pytest
from kubernetes import client as k8s

from edgewise.devcluster import processes
from edgewise.devcluster.cluster import NODE_CIDR, DevCluster
from edgewise.devcluster.fleet import CATALOGUE
from wait_support import wait_for

RESTRICTED_CONTAINER = {
    "name": "app",
    "image": "registry.invalid/probe:1",  # never pulled: kwok runs no container
    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                        "runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
}


def test_apiserver_reports_a_real_release(cluster: DevCluster) -> None:
    code, body = cluster.get("/version")
    assert code == 200
    version = json.loads(body)
    assert version["major"] == "1" and int(version["minor"]) >= 35, version
    assert version["gitVersion"].startswith("v1.")
    # The same through the real kubectl, as a user would ask.
    out = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert out["serverVersion"]["gitVersion"] == version["gitVersion"]


def test_fleet_nodes_carry_the_labels_of_real_devices(cluster: DevCluster, fleet) -> None:
    names = fleet({"jetson-orin": 2, "jetson-xavier": 1, "arm64-cpu": 2, "amd64-cpu": 1})
    with cluster.api_client() as api:
        core = k8s.CoreV1Api(api)
        nodes = {n: core.read_node(n) for n in names}
    orin = nodes[names[0]].metadata.labels
    assert orin["kubernetes.io/arch"] == "arm64"
    assert orin["nvidia.com/gpu.family"] == "ampere"
    assert (orin["nvidia.com/gpu.compute.major"], orin["nvidia.com/gpu.compute.minor"]) == ("8", "7")
    assert orin["nvidia.com/gpu.present"] == "true"
    assert orin["feature.node.kubernetes.io/cpu-model.vendor_id"] == "NVIDIA"
    xavier = nodes[names[2]].metadata.labels
    assert (xavier["nvidia.com/gpu.family"], xavier["nvidia.com/gpu.compute.major"],
            xavier["nvidia.com/gpu.compute.minor"]) == ("volta", "7", "2")
    x86 = nodes[names[-1]]
    assert x86.metadata.labels["kubernetes.io/arch"] == "amd64"
    assert x86.metadata.labels["feature.node.kubernetes.io/cpu-cpuid.AVX512VNNI"] == "true"
    assert "nvidia.com/gpu.family" not in nodes[names[3]].metadata.labels  # a plain ARM board
    for name, node in nodes.items():
        assert node.metadata.labels["kubernetes.io/hostname"] == name
        assert node.metadata.labels["node.kubernetes.io/instance-type"]
        ip = next(a.address for a in node.status.addresses if a.type == "InternalIP")
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(NODE_CIDR)
    assert nodes[names[0]].status.allocatable["nvidia.com/gpu"] == "1"
    assert nodes[names[0]].status.capacity["memory"] == CATALOGUE["jetson-orin"].memory
    # kwok plays the kubelet: the nodes become Ready.
    wait_for(lambda: all(_ready(cluster, n) for n in names), 60, "nodes Ready")
    # Asking for the same fleet again creates nothing new.
    assert fleet({"jetson-orin": 2}) == names[:2]


def _ready(cluster: DevCluster, name: str) -> bool:
    with cluster.api_client() as api:
        node = k8s.CoreV1Api(api).read_node(name)
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def test_daemonset_runs_on_exactly_one_class_and_a_real_server_answers_on_a_pod_ip(
        cluster: DevCluster, namespace: str, fleet) -> None:
    names = fleet({"jetson-orin": 2, "arm64-cpu": 2, "amd64-cpu": 1})
    selector = {"kubernetes.io/arch": "arm64", "nvidia.com/gpu.family": "ampere"}
    with cluster.api_client() as api:
        k8s.AppsV1Api(api).create_namespaced_daemon_set(namespace, {
            "metadata": {"name": "probe"},
            "spec": {
                "selector": {"matchLabels": {"app": "probe"}},
                "template": {"metadata": {"labels": {"app": "probe"}}, "spec": {
                    # The fleet is shared with other tests; pin to this test's Orins.
                    "nodeSelector": selector,
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "kubernetes.io/hostname", "operator": "In", "values": names}]}]}}},
                    "containers": [RESTRICTED_CONTAINER],
                }},
            },
        })
        core = k8s.CoreV1Api(api)

        def running_pods():
            pods = core.list_namespaced_pod(namespace, label_selector="app=probe").items
            ok = [p for p in pods if p.status.phase == "Running" and p.status.pod_ip]
            return ok if len(ok) == 2 and len(pods) == 2 else None

        pods = wait_for(running_pods, 60, "two Running probe pods")
    assert sorted(p.spec.node_name for p in pods) == sorted(names[:2])  # the two Orins, nothing else
    for pod in pods:
        assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(cluster.pod_cidr)
        assert ipaddress.ip_address(pod.status.host_ip) in ipaddress.ip_network(NODE_CIDR)

    # A real process can answer on the simulated pod's address.
    pod_ip = pods[0].status.pod_ip
    server = http.server.ThreadingHTTPServer((pod_ip, 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        import urllib.request

        with urllib.request.urlopen(f"http://{pod_ip}:{server.server_address[1]}/", timeout=5) as resp:
            assert resp.read() == b"hello from " + pod_ip.encode()
    finally:
        server.shutdown()


def test_a_deleted_pod_keeps_its_ip_through_its_pre_stop_sleep_as_on_a_kubelet(
        cluster: DevCluster, namespace: str, fleet) -> None:
    """kwok's own stage would remove it at once and hand its IP to the next pod, where the pod
    runner still serves the old pod's preStop: a new canary would answer with the old model."""
    (node,) = fleet({"arm64-cpu": 1})
    pre_stop = 20  # seconds; long enough that the second pod surely gets its IP meanwhile

    def pod(name: str) -> dict[str, object]:
        return {"metadata": {"name": name}, "spec": {"nodeName": node, "containers": [
            {**RESTRICTED_CONTAINER, "lifecycle": {"preStop": {"sleep": {"seconds": pre_stop}}}}]}}

    with cluster.api_client() as api:
        core = k8s.CoreV1Api(api)

        def ip_of(name: str) -> str | None:
            return core.read_namespaced_pod(name, namespace).status.pod_ip

        core.create_namespaced_pod(namespace, pod("old"))
        old_ip = wait_for(lambda: ip_of("old"), 60, "the old pod's IP")
        deleted_at = time.monotonic()
        core.delete_namespaced_pod("old", namespace)
        core.create_namespaced_pod(namespace, pod("new"))
        new_ip = wait_for(lambda: ip_of("new"), 60, "the new pod's IP")
        assert new_ip != old_ip

        def gone() -> bool:
            return not core.list_namespaced_pod(namespace, field_selector="metadata.name=old").items

        wait_for(gone, 60, "the old pod to go once its preStop is over")
    assert time.monotonic() - deleted_at >= pre_stop


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = b"hello from " + self.server.server_address[0].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_kubectl_and_helm_work_against_the_kubeconfig(cluster: DevCluster, fleet) -> None:
    fleet({"arm64-cpu": 1})
    nodes = cluster.kubectl("get", "nodes", "-o", "name").stdout.split()
    assert any("arm64-cpu-0" in n for n in nodes)
    helm = cluster.helm("version", "--short").stdout
    assert helm.startswith("v3.")
    assert cluster.helm("list", "--all-namespaces").returncode == 0  # helm reached the API


def test_up_is_idempotent_and_down_leaves_no_process(tmp_path: Path) -> None:
    dev = DevCluster(tmp_path / "cluster")
    try:
        first = dev.up()
        pids = [p.pid for p in first.processes]
        assert [p.name for p in first.processes] == [
            "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"]
        assert (dev.root / "logs" / "kube-apiserver.log").stat().st_size > 0
        assert [p.pid for p in dev.up().processes] == pids  # reused, not restarted
    finally:
        stopped = dev.down()
    assert set(stopped) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
    assert not any(processes.alive(p) for p in first.processes)
    assert not dev.running() and dev.down() == []


def test_a_component_that_dies_is_reported_and_up_cleans_up(tmp_path: Path) -> None:
    dev = DevCluster(tmp_path / "cluster")
    try:
        state = dev.up()
        scheduler = next(p for p in state.processes if p.name == "kube-scheduler")
        processes.stop(scheduler)
        assert not dev.running()
        assert dev.status()["components"]["kube-scheduler"]["alive"] is False  # type: ignore[index]
        # `up` on a half-dead cluster replaces it whole instead of leaving the rest behind.
        again = dev.up()
        assert not any(processes.alive(p) for p in state.processes)
        assert all(processes.alive(p) for p in again.processes)
    finally:
        dev.down()


@pytest.mark.parametrize("bad, message", [
    ("jetson-orin", "not CLASS=COUNT"),
    ("raspberry=2", "unknown device class 'raspberry'"),
    ("arm64-cpu=two", "not CLASS=COUNT"),
])
def test_dev_cluster_up_rejects_a_bad_fleet_before_starting_anything(tmp_path: Path, bad: str, message: str
                                                                    ) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "edgewise", "dev", "cluster", "up", "--dir",
                             str(tmp_path / "c"), "--fleet", bad], capture_output=True, text=True)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "c" / "state.json").exists()
