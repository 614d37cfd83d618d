"""What each class's artifact must be: the optimization job spec and its cache key (pure).

One artifact per unique (source digest, target, options): classes with the same target share
it, and the key names a file in the operator's artifact store, so nothing is computed twice —
not for another class, not after an operator restart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgewise.api.profile import HardwareClass
from edgewise.api.resources import EdgeModel
from edgewise.core.observed import NodeInfo

NFD_CPUID = "feature.node.kubernetes.io/cpu-cpuid."


@dataclass(frozen=True)
class JobSpec:
    key: str
    body: dict[str, Any]


def cpu_features(nodes: Sequence[NodeInfo]) -> list[str]:
    """Features every node of the class has (so the artifact runs on all of them): NFD cpuid flags, arch."""
    sets = []
    for n in nodes:
        feats = {k[len(NFD_CPUID):].lower() for k, v in n.labels.items() if k.startswith(NFD_CPUID) and v == "true"}
        if n.labels.get("kubernetes.io/arch") == "arm64":
            feats.add("arm64")
        sets.append(feats)
    return sorted(set.intersection(*sets)) if sets else []


def job_spec(model: EdgeModel, hc: HardwareClass, nodes: Sequence[NodeInfo]) -> JobSpec | None:
    """The optimization job of one class, or None when the class serves the source as it is."""
    opt = model.spec.optimization
    if opt.quantization == "none":
        return None
    allocatable = [n.memory_mib for n in nodes if n.memory_mib]
    body: dict[str, Any] = {
        "source": {"uri": model.spec.source.uri, "sha256": model.spec.source.digest()},
        "calibration": ({"uri": opt.calibration.uri, "sha256": opt.calibration.sha256 or ""}
                        if opt.calibration else None),
        "target": {"runtime": hc.runtime, "precision": hc.effective_precision(),
                   "cpuFeatures": cpu_features(nodes) if hc.runtime == "onnxruntime" else []},
        "options": {"quantization": opt.quantization, "fallback": opt.fallback,
                    "minCosine": opt.accuracy_gate.min_cosine,
                    "maxTop1DropPercent": opt.accuracy_gate.max_top1_drop_percent,
                    "keepFloat": list(opt.keep_float or []),
                    "maxMemoryMiB": hc.slo.max_memory_mib if hc.slo else None,
                    # The artifact must fit the smallest node of the class.
                    "nodeAllocatableMiB": min(allocatable) if allocatable else None,
                    "maxSamples": opt.calibration.max_samples if opt.calibration else 256},
    }
    key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]
    return JobSpec(key=key, body=body)
