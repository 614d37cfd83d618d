"""The real node alone: a real kubelet runs a restricted pod, kube-proxy and CoreDNS serve it by
Service, kubectl reaches it, and `cluster down` leaves the machine as it found it.

The pod's image is Debian's static busybox in a one-layer OCI archive, so these tests need none of
Edgewise's images (test_as_shipped.py runs those).
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import host_state_support
import pytest

from edgewise.devcluster import processes
from edgewise.devcluster.cluster import DevCluster
from edgewise.devcluster.realnode import NODE_IP, NODE_NAME, write_image
from wait_support import wait_for

REPO = Path(__file__).resolve().parents[2]
BUSYBOX = Path("/bin/busybox")
IMAGE = "edgewise/busybox:test"
PAGE = b"served by a real kubelet\n"


@pytest.fixture(scope="module")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevCluster, host_state_support.HostState]]:
    if not BUSYBOX.exists():
        subprocess.run(["apt-get", "install", "-y", "-qq", "busybox-static"], check=True, capture_output=True)
    archive = Path(tmp_path_factory.mktemp("image")) / "busybox.tar"
    write_image(archive, IMAGE, {"bin/busybox": BUSYBOX.read_bytes(), "www/index.html": PAGE},
                      entrypoint=["/bin/busybox"], user="65532:65532")
    root = REPO / ".cache" / "e2e-node"
    cluster = DevCluster(root, real_node=True, images=(archive,))
    cluster.down()
    before = host_state_support.read(root)
    cluster.up()
    try:
        yield cluster, before
    finally:
        cluster.down()


def _apply(cluster: DevCluster, ns: str, manifest: dict) -> None:
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(manifest))


WEB_POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [{
            "name": "prepare", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
            "args": ["sh", "-c", "cp /www/index.html /data/ && echo prepared > /data/init.txt"],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}},
        }],
        "containers": [{
            "name": "web", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
            "args": ["httpd", "-f", "-p", "8080", "-h", "/data"],
            "readinessProbe": {"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 2},
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}},
        }],
        "volumes": [{"name": "data", "emptyDir": {}}],
    },
}


@pytest.fixture(scope="module")
def web(node_cluster: tuple[DevCluster, host_state_support.HostState]) -> tuple[DevCluster, str]:
    cluster, _ = node_cluster
    ns = "real-node"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    _apply(cluster, ns, WEB_POD)
    _apply(cluster, ns, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                         "spec": {"selector": {"app": "web"}, "internalTrafficPolicy": "Local",
                                  "ports": [{"port": 80, "targetPort": 8080}]}})
    cluster.kubectl("wait", "-n", ns, "pod/web", "--for=condition=Ready", "--timeout=180s", timeout=200)
    return cluster, ns


def test_the_real_node_registers_with_the_labels_of_its_cpu(node_cluster) -> None:
    cluster, _ = node_cluster
    node = json.loads(cluster.kubectl("get", "node", NODE_NAME, "-o", "json").stdout)
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/arch"] == "amd64"
    assert labels["edgewise.io/device-class"] == "amd64-cpu"
    cpuinfo = Path("/proc/cpuinfo").read_text()
    vendor = "Intel" if "GenuineIntel" in cpuinfo else "AMD" if "AuthenticAMD" in cpuinfo else None
    assert labels["feature.node.kubernetes.io/cpu-model.vendor_id"] == vendor
    assert ("feature.node.kubernetes.io/cpu-cpuid.AVX2" in labels) == (" avx2 " in cpuinfo.replace("\n", " "))
    assert {"type": "InternalIP", "address": NODE_IP} in node["status"]["addresses"]
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")


def test_a_restricted_pod_runs_its_init_container_and_passes_its_probe(web) -> None:
    cluster, ns = web
    pod = json.loads(cluster.kubectl("get", "-n", ns, "pod/web", "-o", "json").stdout)
    assert pod["spec"]["nodeName"] == NODE_NAME
    init = pod["status"]["initContainerStatuses"][0]
    assert init["state"]["terminated"]["exitCode"] == 0
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:8080/init.txt", timeout=10) as resp:
        assert resp.read() == b"prepared\n"  # written by the init container into the shared emptyDir


def test_the_service_answers_through_kube_proxy_and_by_name(web) -> None:
    cluster, ns = web
    ip = cluster.kubectl("get", "-n", ns, "svc/web", "-o", "jsonpath={.spec.clusterIP}").stdout
    # kube-proxy's OUTPUT rules; it programs a new Service a moment after the pod is Ready.
    assert wait_for(lambda: _get(f"http://{ip}/index.html"), 60, "the page through the ClusterIP") == PAGE

    def resolves() -> bool:
        answer = subprocess.run(["busybox", "nslookup", f"web.{ns}.svc.cluster.local", NODE_IP],
                                capture_output=True, text=True, timeout=30).stdout
        return ip in answer
    wait_for(resolves, 60, "CoreDNS on the bridge to answer the Service's name")


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read()
    except OSError:
        return None


def test_kubectl_logs_exec_and_port_forward_reach_the_pod(web) -> None:
    cluster, ns = web
    shown = cluster.kubectl("exec", "-n", ns, "web", "-c", "web", "--", "/bin/busybox", "cat", "/data/init.txt")
    assert shown.stdout == "prepared\n"
    cluster.kubectl("logs", "-n", ns, "web", "-c", "web")  # fails without a kubelet address
    port = processes.free_port()
    forward = subprocess.Popen([str(cluster.tool("kubectl")), f"--kubeconfig={cluster.kubeconfig}", "port-forward",
                                "-n", ns, "pod/web", f"{port}:8080"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: _get(f"http://127.0.0.1:{port}/index.html"), 60,
                        "the page through kubectl port-forward") == PAGE
    finally:
        processes.terminate(forward)  # type: ignore[arg-type]


def test_cluster_down_leaves_no_process_mount_interface_route_or_rule(node_cluster, web) -> None:
    # Last in this file on purpose: it stops the module's cluster (with its pod still running).
    cluster, before = node_cluster
    cluster.down()
    assert host_state_support.left_behind(before, host_state_support.read(cluster.root)) == {}
