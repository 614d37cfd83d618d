"""Operator settings: images, versions and names that deployments choose.

Nothing here is hard-coded in the planner; defaults are overridable through
`EDGEWISE_*` environment variables (the Helm chart sets them from its values)
and command-line flags. Image names carry no registry host: `imageRegistry`
is prefixed when set, so an air-gapped site points everything at its mirror.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, get_origin

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from edgewise import __version__
from edgewise.shared.bandwidth import zone_info

ENV_PREFIX = "EDGEWISE_"
# NVIDIA's NGC release (YY.MM) that both Jetson images come from: a TensorRT plan only loads in
# the TensorRT version that built it, so the fetcher building it and Triton serving it must agree.
DEFAULT_NGC_RELEASE = "25.01"
_NGC_TAG = re.compile(r"^(\d{2}\.\d{2})-")
# Settings that no longer exist, and what replaced them: set, they are an error rather than ignored,
# so an upgraded operator never runs silently with images its deployer did not choose.
RETIRED_ENV = {
    "EDGEWISE_NODE_IMAGE": "the one node image was split: set EDGEWISE_AGENT_IMAGE (the node agent) and "
                           "EDGEWISE_ONNXRUNTIME_IMAGE (`edgewise serve` and its `edgewise fetch`)",
}


class SiteBudget(BaseModel):
    """A site's budget for artifact downloads from outside the site (its uplink)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, alias_generator=to_camel)

    bytes_per_second: int | None = Field(default=None, gt=0, description="Bytes per second the site's source "
                                                                          "downloads may use; null: no limit.")
    daily_bytes: int | None = Field(default=None, gt=0, description="Bytes per day (from midnight in "
                                                                     "timeZone); past it downloads wait for the "
                                                                     "next day. null: no cap.")


class Bandwidth(BaseModel):
    """Budgets of artifact downloads from outside each site (see docs/node-cache.md, "Bandwidth")."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, alias_generator=to_camel)

    site_label: str = Field(default="topology.kubernetes.io/zone", min_length=1,
                            description="Node label naming a node's site; nodes without it share the site \"\".")
    default: SiteBudget = Field(default_factory=SiteBudget, description="Budget of sites not listed in `sites`.")
    sites: dict[str, SiteBudget] = Field(default_factory=dict, description="Budget per site (label value).")
    time_zone: str = Field(default="UTC", description="IANA time zone whose midnight resets the daily caps.")
    one_copy_per_site: bool = Field(default=True, description="One node per site downloads from the source; "
                                                              "the site's other nodes fetch from its agent.")

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        zone_info(zone)  # ValueError: not a time zone
        return zone

    def budget(self, site: str) -> SiteBudget:
        return self.sites.get(site, self.default)

    @property
    def limited(self) -> bool:
        return any(b.bytes_per_second or b.daily_bytes for b in (self.default, *self.sites.values()))


class OperatorSettings(BaseModel):
    """How the operator renders workloads. Field `x_y` is read from env `EDGEWISE_X_Y`."""

    model_config = ConfigDict(frozen=True)

    namespace: str = Field(default="edgewise-system",
                           description="The operator's own namespace (optimization Jobs and their Secrets).")
    image_registry: str = Field(default="", description="Prefix for every image, e.g. a local mirror.")
    agent_image: str = Field(default=f"edgewise/agent:{__version__}",
                             description="Image of the node agent (`edgewise agent`).")
    onnxruntime_image: str = Field(default=f"edgewise/onnxruntime:{__version__}",
                                   description="Image of the ONNX Runtime server (`edgewise serve`) and "
                                               "of its init container (`edgewise fetch`).")
    openvino_image: str = Field(default=f"edgewise/node-openvino:{__version__}",
                                description="Image of the OpenVINO server (`edgewise serve --backend openvino`) "
                                            "and of its init container (`edgewise fetch`), for openvino classes.")
    ngc_release: str = Field(default=DEFAULT_NGC_RELEASE, pattern=r"^\d{2}\.\d{2}$",
                             description="NVIDIA NGC release (YY.MM) of Triton and of the TensorRT that "
                                         "builds plans: the default of both Jetson images' tags.")
    triton_image: str = Field(default="", description="NVIDIA Triton for Jetson (the -igpu build); empty: "
                                                      "nvidia/tritonserver:<ngc_release>-py3-igpu.")
    tensorrt_fetch_image: str = Field(default="",
                                      description="Image of the fetcher that builds TensorRT plans (Triton "
                                                  "-igpu base with `edgewise fetch` and trtexec); empty: "
                                                  "edgewise/triton-jetson:<ngc_release>-<version>.")
    image_pull_secrets: tuple[str, ...] = Field(
        default=(), description="Names of Secrets (type kubernetes.io/dockerconfigjson) every rendered pod "
                                "pulls its images with; each must exist in the pod's namespace.")
    image_pull_policy: str = Field(default="IfNotPresent")
    trace_env: dict[str, str] = Field(
        default_factory=dict,
        description="OpenTelemetry variables (OTEL_*) the node agents and the optimization Jobs get, so their "
                    "spans go where the operator's go. Unless EDGEWISE_TRACE_ENV is set: the operator's own "
                    "OTEL_* variables, except OTEL_SERVICE_NAME (each component names itself).")
    nvidia_runtime_class: str = Field(default="nvidia", description="RuntimeClass of GPU pods.")
    gpu_resource: str = Field(default="nvidia.com/gpu", description="Extended resource of a GPU.")
    run_as_user: int = Field(default=65532, description="UID of Edgewise's runtime containers.")
    triton_run_as_user: int = Field(default=1000,
                                    description="UID of Triton (the image's triton-server user).")
    agent_name: str = Field(default="edgewise-node-agent", description="Name of the node agent DaemonSet.")
    agent_namespace: str = Field(default="edgewise-node",
                                 description="Namespace of the node agent DaemonSet: it needs host network "
                                             "and a hostPath, so this namespace must allow the `privileged` "
                                             "Pod Security Standard.")
    agent_cache_dir: str = Field(default="/var/lib/edgewise/cache",
                                 description="Node cache on the host (the agent's hostPath).")
    agent_keep: int = Field(default=2, description="Digests per model the agent keeps for rollbacks.")
    agent_max_cache: str = Field(default="20Gi", description="Cache size above which the agent evicts.")
    agent_critical: bool = Field(default=False, description="Run the agent as system-node-critical "
                                                            "(needs the agent's namespace to allow it).")
    agent_node_selector: dict[str, str] = Field(default_factory=lambda: {"kubernetes.io/os": "linux"})
    agent_service_account: str = Field(default="edgewise-node-agent",
                                       description="ServiceAccount of the agent (it may create TokenReviews).")
    agent_allow_hosts: str = Field(default="", description="Comma-separated source hosts the agent may download "
                                                           "from although loopback, link-local, a metadata address "
                                                           "or (with agent_deny_private) private.")
    agent_deny_private: bool = Field(default=False, description="The agent also refuses private addresses.")
    agent_download_workers: int = Field(default=4, ge=1, description="Downloads an agent runs at once.")
    agent_download_deadline_seconds: int = Field(default=7200, ge=1,
                                                 description="Longest one agent download may take.")
    agent_token_file: str = Field(default="", description="The operator's token for the agents (a projected "
                                                          "ServiceAccount token, audience edgewise-agent); empty: "
                                                          "asked for through the TokenRequest API.")
    agent_bandwidth: Bandwidth = Field(
        default_factory=Bandwidth, description="Download budgets per site (JSON in EDGEWISE_AGENT_BANDWIDTH: "
                                               '{"default": {"bytesPerSecond": …, "dailyBytes": …}, "sites": '
                                               '{"<site>": {…}}, "siteLabel": …, "timeZone": …}).')
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
    probe_max_reconcile_seconds: float = Field(
        default=600.0, gt=0, description="The liveness probe fails when a worker has been on one reconcile longer "
                                         "than this (a call that never returns).")
    probe_max_queue_age_seconds: float = Field(
        default=600.0, gt=0, description="The liveness probe fails when a queued key has waited for a worker longer "
                                         "than this.")
    # -- trust (docs/security.md) --------------------------------------------------------------------
    attestation_key_file: str = Field(
        default="", description="PEM private key (ECDSA P-256 or Ed25519, e.g. a Secret in the operator's "
                                "namespace mounted as a file) that signs the attestation of every artifact the "
                                "optimizer derives; empty: artifacts are not attested.")
    trust_policy_config_map: str = Field(
        default="", description="namespace/name of the ConfigMap of accepted source-model signers (.pem/.pub "
                                "public keys, .crt CA chains) for models whose profile sets no trustPolicy.")
    require_signed_sources: bool = Field(
        default=False, description="For models whose profile sets no trustPolicy: deploy only signed source "
                                   "models (by a signer of trust_policy_config_map).")
    node_trusted_keys_config_map: str = Field(
        default="", description="Name of a ConfigMap of the operator's attestation public keys (*.pem, two during a "
                                "key rotation) that the nodes verify artifacts with: mounted into the node agent "
                                "(from the agent's namespace) and into every runtime pod's `edgewise fetch` (from "
                                "the model's namespace: it must exist there, as image pull Secrets must), both "
                                "then run with --trusted-keys. Empty (the default): nodes check digests only. Set, "
                                "each node agent also attests the TensorRT plans it keeps with a key of its own "
                                "(--plan-signing-key, generated under agent_cache_dir on its first start).")
    node_plan_check: bool = Field(
        default=False, description="triton-tensorrt pods load a TensorRT plan from their node agent only with the "
                                   "agent's attestation by its node's own key, naming the pod's ONNX artifact and "
                                   "TensorRT version; otherwise they build the plan themselves. Their fetch init "
                                   "container reads the node's public plan key through a read-only hostPath "
                                   "(agent_cache_dir/plan-key), so the models' namespaces must allow hostPath "
                                   "volumes (the `privileged` Pod Security Standard; `baseline` and `restricted` "
                                   "forbid them). The agents then attest plans, as with node_trusted_keys_config_map.")
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

    @model_validator(mode="before")
    @classmethod
    def _derive_jetson_images(cls, data: Any) -> Any:
        """Both Jetson images default to tags of one NGC release."""
        if not isinstance(data, dict):
            return data
        release = data.get("ngc_release") or DEFAULT_NGC_RELEASE
        derived = {"triton_image": f"nvidia/tritonserver:{release}-py3-igpu",
                   "tensorrt_fetch_image": f"edgewise/triton-jetson:{release}-{__version__}"}
        return {**data, **{k: v for k, v in derived.items() if not data.get(k)}}

    @model_validator(mode="after")
    def _jetson_images_agree(self) -> OperatorSettings:
        releases = {_ngc_release(self.triton_image), _ngc_release(self.tensorrt_fetch_image)}
        if None not in releases and len(releases) > 1:
            raise ValueError(
                f"triton_image ({self.triton_image}) and tensorrt_fetch_image ({self.tensorrt_fetch_image}) "
                f"come from different NGC releases ({', '.join(sorted(map(str, releases)))}): a TensorRT plan "
                "built by one does not load in the other. Set only the NGC release (EDGEWISE_NGC_RELEASE, "
                "the chart's images.ngcRelease), or give both images the same release tag.")
        return self

    @property
    def agent_allow_host_list(self) -> list[str]:
        return [h.strip() for h in self.agent_allow_hosts.split(",") if h.strip()]

    def image(self, name: str) -> str:
        """`name` with the registry prefix, unless it already names a host."""
        if not self.image_registry or _has_host(name):
            return name
        return f"{self.image_registry.rstrip('/')}/{name}"

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> OperatorSettings:
        """Defaults ← `EDGEWISE_*` environment ← explicit overrides (flags); None overrides are ignored."""
        retired = [f"{name}: {why}" for name, why in RETIRED_ENV.items() if name in env]
        if retired:
            raise ValueError("; ".join(retired))
        values: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is None:
                continue
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                values[name] = field.annotation.model_validate_json(raw)
            elif get_origin(field.annotation) is dict:
                values[name] = _parse_map(raw)
            elif get_origin(field.annotation) is tuple:
                values[name] = tuple(filter(None, (p.strip() for p in raw.split(","))))
            else:
                values[name] = raw
        if "trace_env" not in values:
            values["trace_env"] = {k: v for k, v in env.items() if k.startswith("OTEL_") and k != "OTEL_SERVICE_NAME"}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)


def _has_host(image: str) -> bool:
    first, sep, _ = image.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


def _ngc_release(image: str) -> str | None:
    """'nvidia/tritonserver:25.01-py3-igpu' → '25.01'; None when the tag does not start with a release."""
    _, sep, tag = image.rpartition(":")
    match = _NGC_TAG.match(tag) if sep and "/" not in tag else None
    return match.group(1) if match else None


def _parse_map(raw: str) -> dict[str, str]:
    """'a=b,c=d' → {'a': 'b', 'c': 'd'}."""
    out = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        key, _, value = part.partition("=")
        out[key.strip()] = value.strip()
    return out
