"""Simulated edge devices: kwok Nodes that carry the labels real ones do.

The device catalogue and the node manifests are pure data; `apply_fleet` is the
only function that talks to the API.
"""

from __future__ import annotations

import ipaddress
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes import client as k8s

from edgewise.devcluster.cluster import KWOK_ANNOTATION, NODE_CIDR

# What `make demo` and `edgewise dev cluster up` create when not told otherwise.
DEFAULT_FLEET = "jetson-orin=2,jetson-xavier=1,arm64-cpu=3,amd64-cpu=1"

ZONE_LABEL = "topology.kubernetes.io/zone"  # the site a node is at (Kubernetes' well-known label)
GFD = "nvidia.com/gpu"
NFD = "feature.node.kubernetes.io"


@dataclass(frozen=True)
class DeviceClass:
    """One kind of edge device, labelled as its real agents (GFD, NFD, the kubelet) would."""

    name: str
    arch: str
    instance_type: str
    cpu: str
    memory: str
    labels: dict[str, str] = field(default_factory=dict)
    extra_capacity: dict[str, str] = field(default_factory=dict)
    os_image: str = "Ubuntu 22.04.4 LTS"


def _jetson(name: str, product: str, family: str, cc: tuple[int, int], gpu_mib: int, cpu: str,
            memory: str, instance_type: str) -> DeviceClass:
    return DeviceClass(
        name=name, arch="arm64", instance_type=instance_type, cpu=cpu, memory=memory,
        labels={
            f"{GFD}.present": "true",
            f"{GFD}.product": product,
            f"{GFD}.family": family,
            f"{GFD}.compute.major": str(cc[0]),
            f"{GFD}.compute.minor": str(cc[1]),
            f"{GFD}.memory": str(gpu_mib),  # Jetson GPUs share the module's memory
            f"{GFD}.count": "1",
            f"{NFD}/cpu-model.vendor_id": "NVIDIA",
        },
        extra_capacity={GFD: "1"},
        os_image="Ubuntu 22.04.4 LTS (L4T R36.4)",
    )


CATALOGUE: dict[str, DeviceClass] = {c.name: c for c in (
    _jetson("jetson-orin", "NVIDIA-Jetson-AGX-Orin", "ampere", (8, 7), 62841, "12", "64Gi",
            "jetson-agx-orin-64gb"),
    _jetson("jetson-xavier", "NVIDIA-Jetson-Xavier-NX", "volta", (7, 2), 7765, "6", "8Gi",
            "jetson-xavier-nx-8gb"),
    DeviceClass(name="arm64-cpu", arch="arm64", instance_type="raspberry-pi-5-8gb", cpu="4", memory="8Gi",
                labels={f"{NFD}/cpu-model.vendor_id": "ARM", f"{NFD}/cpu-cpuid.ASIMD": "true"},
                os_image="Debian GNU/Linux 12 (bookworm)"),
    DeviceClass(name="amd64-cpu", arch="amd64", instance_type="ipc-xeon-d-1736", cpu="8", memory="16Gi",
                labels={f"{NFD}/cpu-model.vendor_id": "Intel", f"{NFD}/cpu-cpuid.AVX2": "true",
                        f"{NFD}/cpu-cpuid.AVX512F": "true", f"{NFD}/cpu-cpuid.AVX512VNNI": "true"}),
)}


def parse_fleet(text: str) -> dict[str, int]:
    """'jetson-orin=2,arm64-cpu=3' → {'jetson-orin': 2, 'arm64-cpu': 3}, with a helpful error."""
    fleet: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, count = part.partition("=")
        if not sep or not count.strip().isdigit():
            raise ValueError(f"fleet entry {part!r} is not CLASS=COUNT (e.g. jetson-orin=2)")
        if name not in CATALOGUE:
            raise ValueError(f"unknown device class {name!r}; known: {', '.join(CATALOGUE)}")
        fleet[name] = fleet.get(name, 0) + int(count)
    return fleet


def spread(nodes: int) -> dict[str, int]:
    """N nodes spread round-robin over the catalogue, the way `--nodes N` asks for."""
    names = list(CATALOGUE)
    return {n: c for n, c in ((name, nodes // len(names) + (i < nodes % len(names)))
                              for i, name in enumerate(names)) if c}


def node_manifest(name: str, device: DeviceClass, ip: str, extra_labels: dict[str, str] | None = None
                  ) -> dict[str, Any]:
    capacity = {"cpu": device.cpu, "memory": device.memory, "pods": "110", **device.extra_capacity}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/arch": device.arch,
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": name,
                "node.kubernetes.io/instance-type": device.instance_type,
                "type": "kwok",
                "edgewise.io/device-class": device.name,  # for humans and tests; Edgewise classifies by the rest
                **device.labels,
                **(extra_labels or {}),
            },
        },
        "spec": {},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "nodeInfo": {"architecture": device.arch, "operatingSystem": "linux", "osImage": device.os_image,
                         "kubeletVersion": "v1.36.3-kwok", "containerRuntimeVersion": "containerd://2.0.0",
                         "kernelVersion": "6.1.0", "kubeProxyVersion": "", "bootID": "", "machineID": "",
                         "systemUUID": ""},
        },
    }


def _next_ips(used: set[str], count: int, node_cidr: str) -> list[str]:
    network = ipaddress.ip_network(node_cidr)
    out: list[str] = []
    for addr in network.hosts():
        if len(out) == count:
            break
        if str(addr) not in used and not str(addr).endswith((".0", ".255")):
            out.append(str(addr))
    return out


def plan_nodes(fleet: dict[str, int], existing: dict[str, str], prefix: str = "",
               node_cidr: str = NODE_CIDR, zones: list[str] | None = None) -> list[dict[str, Any]]:
    """Manifests for the nodes of `fleet` that don't exist yet.

    `existing` maps node name → InternalIP; names are `<prefix><class>-<n>` so
    asking twice for the same fleet adds nothing (idempotent), and asking for
    more adds only the difference. With `zones`, node n of each class is at site
    `zones[n % len(zones)]` (the `topology.kubernetes.io/zone` label).
    """
    wanted = [(f"{prefix}{cls}-{i}", CATALOGUE[cls], i) for cls, n in fleet.items() for i in range(n)]
    missing = [(name, dev, i) for name, dev, i in wanted if name not in existing]
    ips = _next_ips(set(existing.values()), len(missing), node_cidr)
    return [node_manifest(name, dev, ip, {ZONE_LABEL: zones[i % len(zones)]} if zones else None)
            for (name, dev, i), ip in zip(missing, ips, strict=True)]


def _internal_ip(node: dict[str, Any]) -> str:
    for addr in (node.get("status") or {}).get("addresses") or []:
        if addr.get("type") == "InternalIP":
            return str(addr.get("address", ""))
    return ""


def _list_nodes(core: k8s.CoreV1Api) -> list[dict[str, Any]]:
    """Every node as JSON, 500 a page: typed objects for thousands of nodes cost seconds per listing, and one
    response of thousands of nodes from a busy apiserver can break off mid-way."""
    items: list[dict[str, Any]] = []
    token = None
    while True:
        page = json.loads(core.list_node(limit=500, _continue=token, _preload_content=False).data)
        items += page["items"]
        token = page["metadata"].get("continue")
        if not token:
            return items


def apply_fleet(api: k8s.ApiClient, fleet: dict[str, int], prefix: str = "", node_cidr: str = NODE_CIDR,
                zones: list[str] | None = None, parallel: int = 8) -> list[str]:
    """Create the missing nodes of `fleet` (InternalIPs from `node_cidr`); return the names of all its nodes.

    Creates `parallel` nodes at a time: thousands of nodes one request after the other take minutes.
    """
    core = k8s.CoreV1Api(api)
    existing = {n["metadata"]["name"]: _internal_ip(n) for n in _list_nodes(core)}
    manifests = plan_nodes(fleet, existing, prefix, node_cidr, zones)
    with ThreadPoolExecutor(max(1, min(parallel, len(manifests)))) as pool:
        list(pool.map(lambda m: core.create_node(m, _preload_content=False), manifests))
    return [f"{prefix}{cls}-{i}" for cls, n in fleet.items() for i in range(n)]


def delete_nodes(api: k8s.ApiClient, names: list[str]) -> None:
    core = k8s.CoreV1Api(api)
    for name in names:
        try:
            core.delete_node(name)
        except k8s.ApiException as err:
            if err.status != 404:
                raise


def wait_ready(api: k8s.ApiClient, names: list[str], timeout: float = 60.0) -> bool:
    """Wait until kwok reports every node of `names` Ready; False on timeout."""
    core = k8s.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            nodes = _list_nodes(core)
        except (k8s.ApiException, urllib3.exceptions.HTTPError):  # a busy apiserver: ask again
            time.sleep(2.0)
            continue
        ready = {n["metadata"]["name"] for n in nodes
                 if any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in (n.get("status") or {}).get("conditions") or [])}
        if set(names) <= ready:
            return True
        time.sleep(0.5 if len(names) < 100 else 2.0)
    return False
