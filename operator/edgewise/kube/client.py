"""One configured API client: from a kubeconfig, or the pod's service account; it counts its requests."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

OnRequest = Callable[[str, str], None]  # (verb, resource), e.g. ("list", "nodes")
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


class CountingApiClient(client.ApiClient):
    """An ApiClient that counts every request by Kubernetes verb and resource.

    Reads are a cost the operator must keep flat at rest (docs/benchmarks.md measures them),
    so they are counted where every request passes, not estimated.
    """

    def __init__(self, configuration: client.Configuration | None = None, on_request: OnRequest | None = None
                 ) -> None:
        super().__init__(configuration)
        self.on_request = on_request
        self.requests: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        key = request_kind(method, url)
        with self._lock:
            self.requests[key] += 1
        if self.on_request is not None:
            self.on_request(*key)
        return super().call_api(method, url, *args, **kwargs)


def request_kind(method: str, url: str) -> tuple[str, str]:
    """(verb, resource) of a request, as the apiserver's metrics name them: list/watch/get/create/…"""
    path, _, query = url.split("://", 1)[-1].partition("/")[2].partition("?")
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        parts = parts[2:]
    elif parts[:1] == ["apis"]:
        parts = parts[3:]
    if len(parts) >= 3 and parts[0] == "namespaces":
        parts = parts[2:]  # a namespaced resource (a namespace itself keeps its two parts)
    resource = parts[0] if parts else ""
    if len(parts) >= 3:
        resource = f"{resource}/{parts[2]}"  # a subresource, e.g. edgemodels/status
    if method.upper() != "GET":
        return _VERBS.get(method.upper(), method.lower()), resource
    params = dict(parse_qsl(query))
    if params.get("watch", "").lower() in ("true", "1"):
        return "watch", resource
    return ("get" if len(parts) >= 2 else "list"), resource


def api_client(kubeconfig: str | None = None, on_request: OnRequest | None = None) -> CountingApiClient:
    """A client for `kubeconfig`; without one, in-cluster config, then $KUBECONFIG / ~/.kube/config."""
    cfg = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        return CountingApiClient(cfg, on_request)
    try:
        config.load_incluster_config(client_configuration=cfg)
    except ConfigException:
        cfg = client.Configuration()
        config.load_kube_config(client_configuration=cfg)
    return CountingApiClient(cfg, on_request)
