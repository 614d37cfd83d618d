"""Raw API objects (JSON dicts) → the small types planning works with."""

from __future__ import annotations

from typing import Any

from edgewise.core.observed import NodeInfo, Taint, Workload


def node_info(obj: dict[str, Any]) -> NodeInfo:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    taints = tuple(Taint(key=t.get("key", ""), value=t.get("value") or "", effect=t.get("effect", ""))
                   for t in spec.get("taints") or [])
    status = obj.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    address = next((a.get("address", "") for a in status.get("addresses") or [] if a.get("type") == "InternalIP"),
                   "")
    return NodeInfo(name=meta.get("name", ""), labels=dict(meta.get("labels") or {}), taints=taints,
                    ready=ready, address=address,
                    memory_mib=_mib((status.get("allocatable") or {}).get("memory", "")))


def _mib(quantity: str) -> int:
    """Kubernetes memory quantity → MiB (the suffixes nodes report; 0 when absent or unparseable)."""
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 ** 2, "k": 1000 / 2 ** 20, "M": 1e6 / 2 ** 20,
             "G": 1e9 / 2 ** 20}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            try:
                return int(float(quantity[: -len(suffix)]) * factor)
            except ValueError:
                return 0
    return int(int(quantity) / 2 ** 20) if quantity.isdigit() else 0


def workload(obj: dict[str, Any]) -> Workload:
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    return Workload(
        name=meta.get("name", ""),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation") or 0),
        observed_generation=int(status.get("observedGeneration") or 0),
        desired=int(status.get("desiredNumberScheduled") or 0),
        ready=int(status.get("numberReady") or 0),
        updated=int(status.get("updatedNumberScheduled") or 0),
        available=int(status.get("numberAvailable") or 0),
        template=(obj.get("spec") or {}).get("template"),
    )


def owner_uids(obj: dict[str, Any]) -> set[str]:
    return {ref.get("uid", "") for ref in (obj.get("metadata") or {}).get("ownerReferences") or []}
