"""Names, labels and annotations of the objects Edgewise manages.

Workloads are named `<model>-<class>[-<variant>]-<slot>`. The slot (`a` or
`b`) lets a second, canary DaemonSet per class exist next to the stable one
without renaming anything; the variant separates TensorRT workloads by GPU
compute capability (a plan only runs on the capability it was built for).
"""

from __future__ import annotations

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "edgewise"
PART_OF = "app.kubernetes.io/part-of"
COMPONENT = "app.kubernetes.io/component"
APP_NAME = "app.kubernetes.io/name"

MODEL_LABEL = "edgewise.io/model"
CLASS_LABEL = "edgewise.io/class"
SLOT_LABEL = "edgewise.io/slot"
VARIANT_LABEL = "edgewise.io/variant"
VERSION_LABEL = "edgewise.io/version"
REVISION_LABEL = "edgewise.io/revision"  # pod-template hash of a class's revision, on pods too
RUNTIME_LABEL = "edgewise.io/runtime"

SPEC_HASH_ANNOTATION = "edgewise.io/spec-hash"
ARTIFACT_ANNOTATION = "edgewise.io/artifact-sha256"
PRECISION_ANNOTATION = "edgewise.io/precision"

RUNTIME_COMPONENT = "runtime"
AGENT_COMPONENT = "node-agent"

SLOTS = ("a", "b")
DEFAULT_SLOT = SLOTS[0]

FIELD_MANAGER = "edgewise-operator"


def workload_name(model: str, class_name: str, slot: str, variant: str = "") -> str:
    parts = [model, class_name, *([variant] if variant else []), slot]
    return "-".join(parts)


def other_slot(slot: str) -> str:
    """The slot a canary takes next to the stable workload in `slot`."""
    return "b" if slot == "a" else "a"


def owned_selector(model: str) -> str:
    """Label selector of every runtime workload of one model."""
    return f"{MANAGED_BY}={MANAGER},{COMPONENT}={RUNTIME_COMPONENT},{MODEL_LABEL}={model}"
