"""spec.rollout.abort on the real control plane: a canary that crash-loops on enough nodes of the fleet
rolls every class back, and the status says which rule fired, with its numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from operator_support import (
    Operator,
    apply,
    condition,
    crash_loop,
    events_of,
    get,
    model_versions,
    rollout_classes,
    running_pods,
)
from rollout_support import ARM, ORIN, profile

from edgewise.devcluster import demo_models
from edgewise.devcluster.cluster import DevCluster
from wait_support import wait_for

MODEL = "detector"
ABORT = {"maxFailedPercent": 25, "minNodes": 3}


def _model(ns: str, version: str, src: Path) -> dict[str, Any]:
    # The pause without a duration holds every class at 50% until the rule (or a person) decides.
    rollout = {"steps": [{"percent": 50}, {"pause": {}}, {"percent": 100}], "analysis": {"provider": "none"},
               "abort": ABORT}
    return {"apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel", "metadata": {"name": MODEL, "namespace": ns},
            "spec": {"profileRef": "fleet", "version": version,
                     "source": {"uri": src.as_uri(), "sha256": demo_models.sha256(src)},
                     "optimization": {"quantization": "none"}, "rollout": rollout}}


def _em(cluster: DevCluster, ns: str) -> dict[str, Any]:
    return get(cluster, "edgemodel", MODEL, "-n", ns)


def _running(cluster: DevCluster, ns: str) -> list[dict[str, Any]]:
    return running_pods(cluster, ns, MODEL)


def _versions(cluster: DevCluster, ns: str) -> dict[str, str]:
    return model_versions(cluster, ns, MODEL)


def _reasons(cluster: DevCluster, ns: str) -> list[tuple[str, str]]:
    return events_of(cluster, ns, MODEL)


def test_a_canary_crash_looping_on_enough_nodes_rolls_every_class_back(
        cluster: DevCluster, namespace: str, fleet, operator: Operator, tmp_path: Path) -> None:
    nodes = fleet({ORIN: 2, ARM: 4})
    src = demo_models.good(tmp_path / "model.onnx")
    apply(cluster, [profile(namespace), _model(namespace, "1.0", src)])
    wait_for(lambda: _versions(cluster, namespace) == dict.fromkeys(nodes, "1.0"), 120, "1.0 on every node")

    apply(cluster, _model(namespace, "2.0", src))

    def at_the_pause() -> dict[str, Any] | None:
        classes = rollout_classes(_em(cluster, namespace))
        if set(classes) != {"jetson", "arm"} or not all(c.get("state") == "Paused" for c in classes.values()):
            return None
        canary = [p for p in _running(cluster, namespace) if p["metadata"]["labels"]["edgewise.io/version"] == "2.0"
                  and all(c.get("ready") for c in p["status"].get("containerStatuses") or [{}])]
        return classes if len(canary) == sum(c["canaryNodes"] for c in classes.values()) else None

    classes = wait_for(at_the_pause, 120, "both classes paused at 50% with their canary pods Ready")
    tried = sum(c["canaryNodes"] for c in classes.values())  # 1 jetson + 2 or more arm boards
    assert classes["jetson"]["canaryNodes"] >= 1 and tried >= ABORT["minNodes"]
    assert not _em(cluster, namespace)["status"]["rollout"].get("aborted")

    # The new version crash-loops on the Jetsons: 1 (or 2) of `tried` nodes is more than 25%.
    jetson_canary = [p for p in _running(cluster, namespace) if p["metadata"]["labels"]["edgewise.io/version"] == "2.0"
                     and p["metadata"]["labels"]["edgewise.io/class"] == "jetson"]
    for pod in jetson_canary:
        crash_loop(cluster, namespace, pod)
    failed = len(jetson_canary)
    percent = f"{100 * failed / tried:.1f}".removesuffix(".0")
    message = (f"abort: {failed} of {tried} nodes that tried 2.0 failed ({percent}% > maxFailedPercent 25, "
               f"minNodes 3): jetson {failed} crash-looped")

    def aborted() -> dict[str, Any] | None:
        obj = _em(cluster, namespace)
        done = obj["status"]["rollout"].get("aborted") and all(
            c.get("state") == "RolledBack" for c in rollout_classes(obj).values())
        return obj if done else None

    obj = wait_for(aborted, 90, "the abort rule rolling every class back")
    assert obj["status"]["rollout"]["aborted"]["message"] == message
    assert obj["status"]["rollout"]["aborted"]["version"] == "2.0"
    for name, c in rollout_classes(obj).items():
        assert message in c["message"] and not c.get("canaryRevision"), (name, c)
        assert c["tally"]["version"] == "2.0"
    assert rollout_classes(obj)["jetson"]["tally"]["crashLooped"] == failed
    degraded = condition(obj, "Degraded")
    assert (degraded["status"], degraded["reason"], degraded["message"]) == ("True", "AbortRuleFired", message)
    assert obj["status"]["rollout"]["history"][-1]["outcome"] == "RolledBack"
    assert obj["status"]["rollout"]["history"][-1]["reason"] == message
    wait_for(lambda: ("AbortRuleFired", message) in _reasons(cluster, namespace), 30, "the AbortRuleFired Event")
    rolled_back = [m for r, m in _reasons(cluster, namespace) if r == "RolledBack"]
    assert any(m.startswith("class arm:") and message in m for m in rolled_back), rolled_back
    # Every node is back on the stable version.
    wait_for(lambda: _versions(cluster, namespace) == dict.fromkeys(nodes, "1.0") and len(
        _running(cluster, namespace)) == len(nodes), 120, "1.0 on every node again")
