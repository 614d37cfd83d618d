"""A profile asking for what the operator's settings do not allow is refused, end to end.

The real operator (its chart's RBAC and admission policies) on the real apiserver: a class
naming an image outside the allowed repositories, or tolerating every taint, or requesting more
than its nodes can allocate, renders no workload; the model's Degraded condition says why,
while the class that asks for nothing unusual is served.
"""

from __future__ import annotations

from typing import Any

import pytest
from operator_support import Operator, apply, condition, get, wait_status

from edgewise.devcluster.cluster import DevCluster

ARM = "arm64-cpu"


def _manifests(ns: str, refused_class: dict[str, Any]) -> list[dict[str, Any]]:
    profile = {"apiVersion": "edgewise.io/v1alpha1", "kind": "DeploymentProfile",
               "metadata": {"name": "fleet", "namespace": ns},
               "spec": {"classes": [
                   {"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"}, "runtime": "onnxruntime",
                    **refused_class},
                   {"name": "x86", "nodeSelector": {"kubernetes.io/arch": "amd64"}, "runtime": "onnxruntime"}]}}
    model = {"apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel", "metadata": {"name": "m", "namespace": ns},
             "spec": {"profileRef": "fleet", "version": "1.0",
                      "source": {"uri": "https://models.example.com/m.onnx", "sha256": "a" * 64},
                      "optimization": {"quantization": "none"}, "rollout": {"analysis": {"provider": "none"}}}}
    return [profile, model]


@pytest.mark.parametrize(("refused_class", "reason", "says"), [
    ({"image": "attacker.example/miner:latest"}, "ImageNotAllowed", "image attacker.example/miner:latest"),
    ({"tolerations": [{"operator": "Exists"}]}, "TolerationNotAllowed", "tolerates every taint"),
    ({"resources": {"requests": {"cpu": "512", "memory": "64Ti"}}}, "ResourcesDoNotFit", "cpu 512 is more than"),
])
def test_a_class_asking_for_more_than_the_settings_allow_is_refused(
        cluster: DevCluster, namespace: str, fleet: Any, operator: Operator,
        refused_class: dict[str, Any], reason: str, says: str) -> None:
    fleet({ARM: 1, "amd64-cpu": 1})
    apply(cluster, _manifests(namespace, refused_class))
    obj = wait_status(cluster, namespace, "m", lambda o: condition(o, "Degraded").get("reason") == reason,
                      f"Degraded {reason}")
    assert says in condition(obj, "Degraded")["message"]
    daemonsets = [d["metadata"]["name"] for d in get(cluster, "daemonsets", "-n", namespace)["items"]]
    assert daemonsets and all("-x86-" in d for d in daemonsets), daemonsets  # the other class is served
    events = get(cluster, "events", "-n", namespace, "--field-selector", "involvedObject.name=m")["items"]
    assert any(e["reason"] == reason for e in events)
