"""Maintenance windows on a real control plane: a new version whose activation window is closed now starts
no canary and the class says until when; an unknown zone is a condition; inside a window it rolls out.

Windows are chosen relative to the current time (UTC), so nothing waits in real time for one to open.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from operator_support import Operator, apply, condition, get, model_versions, rollout_classes
from rollout_support import daily_window

from edgewise.devcluster import demo_models
from edgewise.devcluster.cluster import DevCluster
from wait_support import wait_for


def _model(ns: str, version: str, src: Path, windows: dict[str, Any] | None = None) -> dict[str, Any]:
    rollout: dict[str, Any] = {"steps": [{"percent": 50}, {"percent": 100}], "analysis": {"provider": "none"}}
    if windows is not None:
        rollout["windows"] = windows
    return {"apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel", "metadata": {"name": "w", "namespace": ns},
            "spec": {"profileRef": "p", "version": version,
                     "source": {"uri": src.as_uri(), "sha256": demo_models.sha256(src)},
                     "optimization": {"quantization": "none"}, "rollout": rollout}}


def _arm(cluster: DevCluster, ns: str) -> dict[str, Any]:
    return rollout_classes(get(cluster, "edgemodel", "w", "-n", ns)).get("arm", {})


def _versions(cluster: DevCluster, ns: str) -> dict[str, str]:
    return model_versions(cluster, ns, "w")


def test_a_closed_activation_window_holds_the_canary_and_an_open_one_lets_it_go(
        cluster: DevCluster, namespace: str, fleet, operator: Operator, tmp_path: Path) -> None:
    nodes = fleet({"arm64-cpu": 2})
    src = demo_models.good(tmp_path / "model.onnx")
    apply(cluster, [{"apiVersion": "edgewise.io/v1alpha1", "kind": "DeploymentProfile",
                     "metadata": {"name": "p", "namespace": namespace},
                     "spec": {"classes": [{"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"},
                                           "runtime": "onnxruntime", "precision": "fp32"}]}},
                    _model(namespace, "1.0", src)])
    wait_for(lambda: _versions(cluster, namespace) == dict.fromkeys(nodes, "1.0"), 90, "1.0 on both nodes")

    # 2.0 with a window that opens in three hours (and lasts one): the step is due now, and waits.
    opens = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=3)).replace(second=0, microsecond=0)
    apply(cluster, _model(namespace, "2.0", src, {"activation": [daily_window(opens, "1h")]}))
    arm = wait_for(lambda: (c := _arm(cluster, namespace)).get("waitingForWindow") and c, 60,
                   "the class waiting for its activation window")
    when = opens.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert arm["windowOpensAt"] == when
    assert f"step 1/2 of 2.0 is waiting for the activation window, which opens at {when}" in arm["message"]
    assert arm.get("percent", 0) == 0 and arm.get("canaryNodes", 0) == 0 and arm["canaryVersion"] == "2.0"
    events = cluster.kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=w",
                             "-o", "custom-columns=REASON:.reason", "--no-headers").stdout.split()
    assert "WaitingForWindow" in events and "StepChanged" not in events
    assert _versions(cluster, namespace) == dict.fromkeys(nodes, "1.0")  # no node started the canary

    # A zone the tz database does not know: the apiserver accepts the shape, the operator says what is wrong.
    apply(cluster, _model(namespace, "2.0", src, {"activation": [daily_window(opens, "1h", "Europe/Atlantis")]}))
    model = wait_for(lambda: (m := get(cluster, "edgemodel", "w", "-n", namespace))
                     and condition(m, "WindowsValid").get("status") == "False" and m, 60, "WindowsValid False")
    assert "unknown time zone 'Europe/Atlantis'" in condition(model, "WindowsValid")["message"]
    assert "cannot be evaluated" in _arm(cluster, namespace)["message"]
    assert _versions(cluster, namespace) == dict.fromkeys(nodes, "1.0")

    # The same version with a window that opened half an hour ago: the rollout goes through.
    opened = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)
    apply(cluster, _model(namespace, "2.0", src, {"activation": [daily_window(opened, "2h")]}))
    wait_for(lambda: _arm(cluster, namespace).get("stableVersion") == "2.0", 120, "2.0 promoted inside the window")
    assert not _arm(cluster, namespace).get("waitingForWindow")
    assert condition(get(cluster, "edgemodel", "w", "-n", namespace), "WindowsValid")["status"] == "True"
    wait_for(lambda: _versions(cluster, namespace) == dict.fromkeys(nodes, "2.0"), 90, "2.0 on both nodes")
