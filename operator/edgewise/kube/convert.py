"""Raw API objects (JSON dicts) → the small types planning works with."""

from __future__ import annotations

from typing import Any

from edgewise.api.base import memory_mib
from edgewise.core import names
from edgewise.core.observed import NodeInfo, RuntimePod, Taint, Workload


def node_info(obj: dict[str, Any]) -> NodeInfo:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    taints = tuple(Taint(key=t.get("key", ""), value=t.get("value") or "", effect=t.get("effect", ""))
                   for t in spec.get("taints") or [])
    status = obj.get("status") or {}
    ready = condition_true(status, "Ready")
    address = next((a.get("address", "") for a in status.get("addresses") or [] if a.get("type") == "InternalIP"),
                   "")
    return NodeInfo(name=meta.get("name", ""), labels=dict(meta.get("labels") or {}), taints=taints,
                    ready=ready, address=address,
                    memory_mib=memory_mib((status.get("allocatable") or {}).get("memory", "")),
                    allocatable={str(k): str(v) for k, v in (status.get("allocatable") or {}).items()})


def condition_true(status: dict[str, Any], type_: str) -> bool:
    """Whether a node's or pod's status has condition `type_` with status "True"."""
    return any(c.get("type") == type_ and c.get("status") == "True" for c in status.get("conditions") or [])


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


def runtime_pod(obj: dict[str, Any]) -> RuntimePod:
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    containers = status.get("containerStatuses") or []
    reason = ""
    for c in containers:
        waiting = (c.get("state") or {}).get("waiting") or {}
        last = (c.get("lastState") or {}).get("terminated") or {}
        reason = waiting.get("reason") or last.get("reason") or reason
    reason = _failed_init(status) or reason
    owner = next((str(r.get("uid", "")) for r in meta.get("ownerReferences") or [] if r.get("controller")), "")
    return RuntimePod(name=meta.get("name", ""), uid=meta.get("uid", ""), ip=str(status.get("podIP") or ""),
                      node=(obj.get("spec") or {}).get("nodeName", ""), owner_uid=owner,
                      revision=(meta.get("labels") or {}).get(names.REVISION_LABEL, ""),
                      ready=condition_true(status, "Ready"),
                      restarts=sum(int(c.get("restartCount") or 0) for c in containers), reason=reason,
                      terminating=bool(meta.get("deletionTimestamp")), phase=str(status.get("phase") or ""))


def _failed_init(status: dict[str, Any]) -> str:
    """Why an init container (the artifact fetch) failed, in its own last words, or "".

    The fetch container's message is the tail of its log (terminationMessagePolicy FallbackToLogsOnError):
    its last line says why it refused, e.g. an attestation signed by a key the node does not trust."""
    for c in status.get("initContainerStatuses") or []:
        state, last = c.get("state") or {}, c.get("lastState") or {}
        ended = state.get("terminated") or last.get("terminated") or {}
        if not ended or ended.get("exitCode") in (None, 0):
            continue
        lines = [line.strip() for line in str(ended.get("message") or "").splitlines() if line.strip()]
        said = lines[-1] if lines else str(ended.get("reason") or f"exit code {ended.get('exitCode')}")
        return f"init container {c.get('name', '?')} failed: {said[-400:]}"
    return ""
