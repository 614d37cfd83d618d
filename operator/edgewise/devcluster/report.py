"""A human summary of the local cluster: components, nodes per device class, how to use it."""

from __future__ import annotations

import json
from collections import defaultdict

from kubernetes import client as k8s

from edgewise.devcluster.cluster import DevCluster


def describe(cluster: DevCluster, api: k8s.ApiClient) -> str:
    status = cluster.status()
    code, body = cluster.get("/version")
    version = json.loads(body).get("gitVersion", "?") if code == 200 else "?"
    lines = [f"Kubernetes {version} at {status['server']}", "components:"]
    for name, comp in status["components"].items():  # type: ignore[union-attr]
        lines.append(f"  {name:<24} pid {comp['pid']:<8} {'running' if comp['alive'] else 'STOPPED'}")
    by_class: dict[str, list[str]] = defaultdict(list)
    for node in k8s.CoreV1Api(api).list_node().items:
        labels = node.metadata.labels or {}
        ip = next((a.address for a in node.status.addresses or [] if a.type == "InternalIP"), "-")
        ready = next((c.status for c in node.status.conditions or [] if c.type == "Ready"), "Unknown")
        gpu = labels.get("nvidia.com/gpu.product", "")
        by_class[labels.get("edgewise.io/device-class", "other")].append(
            f"    {node.metadata.name:<22} {ip:<14} arch={labels.get('kubernetes.io/arch', '?'):<6}"
            f" ready={ready:<6} {gpu}")
    lines.append(f"fleet ({sum(len(v) for v in by_class.values())} simulated nodes):")
    for cls in sorted(by_class):
        lines.append(f"  {cls}:")
        lines.extend(by_class[cls])
    lines += [
        "use it:",
        f"  export KUBECONFIG={cluster.kubeconfig}",
        f"  {cluster.state().bin_dir if cluster.state() else '~/.cache/edgewise/bin'}/kubectl get nodes -L "  # type: ignore[union-attr]
        "kubernetes.io/arch,nvidia.com/gpu.family",
        "  make cluster-down    # stop every process",
    ]
    return "\n".join(lines)
