"""The node agent DaemonSet: one per cluster, in its own namespace (`agent_namespace`).

It is the only Edgewise component with node-level privilege: host network (so
pods reach it at their node's IP) and the one hostPath, the node cache. It runs
as root without any capability: root owns the cache directory the kubelet
creates, so no capability is needed to write it. Host network and hostPath need
the `privileged` Pod Security Standard, so it does not share the operator's
namespace, which enforces `restricted`.

Its ServiceAccount may only create TokenReviews: the agent checks every caller's
token with the apiserver, and serves only the pods of its own node (NODE_NAME),
the operator (`operator_user`, the user name the operator authenticates as) and
the other nodes' agents (their ServiceAccount, the same as its own): those fetch
artifacts from their site's source node with a projected token of the agent
audience (docs/node-cache.md, "Bandwidth").
"""

from __future__ import annotations

from typing import Any

from edgewise import contract
from edgewise.api.settings import OperatorSettings
from edgewise.core import names, pods
from edgewise.core.plan import spec_hash

CACHE_VOLUME = "cache"
PLAN_SIGNING_KEY = f"{contract.AGENT_CACHE_DIR}/{contract.PLAN_KEY_SUBDIR}/{contract.PLAN_KEY_FILE}"


def agent_args(settings: OperatorSettings, operator_user: str | None) -> list[str]:
    s = settings
    args = [
        "--host", f"$({contract.AGENT_HOST_ENV})",
        "--port", str(contract.AGENT_PORT),
        "--cache-dir", contract.AGENT_CACHE_DIR,
        "--keep-per-model", str(s.agent_keep),
        "--max-cache-bytes", s.agent_max_cache,
        "--download-workers", str(s.agent_download_workers),
        "--download-deadline", str(s.agent_download_deadline_seconds),
    ]
    if operator_user:
        args += ["--operator-user", operator_user]
    args += ["--peer-user", f"{contract.SA_PREFIX}{s.agent_namespace}:{s.agent_service_account}",
             "--peer-token-file", contract.AGENT_TOKEN_FILE]
    default = s.agent_bandwidth.default
    if default.bytes_per_second:
        args += ["--bytes-per-second", str(default.bytes_per_second)]
    if default.daily_bytes:
        args += ["--daily-bytes", str(default.daily_bytes)]
    if s.agent_bandwidth.time_zone != "UTC":
        args += ["--daily-time-zone", s.agent_bandwidth.time_zone]
    for host in s.agent_allow_host_list:
        args += ["--allow-host", host]
    if s.agent_deny_private:
        args.append("--deny-private")
    if s.node_trusted_keys_config_map:
        args += ["--trusted-keys", contract.TRUSTED_KEYS_DIR]
    if s.node_trusted_keys_config_map or s.node_plan_check:
        # Its own key, generated on the node's first start and kept in the cache's hostPath across restarts.
        args += ["--plan-signing-key", PLAN_SIGNING_KEY]
    return args


def agent_daemonset(settings: OperatorSettings, operator_user: str | None = None) -> dict[str, Any]:
    """The DaemonSet; `operator_user` (e.g. system:serviceaccount:<ns>:<sa>) may stage artifacts."""
    s = settings
    selector = {names.APP_NAME: s.agent_name}
    labels = {**selector, names.PART_OF: "edgewise", names.MANAGED_BY: names.MANAGER,
              names.COMPONENT: names.AGENT_COMPONENT}
    container = {
        "name": "agent",
        "image": s.image(s.agent_image),
        "imagePullPolicy": s.image_pull_policy,
        "command": ["edgewise", "agent"],
        "args": agent_args(s, operator_user),
        "env": [pods.node_ip_env(),
                {"name": contract.AGENT_NODE_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                *pods.trace_env(s.trace_env)],
        "ports": [{"name": "agent", "containerPort": contract.AGENT_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": contract.AGENT_HEALTH_PATH, "port": contract.AGENT_PORT},
                           "periodSeconds": 10},
        "livenessProbe": {"httpGet": {"path": contract.AGENT_HEALTH_PATH, "port": contract.AGENT_PORT},
                          "periodSeconds": 20, "failureThreshold": 6},
        "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
        "volumeMounts": [{"name": CACHE_VOLUME, "mountPath": contract.AGENT_CACHE_DIR},
                         {"name": pods.TMP_VOLUME, "mountPath": "/tmp"},
                         pods.agent_token_mount(),  # its token for its peers (another node's agent)
                         *pods.trusted_keys_mounts(s.node_trusted_keys_config_map)],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsUser": 0,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    manifest: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": s.agent_name, "namespace": s.agent_namespace, "labels": labels, "annotations": {}},
        "spec": {
            "selector": {"matchLabels": selector},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "hostNetwork": True,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "serviceAccountName": s.agent_service_account,
                    # Its own token, for TokenReviews only (the ServiceAccount may do nothing else).
                    "automountServiceAccountToken": True,
                    "enableServiceLinks": False,
                    "nodeSelector": dict(s.agent_node_selector),
                    # Wherever a model may run, its cache must be: tolerate every taint.
                    "tolerations": [{"operator": "Exists"}],
                    **pods.pull_secrets(s.image_pull_secrets),
                    "containers": [container],
                    "volumes": [
                        {"name": CACHE_VOLUME,
                         "hostPath": {"path": s.agent_cache_dir, "type": "DirectoryOrCreate"}},
                        {"name": pods.TMP_VOLUME, "emptyDir": {}},
                        pods.agent_token_volume(),
                        *pods.trusted_keys_volumes(s.node_trusted_keys_config_map),
                    ],
                },
            },
        },
    }
    if s.agent_critical:
        manifest["spec"]["template"]["spec"]["priorityClassName"] = "system-node-critical"
    manifest["metadata"]["annotations"][names.SPEC_HASH_ANNOTATION] = spec_hash(manifest)
    return manifest
