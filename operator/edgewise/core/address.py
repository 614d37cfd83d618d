"""The node-local address of a model: one Service per EdgeModel, `internalTrafficPolicy: Local`.

An application on a node calls `edgewise-<model>.<namespace>.svc:8000` (HTTP) or `:8001` (gRPC) and
reaches the model's pod on its own node: kube-proxy only routes to endpoints on the client's node,
never across the (often thin) links between edge nodes. The Service selects the model's runtime
pods of every class and both slots, so during a make-before-break switch (core/rollout/switch.py) the node
has a Ready endpoint throughout: Service endpoints follow readiness, and a terminating pod's
endpoint stops receiving new connections while its server drains.

The `edgewise-` prefix keeps the name apart from the Services users name after their models, and
makes it a valid DNS-1035 label even for model names that start with a digit. A name that would
not fit (longer than 63 characters, or with dots) is shortened with a hash of the model name.
The operator never takes over a Service it does not own: a name already taken is reported.
"""

from __future__ import annotations

import hashlib
from typing import Any

from edgewise import contract
from edgewise.api.resources import API_VERSION, EdgeModel
from edgewise.core import names
from edgewise.core.plan import spec_hash

PREFIX = "edgewise-"
DNS_LABEL_MAX = 63
ADDRESS_COMPONENT = "address"


def service_name(model: str) -> str:
    """`edgewise-<model>`, or a shortened, hashed form when that is not a valid DNS-1035 label."""
    name = PREFIX + model
    if len(name) <= DNS_LABEL_MAX and "." not in name:
        return name
    digest = hashlib.sha256(model.encode()).hexdigest()[:8]
    keep = DNS_LABEL_MAX - len(PREFIX) - len(digest) - 1
    stem = model.replace(".", "-")[:keep].rstrip("-")
    return f"{PREFIX}{stem}-{digest}"


def address(model: EdgeModel) -> str:
    """What applications put in their client: the Service's DNS name within the cluster."""
    return f"{service_name(model.metadata.name)}.{model.metadata.namespace}.svc"


def model_service(model: EdgeModel) -> dict[str, Any]:
    """The Service, owned by the model (garbage-collected with it), with a spec-hash annotation."""
    meta = model.metadata
    selector = {names.MODEL_LABEL: meta.name, names.MANAGED_BY: names.MANAGER,
                names.COMPONENT: names.RUNTIME_COMPONENT}  # every class, both slots
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(meta.name),
            "namespace": meta.namespace,
            "labels": {names.APP_NAME: meta.name, names.PART_OF: "edgewise", names.MANAGED_BY: names.MANAGER,
                       names.COMPONENT: ADDRESS_COMPONENT, names.MODEL_LABEL: meta.name},
            "annotations": {},
            "ownerReferences": [{
                "apiVersion": API_VERSION, "kind": EdgeModel.KIND, "name": meta.name, "uid": meta.uid,
                "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            # Only the client's own node: an edge app must reach the model beside it, not a remote one.
            "internalTrafficPolicy": "Local",
            "ports": [
                {"name": "http", "port": contract.HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": contract.GRPC_PORT, "targetPort": "grpc", "protocol": "TCP",
                 "appProtocol": "grpc"},
            ],
        },
    }
    manifest["metadata"]["annotations"][names.SPEC_HASH_ANNOTATION] = spec_hash(manifest)
    return manifest


def conflict(model: EdgeModel, owners: frozenset[str]) -> str:
    """Why the operator leaves an existing Service of that name alone ("" when the model owns it)."""
    if model.metadata.uid in owners:
        return ""
    name = service_name(model.metadata.name)
    return (f"Service {model.metadata.namespace}/{name} exists and is not owned by this EdgeModel, so Edgewise "
            f"leaves it alone and the model has no node-local address; rename or delete that Service (Edgewise "
            f"then creates its own)")
