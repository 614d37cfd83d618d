"""DeploymentProfile: which hardware gets which runtime, precision and SLOs.

A profile is an ordered list of hardware classes. A node belongs to the first
class whose selector it matches; nodes matching none are left alone (and
counted in status).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from edgewise.api.base import (
    DNS_LABEL_PATTERN,
    ApiModel,
    LabelKey,
    LabelValue,
    Quantity,
    cel,
    label_key_rule,
    validations,
)
from edgewise.contract import Device, Precision, Runtime

SelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]

# Container image references as container runtimes parse them (distribution's reference grammar):
# [host[:port]/]path[:tag][@digest]. Kubernetes itself only refuses blanks, the node refuses the rest
# when it pulls, too late: the pod just sits in InvalidImageName.
_HOST_PART = r"([a-zA-Z0-9]|[a-zA-Z0-9][-a-zA-Z0-9]*[a-zA-Z0-9])"
_HOST = rf"{_HOST_PART}([.]{_HOST_PART})*(:[0-9]{{1,5}})?"
_PATH = r"[a-z0-9]+(([._]|__|[-]+)[a-z0-9]+)*"
IMAGE_PATTERN = (rf"^({_HOST}/)?{_PATH}(/{_PATH})*(:[A-Za-z0-9_][-A-Za-z0-9_.]{{0,127}})?"
                 r"(@[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,128})?$")

# Compute resources a runtime container may name: the standard ones, or extended resources of a
# device plugin (<domain>/<name>, outside kubernetes.io), like nvidia.com/gpu.
RESOURCE_NAME_PATTERN = (r"^(cpu|memory|ephemeral-storage|"
                         r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?([.][a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*"
                         r"/[A-Za-z0-9]([-A-Za-z0-9_.]{0,52}[A-Za-z0-9])?)$")
ResourceName = Annotated[str, StringConstraints(min_length=1, max_length=120, pattern=RESOURCE_NAME_PATTERN)]
_EXTENDED = "k.contains('/')"
_RESOURCE_KEYS_RULE = cel(
    f"self.all(k, k.matches('{RESOURCE_NAME_PATTERN}') && !k.contains('kubernetes.io/'))",
    "resource names are cpu, memory, ephemeral-storage or a device plugin's <domain>/<name> "
    "(e.g. nvidia.com/gpu), outside kubernetes.io")
_QTY = "quantity(string({m}[k]))"
_IS_QTY = "isQuantity(string({m}[k]))"  # a value that is none is refused by its own rule, not here

_LABEL_KEYS_RULE = cel(f"self.all(k, {label_key_rule('k')})",
                       "keys must be Kubernetes label keys: [prefix/]name, where name is at most 63 letters, "
                       "digits, '-', '_' or '.' starting and ending alphanumeric, and prefix a DNS subdomain, "
                       "e.g. kubernetes.io/arch or nvidia.com/gpu.family")
# A single key field has the pattern already; what a pattern cannot count is the prefix's 253.
_LABEL_KEY_RULE = cel("!self.contains('/') || self.indexOf('/') <= 253",
                      "the prefix of a label key (before '/') is a DNS subdomain of at most 253 characters")

# Class names end up in DaemonSet names (<model>-<class>-<slot>) and label values.
CLASS_NAME_MAX = 20


class NodeSelectorRequirement(ApiModel):
    """A label requirement on nodes, with the semantics of Kubernetes node affinity."""

    model_config = {"json_schema_extra": validations(
        cel("self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : true",
            "operators In and NotIn need at least one value", reason="FieldValueRequired"),
        cel("self.operator in ['Exists', 'DoesNotExist'] ? "
            "(!has(self.values) || size(self.values) == 0) : true",
            "operators Exists and DoesNotExist take no values", reason="FieldValueForbidden"),
        cel("self.operator in ['Gt', 'Lt'] ? (has(self.values) && size(self.values) == 1 && "
            "self.values[0].matches('^[0-9]{1,18}$')) : true",
            "operators Gt and Lt need exactly one integer value, not negative (label values cannot be), "
            "e.g. values: [\"7\"]"),
    )}

    key: LabelKey = Field(description="Node label key, e.g. nvidia.com/gpu.compute.major.",
                          json_schema_extra=validations(_LABEL_KEY_RULE))
    operator: SelectorOperator = Field(
        description="How the label is compared: In/NotIn a set of values, Exists/DoesNotExist, or "
                    "Gt/Lt an integer (the label value is parsed as an integer).")
    values: list[LabelValue] | None = Field(
        default=None, max_length=32,
        description="Values for In/NotIn (one or more) and Gt/Lt (exactly one integer); "
                    "empty for Exists/DoesNotExist.")


class Toleration(ApiModel):
    """A taint this class's pods tolerate (same meaning as a pod toleration)."""

    model_config = {"json_schema_extra": validations(
        cel("has(self.key) || self.operator == 'Exists'",
            "a toleration without a key must use operator Exists (it then tolerates every taint)"),
        cel("self.operator != 'Exists' || !has(self.value)",
            "a toleration with operator Exists takes no value"),
        cel("!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            "tolerationSeconds applies only to effect NoExecute", field_path=".tolerationSeconds"),
    )}

    key: LabelKey | None = Field(default=None, description="Taint key; empty with operator Exists "
                                                           "tolerates every taint.",
                                 json_schema_extra=validations(_LABEL_KEY_RULE))
    operator: Literal["Equal", "Exists"] = Field(
        default="Equal", description="Equal compares the value; Exists matches any value.")
    value: LabelValue | None = Field(default=None, description="Taint value, for operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; empty tolerates every effect.")
    toleration_seconds: int | None = Field(
        default=None, ge=0, le=31_536_000, description="For NoExecute: how long the pod stays bound after the taint "
                                        "appears; empty means forever.")


class Batching(ApiModel):
    """Dynamic batching: the server merges concurrent requests into one inference."""

    max_batch_size: int = Field(default=8, ge=1, le=1024,
                                description="Largest batch the server forms from concurrent requests.")
    max_queue_delay_microseconds: int = Field(
        default=100, ge=0, le=1_000_000,
        description="How long a request may wait for others to fill a batch, in microseconds.")


class Resources(ApiModel):
    """Compute resources of the runtime container, as in a pod spec.

    The rules are the ones the apiserver applies to a pod, checked here so that a profile that
    would render an invalid pod is refused when it is applied, not when its DaemonSet is.
    """

    model_config = {"json_schema_extra": validations(
        cel("!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits) || "
            f"!{_IS_QTY.format(m='self.requests')} || !{_IS_QTY.format(m='self.limits')} || "
            f"{_QTY.format(m='self.requests')}.compareTo({_QTY.format(m='self.limits')}) <= 0)",
            "each request must be at most its limit, e.g. requests: {memory: 256Mi}, limits: {memory: 512Mi}"),
    )}

    requests: dict[ResourceName, Quantity] | None = Field(
        default=None, max_length=8,
        description="Minimum resources reserved, e.g. {cpu: 500m, memory: 256Mi}.",
        json_schema_extra=validations(
            _RESOURCE_KEYS_RULE,
            cel(f"self.all(k, !{_EXTENDED})",
                "extended resources such as nvidia.com/gpu go in limits only (Kubernetes requests what "
                "the limit says)"),
        ))
    limits: dict[ResourceName, Quantity] | None = Field(
        default=None, max_length=8, description="Maximum resources, e.g. {memory: 512Mi}.",
        json_schema_extra=validations(
            _RESOURCE_KEYS_RULE,
            cel(f"self.all(k, !{_EXTENDED} || !{_IS_QTY.format(m='self')} || {_QTY.format(m='self')}.isInteger())",
                "extended resources such as nvidia.com/gpu are counted in whole units, e.g. \"1\""),
        ))


class Slo(ApiModel):
    """Service-level objectives of this class, used by analysis and fit checks."""

    p95_latency_ms: float | None = Field(
        default=None, gt=0, le=600_000,
        description="Target 95th-percentile inference latency in milliseconds; the default absolute "
                    "latency limit of rollout analysis.")
    max_memory_mib: int | None = Field(
        default=None, ge=1, le=1_048_576, alias="maxMemoryMiB",
        description="Largest resident memory the runtime may use on a node, in MiB; an artifact that "
                    "needs more does not fit this class.")
    max_power_watts: float | None = Field(
        default=None, gt=0, le=100_000,
        description="Largest power (W) any canary node of this class may draw during rollout analysis, "
                    "as its node agent reads it (Jetson INA3221 input rail, Intel RAPL); nodes without "
                    "a power monitor make the check inconclusive, never a pass.")


class HardwareClass(ApiModel):
    """One kind of device: how to recognise its nodes and how to serve models on them."""

    model_config = {"json_schema_extra": validations(
        cel("(has(self.nodeSelector) && size(self.nodeSelector) > 0) || "
            "(has(self.matchExpressions) && size(self.matchExpressions) > 0)",
            "a class needs a nodeSelector or matchExpressions; to select every node of an "
            "architecture use kubernetes.io/arch", reason="FieldValueRequired"),
        cel("!has(self.threads) || self.runtime != 'triton-tensorrt'",
            "threads applies only to the onnxruntime and openvino runtimes (Triton sizes its own thread pools)",
            field_path=".threads"),
        cel("!has(self.device) || self.runtime == 'openvino'",
            "device applies only to the openvino runtime; remove it, or set runtime: openvino",
            field_path=".device"),
    )}

    name: str = Field(
        min_length=1, max_length=CLASS_NAME_MAX, pattern=DNS_LABEL_PATTERN,
        description=f"Class name, unique in the profile: lowercase letters, digits and '-', at most "
                    f"{CLASS_NAME_MAX} characters (it is part of the workload names).")
    node_selector: dict[LabelKey, LabelValue] | None = Field(
        default=None, max_length=16,
        description="Node labels that must all be present with these values, e.g. "
                    "{kubernetes.io/arch: arm64, nvidia.com/gpu.family: ampere}.",
        json_schema_extra=validations(_LABEL_KEYS_RULE))
    match_expressions: list[NodeSelectorRequirement] | None = Field(
        default=None, max_length=16,
        description="Further label requirements (all must hold), with the operators of node affinity.")
    runtime: Runtime = Field(
        description="Inference runtime: triton-tensorrt (NVIDIA Triton with a TensorRT plan built on the "
                    "device, for Jetson), onnxruntime (Edgewise's ONNX Runtime server, for CPUs) or openvino "
                    "(Edgewise's server on OpenVINO Runtime, for Intel CPUs, GPUs and NPUs; int8 made by NNCF). "
                    "All speak Triton's KServe-V2 protocol on ports 8000/8001/8002.")
    device: Device | None = Field(
        default=None,
        description="OpenVINO device of an openvino class: CPU (the default), GPU (an Intel integrated or "
                    "discrete GPU: pods request gpu.intel.com/i915, or gpu.intel.com/xe when the class's "
                    "resources.limits names it, and run on nodes labelled "
                    "intel.feature.node.kubernetes.io/gpu=true), NPU (npu.intel.com/accel on nodes labelled "
                    "intel.feature.node.kubernetes.io/npu=true) or AUTO (OpenVINO picks among what the node "
                    "has; no device is requested). Only with runtime openvino.")
    image: str | None = Field(
        default=None, min_length=1, max_length=512, pattern=IMAGE_PATTERN,
        description="Runtime image override; by default the operator's configured image for the runtime.")
    precision: Precision | None = Field(
        default=None,
        description="Numeric precision of the served artifact. Default: fp16 for triton-tensorrt, int8 "
                    "for onnxruntime and openvino.")
    threads: int | None = Field(default=None, ge=1, le=256,
                                description="Inference threads of the onnxruntime or openvino server.")
    batching: Batching | None = Field(
        default=None, description="Dynamic batching; without it every request is its own inference.")
    resources: Resources | None = Field(default=None, description="Requests and limits of the runtime "
                                                                  "container.")
    slo: Slo | None = Field(default=None, description="Latency, memory and power objectives of this class.")
    tolerations: list[Toleration] | None = Field(
        default=None, max_length=16, description="Taints of this class's nodes that its pods tolerate.")

    def effective_precision(self) -> Precision:
        """The precision served: the explicit one, or the runtime's natural one."""
        if self.precision:
            return self.precision
        return "fp16" if self.runtime == "triton-tensorrt" else "int8"

    def effective_device(self) -> Device:
        """The OpenVINO device of an openvino class: CPU unless the class names one."""
        return self.device or "CPU"


class TrustPolicy(ApiModel):
    """Which signers of source models are accepted, and whether unsigned models may deploy (docs/security.md)."""

    config_map: str | None = Field(
        default=None, min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Name of a ConfigMap in the profile's namespace holding the accepted signers: each key ending "
                    "in .pem or .pub is a PEM public key (ECDSA P-256 or Ed25519), each key ending in .crt a PEM "
                    "CA certificate chain. Unset: the policy names no signer, so every signed model is from an "
                    "UnknownSigner.")
    require_signed: bool = Field(
        default=False,
        description="Deploy only models whose source.signature verifies against a signer the ConfigMap names. "
                    "false (the default): an unsigned model deploys, with a Warning Event and an Unsigned "
                    "condition; a bad signature or an unknown signer never deploys.")


class DeploymentProfileSpec(ApiModel):
    """Hardware classes in priority order: a node belongs to the first class it matches."""

    classes: list[HardwareClass] = Field(
        min_length=1, max_length=16,
        description="Hardware classes in priority order: a node belongs to the first class it matches; "
                    "nodes matching none run nothing and are counted as unmatched.",
        json_schema_extra=validations(
            cel("self.all(c, self.filter(d, d.name == c.name).size() == 1)",
                "class names must be unique within a profile"),
        ))
    site_label: LabelKey = Field(
        default="topology.kubernetes.io/zone",
        description="Node label whose value names a node's site (a factory, a store, a substation), for rollout "
                    "steps in sites (steps[].sites, sitesPercent, canarySites) and per-site analysis. A model's "
                    "spec.rollout.siteLabel wins over this. Nodes without the label belong to no site: together "
                    "they form one implicit site named \"\", rolled out after every named site.",
        json_schema_extra=validations(_LABEL_KEY_RULE))
    trust_policy: TrustPolicy | None = Field(
        default=None,
        description="Signers of source models accepted for the models using this profile; unset: the "
                    "operator's trust policy (its settings), which by default allows unsigned models.")


class ProfileClassStatus(ApiModel):
    """How many nodes a class of the profile matches now."""

    name: str = Field(description="Class name.")
    nodes: int = Field(default=0, description="Nodes that belong to this class.")


class DeploymentProfileStatus(ApiModel):
    """What the operator observed about this profile."""

    observed_generation: int | None = Field(default=None, description="Generation of the spec this "
                                                                      "status describes.")
    classes: list[ProfileClassStatus] | None = Field(default=None, max_length=16,
                                                     description="Nodes per class.")
    unmatched_nodes: int | None = Field(default=None, description="Nodes that match no class.")
    summary: str | None = Field(default=None, description="Nodes per class at a glance, e.g. "
                                                          "\"jetson-orin=2 arm-cpu=3\".")
