"""One configured API client: from a kubeconfig, or the pod's service account."""

from __future__ import annotations

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException


def api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """A client for `kubeconfig`; without one, in-cluster config, then $KUBECONFIG / ~/.kube/config."""
    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    try:
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)
        return client.ApiClient(cfg)
    except ConfigException:
        return config.new_client_from_config()
