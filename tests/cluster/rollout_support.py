"""The rollout scenario the cluster tests share: a two-class fleet profile, the model, its versions."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from edgewise.devcluster import demo_models

MODEL = "detector"
ORIN, ARM = "jetson-orin", "arm64-cpu"


def daily_window(t: dt.datetime, duration: str, zone: str = "UTC") -> dict[str, str]:
    """An Allow window opening every day at `t`'s hour and minute (UTC unless `zone`): windows relative to now,
    so nothing waits in real time for one to open."""
    return {"kind": "Allow", "schedule": f"{t.minute} {t.hour} * * *", "duration": duration, "timeZone": zone}


def profile(ns: str, jetson_queue_delay_us: int = 0) -> dict[str, Any]:
    jetson: dict[str, Any] = {"name": "jetson", "nodeSelector": {"nvidia.com/gpu.family": "ampere"},
                              "runtime": "onnxruntime", "precision": "fp32", "threads": 1}
    if jetson_queue_delay_us:
        # A misconfigured batching delay: every request waits for a batch that never fills.
        jetson["batching"] = {"maxBatchSize": 8, "maxQueueDelayMicroseconds": jetson_queue_delay_us}
    return {"apiVersion": "edgewise.io/v1alpha1", "kind": "DeploymentProfile",
            "metadata": {"name": "fleet", "namespace": ns},
            "spec": {"classes": [jetson, {"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"},
                                          "runtime": "onnxruntime", "precision": "fp32", "threads": 1}]}}


def edgemodel(ns: str, version: str, model_dir: Path, golden: Path, **rollout: Any) -> dict[str, Any]:
    spec_rollout = {
        "steps": [{"percent": 50}, {"percent": 100}],
        "analysis": {"interval": "2s", "failureLimit": 1, "maxP95LatencyMs": 30, "maxLatencyIncreasePercent": 400,
                     "maxErrorRate": 0.05,
                     "goldenInputs": {"uri": golden.as_uri(), "sha256": demo_models.sha256(golden)}},
        "progressDeadline": "3m",
        **rollout,
    }
    src = model_dir / "model.onnx"
    return {"apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel", "metadata": {"name": MODEL, "namespace": ns},
            "spec": {"profileRef": "fleet", "version": version,
                     "source": {"uri": src.as_uri(), "sha256": demo_models.sha256(src)},
                     "optimization": {"quantization": "none"}, "rollout": spec_rollout}}
