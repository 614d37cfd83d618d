"""API types: the EdgeModel and DeploymentProfile resources, typed.

These models are the one source of truth of the API: the CRDs in `crds/` are
generated from them (`edgewise crds`). Everything above this layer (planning,
Kubernetes I/O, handlers) works with these types, not with raw dicts.
"""

from edgewise.api.builtin import BUILTIN_PROFILE, BUILTIN_PROFILE_NAME
from edgewise.api.model import EdgeModelSpec
from edgewise.api.profile import DeploymentProfileSpec, HardwareClass, NodeSelectorRequirement
from edgewise.api.resources import API_VERSION, GROUP, VERSION, DeploymentProfile, EdgeModel
from edgewise.api.settings import OperatorSettings
from edgewise.api.status import ClassStatus, Condition, EdgeModelStatus

__all__ = [
    "API_VERSION", "BUILTIN_PROFILE", "BUILTIN_PROFILE_NAME", "GROUP", "VERSION", "ClassStatus", "Condition",
    "DeploymentProfile", "DeploymentProfileSpec", "EdgeModel", "EdgeModelSpec", "EdgeModelStatus",
    "HardwareClass", "NodeSelectorRequirement", "OperatorSettings",
]
