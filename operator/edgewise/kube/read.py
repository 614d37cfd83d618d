"""Reads: nodes, EdgeModels, profiles, and the workloads and runtime pods of a model.

Nodes come from the watch-fed `NodeCache` once its first listing is complete (the operator
starts one); a LIST of every node is only the fallback before that, and for callers without a cache.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

from kubernetes import client

from edgewise.api.builtin import BUILTIN_PROFILE, BUILTIN_PROFILE_NAME
from edgewise.api.resources import GROUP, VERSION, DeploymentProfile, EdgeModel
from edgewise.core import names
from edgewise.core.observed import NodeInfo, RuntimePod, Service, Workload
from edgewise.core.plan import ResolvedProfile
from edgewise.kube.convert import node_info, owner_uids, runtime_pod, workload
from edgewise.kube.node_cache import NodeCache


class Reader:
    def __init__(self, api: client.ApiClient, node_cache: NodeCache | None = None) -> None:
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.node_cache = node_cache

    def nodes(self) -> list[NodeInfo]:
        """Every node: from the cache when it has synced (no request), else one LIST."""
        cached = self.node_cache.snapshot() if self.node_cache is not None else None
        if cached is not None:
            return cached
        resp = self.core.list_node(_preload_content=False)
        return [node_info(n) for n in _json(resp)["items"]]

    def model(self, namespace: str, name: str) -> EdgeModel | None:
        obj = self._get(EdgeModel.PLURAL, namespace, name)
        return EdgeModel.model_validate(obj) if obj else None

    def models(self, namespace: str | None = None) -> list[EdgeModel]:
        return [EdgeModel.model_validate(o) for o in self._list(EdgeModel.PLURAL, namespace)]

    def profile(self, namespace: str, name: str) -> DeploymentProfile | None:
        obj = self._get(DeploymentProfile.PLURAL, namespace, name)
        return DeploymentProfile.model_validate(obj) if obj else None

    def profiles(self, namespace: str | None = None) -> list[DeploymentProfile]:
        return [DeploymentProfile.model_validate(o) for o in self._list(DeploymentProfile.PLURAL, namespace)]

    def resolve_profile(self, model: EdgeModel) -> ResolvedProfile | None:
        """The model's profile; the built-in one without profileRef; None when the ref is missing."""
        ref = model.spec.profile_ref
        if not ref:
            return ResolvedProfile(name=BUILTIN_PROFILE_NAME, spec=BUILTIN_PROFILE, builtin=True)
        found = self.profile(model.metadata.namespace, ref)
        if found is None:
            return None
        return ResolvedProfile(name=ref, spec=found.spec, generation=found.metadata.generation)

    def workloads(self, model: EdgeModel) -> list[Workload]:
        """DaemonSets labelled for the model and owned by this very object (uid), nothing else."""
        resp = self.apps.list_namespaced_daemon_set(
            model.metadata.namespace, label_selector=names.owned_selector(model.metadata.name),
            _preload_content=False)
        return [workload(d) for d in _json(resp)["items"] if model.metadata.uid in owner_uids(d)]

    def runtime_pods(self, model: EdgeModel) -> list[RuntimePod]:
        """The model's runtime pods, of every class and slot (canary analysis sorts them by DaemonSet)."""
        resp = self.core.list_namespaced_pod(
            model.metadata.namespace,
            label_selector=f"{names.MODEL_LABEL}={model.metadata.name},{names.COMPONENT}={names.RUNTIME_COMPONENT}",
            _preload_content=False)
        return [runtime_pod(p) for p in _json(resp)["items"]]

    def service(self, namespace: str, name: str) -> Service | None:
        obj = _or_none(lambda: _json(self.core.read_namespaced_service(name, namespace, _preload_content=False)))
        if obj is None:
            return None
        return Service(name=name, annotations=dict(obj["metadata"].get("annotations") or {}),
                       owner_uids=frozenset(owner_uids(obj)))

    def config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        """A ConfigMap's data; None when it does not exist (the trust policy's signers, core/trust_gate.py)."""
        obj = _or_none(lambda: _json(self.core.read_namespaced_config_map(name, namespace, _preload_content=False)))
        return dict(obj.get("data") or {}) if obj is not None else None

    def daemonset(self, namespace: str, name: str) -> Workload | None:
        obj = _or_none(lambda: _json(self.apps.read_namespaced_daemon_set(name, namespace, _preload_content=False)))
        return workload(obj) if obj is not None else None

    def _get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = _or_none(lambda: self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name))
        return dict(cast(dict[str, Any], obj)) if obj is not None else None

    def _list(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        if namespace:
            out = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        else:
            out = self.custom.list_cluster_custom_object(GROUP, VERSION, plural)
        return list(cast(dict[str, Any], out)["items"])


def _json(resp: Any) -> dict[str, Any]:
    return dict(json.loads(resp.data))


def _or_none(read: Callable[[], Any]) -> Any:
    """What `read` returns, or None when the object is not there (404)."""
    try:
        return read()
    except client.ApiException as err:
        if err.status == 404:
            return None
        raise
