"""`onnxruntime`: Edgewise's ONNX Runtime server (`edgewise serve`) on CPU nodes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgewise import contract
from edgewise.api.profile import HardwareClass
from edgewise.core import pods
from edgewise.core.observed import NodeInfo
from edgewise.core.runtimes.interface import PodContext, Split, Variant

# Seconds `edgewise serve` needs at most to load and warm up before the startup probe gives up.
STARTUP_SECONDS = 300
# A little more than the server's own drain timeout (30 s) after SIGTERM.
GRACE_SECONDS = 40


def fetch_request(ctx: PodContext, layout: contract.Layout, precision: str) -> contract.FetchRequest:
    batching = ctx.hardware.batching
    return contract.FetchRequest(
        uri=ctx.artifact.uri, sha256=ctx.artifact.sha256, model_name=ctx.model, layout=layout,
        dest=contract.MODEL_ROOT, agent=pods.agent_url_arg(), precision=precision,
        max_batch_size=batching.max_batch_size if batching else 0,
        max_queue_delay_us=batching.max_queue_delay_microseconds if batching else 0,
        # Always pinned (the fetch ignores it without trusted keys), so turning trust on changes no argument
        # but --trusted-keys.
        source_sha256=ctx.source_sha256,
        trusted_keys=contract.TRUSTED_KEYS_DIR if ctx.settings.node_trusted_keys_config_map else "",
    )


def fetch_container(ctx: PodContext, image: str, request: contract.FetchRequest, run_as_user: int,
                    env: Sequence[dict[str, Any]] = (), resources: dict[str, Any] | None = None,
                    mounts: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    s = ctx.settings
    return {
        "name": "fetch",
        "image": image,
        "imagePullPolicy": s.image_pull_policy,
        "command": ["edgewise", "fetch"],
        "args": request.to_args(),
        "env": [pods.node_ip_env(), *env],
        "volumeMounts": [*pods.model_mounts(read_only=False), pods.agent_token_mount(),
                         *pods.trusted_keys_mounts(s.node_trusted_keys_config_map), *mounts],
        "securityContext": pods.container_security(run_as_user),
        "resources": resources or {"requests": {"cpu": "50m", "memory": "64Mi"}},
        # Its log's tail becomes the pod's termination message when it fails: the canary analysis reads it,
        # so a rollback says why the fetch refused (kube/convert.py).
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def serve_pod_spec(ctx: PodContext, image: str, fetch_image: str, backend_args: Sequence[str] = (),
                   device_limits: dict[str, str] | None = None) -> dict[str, Any]:
    """The pod of Edgewise's own server (`edgewise serve`): ONNX Runtime's, or OpenVINO's with `backend_args`.

    `fetch_image` is the operator's image for the runtime even where a class overrides the server's `image`:
    unless overridden, both are the same image, so a node pulls one image per runtime."""
    s, hc = ctx.settings, ctx.hardware
    request = fetch_request(ctx, contract.Layout.ONNXRUNTIME, ctx.artifact.precision)
    args = [
        "--model-dir", contract.model_dir(ctx.model),
        "--model-name", ctx.model,
        "--http-port", str(contract.HTTP_PORT),
        "--grpc-port", str(contract.GRPC_PORT),
        "--metrics-port", str(contract.METRICS_PORT),
        *backend_args,
    ]
    if hc.threads:
        args += ["--threads", str(hc.threads)]
    if hc.batching:
        args += ["--max-batch-size", str(hc.batching.max_batch_size),
                 "--max-queue-delay-us", str(hc.batching.max_queue_delay_microseconds)]
    res = hc.resources
    limits = {**(res.limits if res and res.limits else {}), **(device_limits or {})}
    server = {
        "name": "server",
        "image": image,
        "imagePullPolicy": s.image_pull_policy,
        "command": ["edgewise", "serve"],
        "args": args,
        "ports": pods.ports(),
        **pods.probes(STARTUP_SECONDS),
        "lifecycle": pods.lifecycle(),
        "resources": pods.resources(res.requests if res else None, limits or None),
        "volumeMounts": pods.model_mounts(read_only=True),
        "securityContext": pods.container_security(s.run_as_user),
    }
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": GRACE_SECONDS,
        "securityContext": pods.pod_security(s.run_as_user),
        **pods.pull_secrets(s.image_pull_secrets),
        "initContainers": [fetch_container(ctx, fetch_image, request, s.run_as_user)],
        "containers": [server],
        "volumes": pods.volumes(s.node_trusted_keys_config_map),
    }


class OnnxRuntime:
    name = "onnxruntime"

    def split(self, nodes: Sequence[NodeInfo], hardware: HardwareClass) -> Split:
        return Split(variants=(Variant(key="", nodes=tuple(nodes)),))

    def image(self, ctx: PodContext) -> str:
        return ctx.hardware.image or ctx.settings.image(ctx.settings.onnxruntime_image)

    def pod_spec(self, ctx: PodContext) -> dict[str, Any]:
        return serve_pod_spec(ctx, self.image(ctx), ctx.settings.image(ctx.settings.onnxruntime_image))
