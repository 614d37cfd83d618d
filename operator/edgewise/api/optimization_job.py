"""One optimization job as it crosses from the operator to the optimizer (a worker process or a Job's pod).

The operator builds it (core/optimization.py), writes it as JSON (job.json, or the Job's
environment) and hashes that JSON into the job's cache key; the optimizer reads it back
(optimize/job.py). One typed model on both sides: a field renamed on one side cannot be
silently missing on the other. Field names on the wire are camelCase like the CRD's, and
the wire form keeps its null fields, so the key of a job does not change when the model
learns a field with a default (add such fields with care: an existing key changes only if
the field is written).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import Field

from edgewise.api.base import ApiModel
from edgewise.api.model import AccuracyGate
from edgewise.contract import DEFAULT_MAX_SAMPLES, Device, Precision, Quantization, Runtime


class JobInput(ApiModel):
    """A file the job downloads, verified against its sha256 ("" when none was given)."""

    uri: str
    sha256: str = ""


class JobTarget(ApiModel):
    """What the artifact is for: the class's runtime, precision and the CPU features all its nodes have."""

    runtime: Runtime
    precision: Precision
    cpu_features: list[str] = Field(default_factory=list)
    device: Device | None = None  # the OpenVINO device of an openvino class; None for the other runtimes


class JobOptions(ApiModel):
    """spec.optimization as the job needs it, and the class's memory limits."""

    quantization: Quantization
    fallback: bool
    # The accuracy gate, flat on the wire (the cache key of existing artifacts depends on it); see `gate`.
    min_cosine: float
    max_top1_drop_percent: float
    keep_float: list[str] = Field(default_factory=list)
    max_memory_mib: int | None = Field(default=None, alias="maxMemoryMiB")  # the class's slo.maxMemoryMiB
    # The artifact must fit the smallest node of the class.
    node_allocatable_mib: int | None = Field(default=None, alias="nodeAllocatableMiB")
    max_samples: int = DEFAULT_MAX_SAMPLES

    @property
    def gate(self) -> AccuracyGate:
        return AccuracyGate(min_cosine=self.min_cosine, max_top1_drop_percent=self.max_top1_drop_percent)


class OptimizationJob(ApiModel):
    """What to make: the source (and calibration data), the target and the options."""

    source: JobInput
    calibration: JobInput | None = None
    target: JobTarget
    options: JobOptions

    def to_wire(self) -> dict[str, Any]:
        """The JSON form, nulls included (the cache key is computed from it) but for `target.device`,
        which only openvino jobs write, so the keys of the other runtimes' artifacts stay as they were."""
        wire = self.model_dump(by_alias=True, mode="json")
        target = wire.get("target")  # absent only from a job built without validation (model_construct)
        if isinstance(target, dict) and target.get("device") is None:
            target.pop("device", None)
        return wire

    def key(self) -> str:
        """The cache key: the same job makes the same artifact, whichever class or run asks."""
        return hashlib.sha256(json.dumps(self.to_wire(), sort_keys=True).encode()).hexdigest()[:24]
