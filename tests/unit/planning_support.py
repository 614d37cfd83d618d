"""Builders shared by the planner, classifier and status unit tests.

Nodes carry the labels of the simulated fleet's catalogue, which mirrors what
GPU Feature Discovery, Node Feature Discovery and the kubelet put on real
devices; resources are built through the typed API models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edgewise.api.builtin import BUILTIN_PROFILE, BUILTIN_PROFILE_NAME
from edgewise.api.resources import DeploymentProfile, EdgeModel
from edgewise.core.observed import NodeInfo, Taint, Workload
from edgewise.core.plan import ResolvedProfile
from edgewise.devcluster.fleet import CATALOGUE

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
SHA = "a" * 64


def device_node(name: str, device: str, taints: tuple[Taint, ...] = (), **extra: str) -> NodeInfo:
    d = CATALOGUE[device]
    labels = {
        "kubernetes.io/arch": d.arch,
        "kubernetes.io/os": "linux",
        "kubernetes.io/hostname": name,
        "node.kubernetes.io/instance-type": d.instance_type,
        **d.labels,
        **extra,
    }
    return NodeInfo(name=name, labels=labels, taints=taints)


def fleet(**counts: int) -> list[NodeInfo]:
    """fleet(jetson_orin=2, arm64_cpu=3) → nodes named like the cluster fixture's."""
    out = []
    for device, n in counts.items():
        device = device.replace("_", "-")
        out += [device_node(f"{device}-{i}", device) for i in range(n)]
    return out


def example(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((EXAMPLES / name).read_text()))


def factory_floor() -> ResolvedProfile:
    p = DeploymentProfile.model_validate(example("factory-floor-profile.yaml"))
    return ResolvedProfile(name=p.metadata.name, spec=p.spec)


def builtin() -> ResolvedProfile:
    return ResolvedProfile(name=BUILTIN_PROFILE_NAME, spec=BUILTIN_PROFILE, builtin=True)


def model(
    name: str = "defect-detector",
    version: str = "2.1.0",
    profile_ref: str | None = "factory-floor",
    generation: int = 1,
    **spec: Any,
) -> EdgeModel:
    body: dict[str, Any] = {
        "apiVersion": "edgewise.io/v1alpha1",
        "kind": "EdgeModel",
        "metadata": {"name": name, "namespace": "vision", "uid": f"uid-{name}", "generation": generation},
        "spec": {
            "version": version,
            "source": {"uri": f"https://models.example.com/{name}.onnx", "sha256": SHA},
            **({"profileRef": profile_ref} if profile_ref else {}),
            **spec,
        },
    }
    return EdgeModel.model_validate(body)


def profile_of(*classes: dict[str, Any], name: str = "p") -> ResolvedProfile:
    p = DeploymentProfile.model_validate({"metadata": {"name": name}, "spec": {"classes": list(classes)}})
    return ResolvedProfile(name=name, spec=p.spec)


def observed_from(
    manifest: dict[str, Any],
    desired: int = 0,
    ready: int = 0,
    updated: int | None = None,
    observed_generation: int = 1,
) -> Workload:
    """A workload as the apiserver would return it after applying `manifest`, with counters."""
    meta = manifest["metadata"]
    return Workload(
        name=meta["name"],
        labels=dict(meta["labels"]),
        annotations=dict(meta["annotations"]),
        uid=f"uid-{meta['name']}",
        generation=1,
        observed_generation=observed_generation,
        desired=desired,
        ready=ready,
        updated=desired if updated is None else updated,
        available=ready,
    )


# The checks of the `restricted` Pod Security Standard that a pod template can fail.
def restricted_violations(pod: dict[str, Any]) -> list[str]:
    out = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            out.append(flag)
    for vol in pod.get("volumes", []):
        allowed = {
            "name",
            "emptyDir",
            "configMap",
            "secret",
            "projected",
            "downwardAPI",
            "ephemeral",
            "persistentVolumeClaim",
            "csi",
        }
        if set(vol) - allowed:
            out.append(f"volume {vol['name']}: {sorted(set(vol) - allowed)}")
    pod_sc = pod.get("securityContext", {})
    for c in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        sc = c.get("securityContext", {})
        if sc.get("privileged"):
            out.append(f"{c['name']}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{c['name']}: allowPrivilegeEscalation")
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or set(
            sc.get("capabilities", {}).get("add", [])
        ) - {"NET_BIND_SERVICE"}:
            out.append(f"{c['name']}: capabilities")
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            out.append(f"{c['name']}: runAsNonRoot")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            out.append(f"{c['name']}: runAsUser 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{c['name']}: seccomp")
        if c.get("ports") and any("hostPort" in p for p in c["ports"]):
            out.append(f"{c['name']}: hostPort")
    return out
