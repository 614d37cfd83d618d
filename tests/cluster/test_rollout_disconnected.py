"""A disconnected node in a canary cohort is deferred: the rollout neither fails nor hangs on it,
and the node catches up when it returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from operator_support import Operator, apply, get, model_versions, rollout_classes, set_node_ready

from edgewise.core.rollout.buckets import bucket_of
from edgewise.devcluster import demo_models
from edgewise.devcluster.cluster import DevCluster
from wait_support import wait_for


def _model(ns: str, version: str, src: Path) -> dict[str, Any]:
    return {"apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel", "metadata": {"name": "m", "namespace": ns},
            "spec": {"profileRef": "p", "version": version,
                     "source": {"uri": src.as_uri(), "sha256": demo_models.sha256(src)},
                     "optimization": {"quantization": "none"},
                     "rollout": {"steps": [{"percent": 50}, {"percent": 100}], "analysis": {"provider": "none"}}}}


def _classes(cluster: DevCluster, ns: str) -> dict[str, Any]:
    return rollout_classes(get(cluster, "edgemodel", "m", "-n", ns))


def _versions(cluster: DevCluster, ns: str) -> dict[str, str]:
    return model_versions(cluster, ns, "m")


def test_a_notready_canary_node_is_deferred_and_catches_up(cluster: DevCluster, namespace: str, fleet,
                                                           operator: Operator, tmp_path: Path) -> None:
    nodes = fleet({"arm64-cpu": 2})
    src = demo_models.good(tmp_path / "model.onnx")
    apply(cluster, [{"apiVersion": "edgewise.io/v1alpha1", "kind": "DeploymentProfile",
                     "metadata": {"name": "p", "namespace": namespace},
                     "spec": {"classes": [{"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"},
                                           "runtime": "onnxruntime", "precision": "fp32"}]}},
                    _model(namespace, "1.0", src)])
    wait_for(lambda: _versions(cluster, namespace) == dict.fromkeys(nodes, "1.0"), 90, "1.0 on both nodes")

    lost = min(nodes, key=bucket_of)  # the first step's canary node (50% of two nodes)
    kept = next(n for n in nodes if n != lost)
    set_node_ready(cluster, lost, False)
    wait_for(lambda: any(c["type"] == "Ready" and c["status"] == "False"
                         for c in get(cluster, "node", lost)["status"]["conditions"]), 30, f"{lost} NotReady")

    apply(cluster, _model(namespace, "2.0", src))
    # The rollout completes without the disconnected node: it neither passed nor failed.
    wait_for(lambda: _classes(cluster, namespace).get("arm", {}).get("stableVersion") == "2.0", 120,
             "2.0 promoted while one node is NotReady")
    assert _classes(cluster, namespace)["arm"]["state"] == "Stable"
    assert _versions(cluster, namespace).get(kept) == "2.0"
    assert _versions(cluster, namespace).get(lost) != "2.0"  # it could not have started it yet

    # The node returns and catches up on its own.
    set_node_ready(cluster, lost, True)
    wait_for(lambda: _versions(cluster, namespace) == dict.fromkeys(nodes, "2.0"), 120, f"{lost} catching up")
