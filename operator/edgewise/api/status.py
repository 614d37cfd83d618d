"""Status of an EdgeModel: observations only, written by the operator.

Follows the Kubernetes API conventions: `observedGeneration`, a coarse `phase`
for humans and printer columns, and conditions with type/status/reason/message/
lastTransitionTime for machines.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgewise.api.base import ApiModel
from edgewise.api.rollout_status import RolloutStatus

Phase = Literal["Pending", "Progressing", "Ready", "Degraded", "Failed"]
ConditionStatus = Literal["True", "False", "Unknown"]

# Condition types the operator sets.
READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
PROFILE_RESOLVED = "ProfileResolved"
NODES_MATCHED = "NodesMatched"
ARTIFACTS_READY = "ArtifactsReady"
ADDRESS_READY = "AddressReady"
WINDOWS_VALID = "WindowsValid"
SOURCE_TRUSTED = "SourceTrusted"


class Condition(ApiModel):
    """One aspect of the state, per the Kubernetes conventions (metav1.Condition)."""

    type: str = Field(max_length=316, description="Condition type, e.g. Ready or ProfileResolved.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                        description="Machine-readable CamelCase reason of the last transition.")
    message: str = Field(default="", max_length=32768, description="Human-readable details.")
    last_transition_time: str = Field(
        description="When the status last changed (RFC 3339).", json_schema_extra={"format": "date-time"})
    observed_generation: int | None = Field(default=None, ge=0,
                                            description="Spec generation the condition was computed from.")


class ClassStatus(ApiModel):
    """What runs on one hardware class."""

    name: str = Field(description="Class name.")
    runtime: str = Field(default="", description="Inference runtime of the class.")
    precision: str = Field(default="", description="Precision of the served artifact.")
    image: str = Field(default="", description="Runtime image.")
    matched_nodes: int = Field(default=0, description="Nodes that belong to the class and whose taints its "
                                                      "pods tolerate.")
    untolerated_nodes: int = Field(default=0, description="Nodes of the class skipped because of taints "
                                                          "its pods do not tolerate.")
    desired_pods: int = Field(default=0, description="Pods the class's workloads want to run.")
    ready_pods: int = Field(default=0, description="Pods serving and ready.")
    updated_pods: int = Field(default=0, description="Pods running the current spec.")
    version: str = Field(default="", description="Model version of the class's workload.")
    artifact_digest: str = Field(default="", description="sha256 of the artifact the class serves.")
    artifact_size_bytes: int | None = Field(default=None, description="Size of the optimized artifact in bytes.")
    artifact_state: str | None = Field(
        default=None, description="Ready, Optimizing, Rejected (accuracy gate or DoesNotFit) or Failed (bad "
                                  "source, digest mismatch, unreachable source).")
    optimization: str | None = Field(
        default=None, description="The optimization report in one line: technique, size and latency ratios "
                                  "against the original, minimum cosine similarity, peak memory; or why "
                                  "there is no artifact.")
    attestation: str | None = Field(
        default=None, description="Who vouches for the optimized artifact the class serves: 'key <id>' when its "
                                  "in-toto attestation (source digest, technique, gates' numbers, toolchain) is "
                                  "signed by that key, the operator's (nodes with trusted keys check it before "
                                  "serving), or 'none'. Unset when the class serves the source model itself. "
                                  "The source's own signer is in the SourceTrusted condition.")
    compute_capabilities: list[str] | None = Field(
        default=None, description="GPU compute capabilities of the class's nodes (TensorRT classes).")
    workloads: list[str] | None = Field(default=None, description="Names of the class's DaemonSets.")
    message: str = Field(default="", description="Anything a person should know about this class.")


class EdgeModelStatus(ApiModel):
    """Observed state of an EdgeModel."""

    observed_generation: int | None = Field(default=None, description="Generation of the spec this status "
                                                                      "describes.")
    phase: Phase | None = Field(
        default=None,
        description="Pending (nothing can run yet), Progressing, Ready, Degraded (serving, but something "
                    "needs attention) or Failed.")
    profile: str | None = Field(default=None, description="The profile in use: its name, or 'built-in'.")
    stable_version: str | None = Field(default=None, description="Version fully rolled out and ready.")
    canary_version: str | None = Field(default=None, description="Version being rolled out, if any.")
    ready: str | None = Field(default=None, description="Ready pods / matched nodes, e.g. 5/7.")
    ready_nodes: int | None = Field(default=None, description="Nodes with a ready pod of this model.")
    matched_nodes: int | None = Field(default=None, description="Nodes that belong to a class.")
    unmatched_nodes: int | None = Field(default=None, description="Nodes that match no class (left alone).")
    address: str | None = Field(
        default=None,
        description="Where applications reach the model on their own node: <service>.<namespace>.svc, ports "
                    "8000 (HTTP) and 8001 (gRPC), KServe-V2 protocol. The Service has internalTrafficPolicy "
                    "Local: a client reaches the pod of its own node, never another node's.")
    classes: list[ClassStatus] | None = Field(default=None, description="Per-class summary.")
    rollout: RolloutStatus | None = Field(default=None, description="Canary rollouts per class and the "
                                                                    "revision history.")
    conditions: list[Condition] | None = Field(
        default=None, description="Current conditions.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
