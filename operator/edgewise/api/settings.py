"""Operator settings: images, versions and names that deployments choose.

Nothing here is hard-coded in the planner; defaults are overridable through
`EDGEWISE_*` environment variables (the Helm chart sets them from its values)
and command-line flags. Image names carry no registry host: `imageRegistry`
is prefixed when set, so an air-gapped site points everything at its mirror.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_origin

from pydantic import BaseModel, ConfigDict, Field

from edgewise import __version__

ENV_PREFIX = "EDGEWISE_"


class OperatorSettings(BaseModel):
    """How the operator renders workloads. Field `x_y` is read from env `EDGEWISE_X_Y`."""

    model_config = ConfigDict(frozen=True)

    namespace: str = Field(default="edgewise-system",
                           description="The operator's own namespace (node agent).")
    image_registry: str = Field(default="", description="Prefix for every image, e.g. a local mirror.")
    node_image: str = Field(default=f"edgewise/node:{__version__}",
                            description="Image with `edgewise agent|fetch|serve` for CPU nodes.")
    onnxruntime_image: str = Field(default=f"edgewise/node:{__version__}",
                                   description="Image of the ONNX Runtime server (`edgewise serve`).")
    triton_image: str = Field(default="nvidia/tritonserver:24.08-py3-igpu",
                              description="NVIDIA Triton for Jetson (the -igpu build).")
    tensorrt_fetch_image: str = Field(default=f"edgewise/node-jetson:{__version__}",
                                      description="Image of the fetcher that builds TensorRT plans (Triton "
                                                  "-igpu base with `edgewise fetch` and trtexec).")
    image_pull_policy: str = Field(default="IfNotPresent")
    nvidia_runtime_class: str = Field(default="nvidia", description="RuntimeClass of GPU pods.")
    gpu_resource: str = Field(default="nvidia.com/gpu", description="Extended resource of a GPU.")
    run_as_user: int = Field(default=65532, description="UID of Edgewise's runtime containers.")
    triton_run_as_user: int = Field(default=1000,
                                    description="UID of Triton (the image's triton-server user).")
    agent_name: str = Field(default="edgewise-node-agent", description="Name of the node agent DaemonSet.")
    agent_cache_dir: str = Field(default="/var/lib/edgewise/cache",
                                 description="Node cache on the host (the agent's hostPath).")
    agent_keep: int = Field(default=2, description="Digests per model the agent keeps for rollbacks.")
    agent_max_cache: str = Field(default="20Gi", description="Cache size above which the agent evicts.")
    agent_critical: bool = Field(default=False, description="Run the agent as system-node-critical "
                                                            "(needs the operator namespace to allow it).")
    agent_node_selector: dict[str, str] = Field(default_factory=lambda: {"kubernetes.io/os": "linux"})
    resync_seconds: float = Field(default=300.0, description="Every model is re-reconciled this often.")
    artifact_dir: str = Field(default="", description="Volume of the built-in artifact store and its index; "
                                                      "empty: no optimization, classes serve the source model.")
    artifact_listen: str = Field(default="0.0.0.0:8090", description="Address the artifact store serves on.")
    artifact_url: str = Field(default="", description="Base URL nodes fetch artifacts from (e.g. the "
                                                      "operator Service, http://edgewise-artifacts.<ns>:8090).")
    optimize_memory_mib: int = Field(default=4096, description="Address-space limit of an optimization job.")
    optimize_timeout_seconds: int = Field(default=1800, description="Time limit of an optimization job.")
    optimize_retry_seconds: float = Field(
        default=60.0, description="First wait before an optimization that failed for a passing reason (source "
                                  "unreachable, time or memory limit, a lost Job) is tried again; doubles per "
                                  "failure up to an hour.")
    operator_image: str = Field(default=f"edgewise/operator:{__version__}",
                                description="Image of optimization Jobs (`edgewise optimize-job`).")
    workers: int = Field(default=2, description="Models reconciled concurrently.")
    # -- what a namespace user's spec may reach (see docs/architecture.md, "Roles") ----------------
    prometheus_addresses: tuple[str, ...] = Field(
        default=(), description="Base URLs of the Prometheus servers a model's rollout.analysis.prometheus."
                                "address may name (exact match, trailing / ignored); empty: the prometheus "
                                "provider is off, so the operator never fetches an address a user wrote.")
    allowed_images: tuple[str, ...] = Field(
        default=(), description="Image repositories a profile class's `image` may name besides the "
                                "operator's own images (which are always allowed): `registry/repo` for one "
                                "repository, `registry/prefix/*` for every repository under a prefix.")
    allow_keyless_tolerations: bool = Field(
        default=False, description="Let a profile class tolerate every taint (a toleration without a key, "
                                   "operator Exists), control-plane taints included.")
    local_source_dirs: tuple[str, ...] = Field(
        default=(), description="Directories whose files the operator itself may read for file:// sources, "
                                "calibration and golden inputs. Only for a single-machine dev cluster, where "
                                "the nodes' host is the operator's; empty (the default): the operator never "
                                "reads file:// URIs, they mean a file on the node agent's host.")

    def image(self, name: str) -> str:
        """`name` with the registry prefix, unless it already names a host."""
        if not self.image_registry or _has_host(name):
            return name
        return f"{self.image_registry.rstrip('/')}/{name}"

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> OperatorSettings:
        """Defaults ← `EDGEWISE_*` environment ← explicit overrides (flags); None overrides are ignored."""
        values: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is None:
                continue
            if get_origin(field.annotation) is dict:
                values[name] = _parse_map(raw)
            elif get_origin(field.annotation) is tuple:
                values[name] = tuple(filter(None, (p.strip() for p in raw.split(","))))
            else:
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)


def _has_host(image: str) -> bool:
    first, sep, _ = image.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


def _parse_map(raw: str) -> dict[str, str]:
    """'a=b,c=d' → {'a': 'b', 'c': 'd'}."""
    out = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        key, _, value = part.partition("=")
        out[key.strip()] = value.strip()
    return out
