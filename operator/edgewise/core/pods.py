"""Pod-template pieces every runtime shares.

Runtime pods pass the `restricted` Pod Security Standard: non-root, read-only
root filesystem, no capabilities, RuntimeDefault seccomp, no privilege
escalation, no hostPath — except triton-tensorrt pods under the opt-in setting
node_plan_check, which read the node's public plan key through a read-only
hostPath (plan_keys_volumes). The model reaches them through the init container
(`edgewise fetch`), which asks the node agent on the pod's own node — found
through the downward API's `status.hostIP` — and lays it out in an emptyDir.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgewise import contract

TMP_VOLUME = "tmp"
# A terminating runtime pod keeps serving this long before its server drains (SIGTERM closes the
# listeners): time for the endpoint's removal to reach kube-proxy on the node, so a client of the
# node-local Service never meets a closed port while a node switches version.
PRE_STOP_SECONDS = 5


def container_security(run_as_user: int) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": run_as_user,
        "runAsGroup": run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security(run_as_user: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": run_as_user,
        "runAsGroup": run_as_user,
        "fsGroup": run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pull_secrets(names: Sequence[str]) -> dict[str, Any]:
    """The pod-spec fields that make the kubelet pull with these Secrets; nothing when there are none,
    so an install without pull secrets renders (and hashes) exactly as before."""
    return {"imagePullSecrets": [{"name": name} for name in names]} if names else {}


def node_ip_env() -> dict[str, Any]:
    """The node's address, where its agent listens (hostNetwork)."""
    return {"name": contract.AGENT_HOST_ENV, "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}


def trace_env(variables: dict[str, str]) -> list[dict[str, Any]]:
    """The operator's OTEL_* variables (settings.trace_env) as container env, so a component's spans
    go to the same trace backend."""
    return [{"name": k, "value": v} for k, v in sorted(variables.items())]


def agent_url_arg() -> str:
    """The agent URL with the node IP expanded by the kubelet from the env var ($(VAR) syntax)."""
    return contract.agent_url(f"$({contract.AGENT_HOST_ENV})")


def model_mounts(read_only: bool) -> list[dict[str, Any]]:
    return [
        {"name": contract.MODEL_VOLUME, "mountPath": contract.MODEL_ROOT, "readOnly": read_only},
        {"name": TMP_VOLUME, "mountPath": "/tmp"},
    ]


def volumes(trusted_keys_config_map: str = "") -> list[dict[str, Any]]:
    return [{"name": contract.MODEL_VOLUME, "emptyDir": {}}, {"name": TMP_VOLUME, "emptyDir": {}},
            agent_token_volume(), *trusted_keys_volumes(trusted_keys_config_map)]


def trusted_keys_volumes(config_map: str) -> list[dict[str, Any]]:
    """The nodes' trusted attestation keys (operator setting node_trusted_keys_config_map); none when unset.
    Not optional: with trust on, a pod whose namespace lacks the ConfigMap waits rather than runs unchecked."""
    if not config_map:
        return []
    return [{"name": contract.TRUSTED_KEYS_VOLUME, "configMap": {"name": config_map}}]


def trusted_keys_mounts(config_map: str) -> list[dict[str, Any]]:
    if not config_map:
        return []
    return [{"name": contract.TRUSTED_KEYS_VOLUME, "mountPath": contract.TRUSTED_KEYS_DIR, "readOnly": True}]


def plan_key_host_dir(agent_cache_dir: str) -> str:
    """Where the node agent keeps its plan key on the host: under its cache, so it survives restarts."""
    return f"{agent_cache_dir.rstrip('/')}/{contract.PLAN_KEY_SUBDIR}"


def plan_keys_volumes(plan_check: bool, agent_cache_dir: str) -> list[dict[str, Any]]:
    """The node's public plan key for triton-tensorrt pods (operator setting node_plan_check); none when off.

    A hostPath of just the agent's plan-key directory: the one thing a pod could not get from the agent it checks.
    `Directory`, not `DirectoryOrCreate`: until the agent made its key the pod waits rather than load plans
    unchecked. The private key beside the public one is the agent's (root, 0600); runtime pods run as non-root."""
    if not plan_check:
        return []
    return [{"name": contract.PLAN_KEYS_VOLUME,
             "hostPath": {"path": plan_key_host_dir(agent_cache_dir), "type": "Directory"}}]


def plan_keys_mounts(plan_check: bool) -> list[dict[str, Any]]:
    if not plan_check:
        return []
    return [{"name": contract.PLAN_KEYS_VOLUME, "mountPath": contract.PLAN_KEYS_DIR, "readOnly": True}]


def agent_token_volume() -> dict[str, Any]:
    """The pod's token for its node's agent: a projected ServiceAccount token bound to the pod (so the
    apiserver vouches for the pod's node), for the agent's audience only, short-lived and rotated by
    the kubelet. No Secret: nothing a namespace user could read and replay from another node."""
    return {"name": contract.AGENT_TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
        "audience": contract.AGENT_AUDIENCE, "expirationSeconds": contract.AGENT_TOKEN_SECONDS, "path": "token"}}]}}


def agent_token_mount() -> dict[str, Any]:
    """Mounted in the fetch init container only: the serving containers never talk to the agent."""
    return {"name": contract.AGENT_TOKEN_VOLUME, "mountPath": contract.AGENT_TOKEN_DIR, "readOnly": True}


def ports() -> list[dict[str, Any]]:
    return [
        {"name": "http", "containerPort": contract.HTTP_PORT, "protocol": "TCP"},
        {"name": "grpc", "containerPort": contract.GRPC_PORT, "protocol": "TCP"},
        {"name": "metrics", "containerPort": contract.METRICS_PORT, "protocol": "TCP"},
    ]


def probes(startup_seconds: int) -> dict[str, Any]:
    """KServe-V2 health endpoints; the startup probe covers model load and warm-up."""
    def http(path: str) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": "http"}}

    return {
        "startupProbe": {**http(contract.READY_PATH), "periodSeconds": 5,
                         "failureThreshold": max(1, startup_seconds // 5)},
        "readinessProbe": {**http(contract.READY_PATH), "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**http(contract.LIVE_PATH), "periodSeconds": 10, "failureThreshold": 3},
    }


def lifecycle() -> dict[str, Any]:
    """preStop as the kubelet's own sleep action: no shell or binary needed in the image."""
    return {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}}


def resources(requests: dict[str, Any] | None, limits: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = dict(requests)
    if limits:
        out["limits"] = dict(limits)
    return out
