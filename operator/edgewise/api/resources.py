"""The two custom resources as whole objects, and their names in the API."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from edgewise.api.base import ApiModel, cel
from edgewise.api.model import EdgeModelSpec
from edgewise.api.profile import DeploymentProfileSpec, DeploymentProfileStatus
from edgewise.api.status import EdgeModelStatus

GROUP = "edgewise.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# EdgeModel names are part of workload names (<model>-<class>-<slot>), which must fit a 63-character label.
MODEL_NAME_MAX = 40


class ObjectMeta(ApiModel):
    """The parts of metadata the operator reads."""

    name: str = ""
    namespace: str = ""
    uid: str = ""
    generation: int = 0
    resource_version: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Resource(ApiModel):
    """Common shape of a custom resource and its CRD naming."""

    KIND: ClassVar[str]
    PLURAL: ClassVar[str]
    SINGULAR: ClassVar[str]
    SHORT_NAMES: ClassVar[list[str]]
    CATEGORIES: ClassVar[list[str]] = ["edgewise"]
    # CEL rules at the root of the schema (the only place that can see metadata.name).
    ROOT_RULES: ClassVar[list[dict[str, str]]] = []
    PRINTER_COLUMNS: ClassVar[list[dict[str, Any]]] = []

    api_version: str = API_VERSION
    kind: str = ""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @classmethod
    def crd_name(cls) -> str:
        return f"{cls.PLURAL}.{GROUP}"


class EdgeModel(Resource):
    """A model version shipped to every hardware class of a profile, with per-class canary rollouts."""

    KIND = "EdgeModel"
    PLURAL = "edgemodels"
    SINGULAR = "edgemodel"
    SHORT_NAMES = ["em"]
    ROOT_RULES = [
        cel(f"size(self.metadata.name) <= {MODEL_NAME_MAX}",
            f"EdgeModel names are at most {MODEL_NAME_MAX} characters, so that workload names "
            "<model>-<class>-<slot> fit Kubernetes limits"),
    ]
    PRINTER_COLUMNS = [
        {"name": "Version", "type": "string", "jsonPath": ".spec.version", "description": "Desired version."},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Coarse state."},
        {"name": "Stable", "type": "string", "jsonPath": ".status.stableVersion",
         "description": "Version fully rolled out."},
        {"name": "Canary", "type": "string", "jsonPath": ".status.canaryVersion",
         "description": "Version being rolled out."},
        {"name": "Ready", "type": "string", "jsonPath": ".status.ready",
         "description": "Ready pods / matched nodes."},
        {"name": "Profile", "type": "string", "jsonPath": ".status.profile", "priority": 1,
         "description": "Profile in use."},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]

    kind: str = KIND
    spec: EdgeModelSpec
    status: EdgeModelStatus = Field(default_factory=EdgeModelStatus)


class DeploymentProfile(Resource):
    """Which hardware gets which runtime, precision and SLOs: hardware classes in priority order."""

    KIND = "DeploymentProfile"
    PLURAL = "deploymentprofiles"
    SINGULAR = "deploymentprofile"
    SHORT_NAMES = ["edp"]
    PRINTER_COLUMNS = [
        {"name": "Nodes", "type": "string", "jsonPath": ".status.summary",
         "description": "Nodes per class, in priority order."},
        {"name": "Unmatched", "type": "integer", "jsonPath": ".status.unmatchedNodes",
         "description": "Nodes matching no class."},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]

    kind: str = KIND
    spec: DeploymentProfileSpec
    status: DeploymentProfileStatus = Field(default_factory=DeploymentProfileStatus)


RESOURCES: list[type[Resource]] = [EdgeModel, DeploymentProfile]
