"""Power gates end to end: a version that draws more power rolls back, with the numbers in the status.

Real control plane, real operator (as the chart's ServiceAccount), real `edgewise serve` per pod
under traffic, and one real `edgewise agent` per kwok node, listening on the node's InternalIP
(loopback addresses here) at the agent port, so the operator reaches it exactly as it reaches a
node's agent in a cluster, with its TokenRequest token checked by a TokenReview. Each agent reads
its own fake sysfs tree (a Jetson Orin Nano's INA3221 and thermal zones, `--sysfs-root`); the
test plays the hardware: nodes that run a "hot" version draw 12.4 W on VDD_IN, others 9.0 W.

What it does not cover: real sensors (the readers are unit-tested on the drivers' layouts in
tests/node/test_telemetry.py) and the agent DaemonSet's own pods (the agents run as processes).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from operator_support import Operator, apply, get, node_ips, rollout_classes
from rollout_support import MODEL, ORIN, edgemodel

from edgewise.devcluster import processes
from edgewise.devcluster.cluster import DevCluster
from edgewise.devcluster.podrunner import PodRunner
from edgewise.devcluster.traffic import Traffic, serving
from sysfs_support import jetson_orin_nano, set_ina3221_current
from wait_support import wait_for

COOL_MA, HOT_MA = 1800, 2480  # at 5 V on VDD_IN: 9.0 W and 12.4 W (+38%)
ANALYSIS = {"interval": "2s", "failureLimit": 1, "maxP95LatencyMs": 30, "maxLatencyIncreasePercent": 400,
            "maxErrorRate": 0.05, "maxPowerIncreasePercent": 20, "maxTemperatureC": 90}


def profile(ns: str) -> dict[str, Any]:
    return {"apiVersion": "edgewise.io/v1alpha1", "kind": "DeploymentProfile",
            "metadata": {"name": "fleet", "namespace": ns},
            "spec": {"classes": [{"name": "jetson", "nodeSelector": {"nvidia.com/gpu.family": "ampere"},
                                  "runtime": "onnxruntime", "precision": "fp32", "threads": 1,
                                  "slo": {"maxPowerWatts": 25}}]}}


class Hardware(threading.Thread):
    """Plays each node's power monitor: VDD_IN draws more on nodes whose running model pod is a hot version."""

    def __init__(self, api: k8s.ApiClient, ns: str, monitors: dict[str, Path]) -> None:
        super().__init__(daemon=True)
        self.core = k8s.CoreV1Api(api)
        self.ns = ns
        self.monitors = monitors
        self.hot: set[str] = set()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.3):
            try:
                pods = self.core.list_namespaced_pod(self.ns, label_selector=f"edgewise.io/model={MODEL}").items
            except (k8s.ApiException, OSError):
                continue
            running = {p.spec.node_name: p.metadata.labels.get("edgewise.io/version", "") for p in pods
                       if p.status.phase == "Running" and not p.metadata.deletion_timestamp}
            for node, hwmon in self.monitors.items():
                set_ina3221_current(hwmon, 1, HOT_MA if running.get(node) in self.hot else COOL_MA)


@dataclass(frozen=True)
class Fleet:
    cluster: DevCluster
    namespace: str
    nodes: list[str]
    hardware: Hardware
    models: dict[str, Path]

    def apply(self, version: str) -> None:
        apply(self.cluster, [profile(self.namespace), edgemodel(self.namespace, version, self.models["good"],
                                                                self.models["golden"], analysis=ANALYSIS)])

    def classes(self) -> dict[str, dict[str, Any]]:
        return rollout_classes(get(self.cluster, "edgemodel", MODEL, "-n", self.namespace))


@pytest.fixture(scope="module")
def fleet(cluster: DevCluster, module_namespace: str, module_fleet, operator: Operator, models: dict[str, Path],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    ns = module_namespace
    nodes = module_fleet({ORIN: 2})
    root = tmp_path_factory.mktemp("power")
    token = root / "agent-sa.token"  # the agents' own credentials for TokenReviews, as the chart gives them
    token.write_text(operator.agent_token())
    monitors: dict[str, Path] = {}
    agents = []
    try:
        for node, ip in node_ips(cluster, nodes).items():
            sysfs = root / node / "sys"
            monitors[node] = jetson_orin_nano(sysfs, vdd_in_ma=COOL_MA)
            agents.append(processes.start(f"agent-{node}", operator.agent_argv(
                node, ip, root / node / "cache", token, "--sysfs-root", str(sysfs), "--telemetry-interval", "1"),
                root))
        with cluster.api_client() as api, PodRunner(api, root / "pods", ns, f"edgewise.io/model={MODEL}"
                                                    ).start() as runner, Traffic(runner, MODEL):
            hardware = Hardware(api, ns, monitors)
            hardware.start()
            f = Fleet(cluster, ns, nodes, hardware, models)
            f.apply("1.0")  # revision 1 has nothing to compare with: straight to every node
            wait_for(lambda: f.classes().get("jetson", {}).get("stableVersion") == "1.0", 150, "1.0 everywhere")
            wait_for(lambda: serving(runner, 2), 120, "two pods serving 1.0")
            yield f
            hardware.stopping.set()
    finally:
        for agent in agents:
            processes.stop(agent)


def test_a_version_drawing_the_same_power_is_promoted_with_the_power_numbers_in_its_analysis(fleet: Fleet) -> None:
    fleet.apply("2.0")
    seen: list[str] = []

    def promoted() -> bool:
        jetson = fleet.classes().get("jetson", {})
        message = (jetson.get("lastAnalysis") or {}).get("message", "")
        if "power" in message:
            seen.append(message)
        return jetson.get("state") == "Stable" and jetson.get("stableVersion") == "2.0"

    wait_for(promoted, 200, "2.0 promoted")
    # The analysis compared the nodes' power (9.0 W each) and read their temperature, and passed.
    assert any("power +0% (canary 9.0 W vs stable 9.0 W" in m and "temperature 48.5 °C" in m for m in seen), seen


def test_a_version_that_draws_more_power_rolls_back_with_the_numbers_in_the_status(fleet: Fleet) -> None:
    stable = fleet.classes()["jetson"]["stableVersion"]
    fleet.hardware.hot.add("3.0-hot")
    fleet.apply("3.0-hot")
    wait_for(lambda: fleet.classes()["jetson"]["state"] == "RolledBack", 200, "3.0-hot rolled back")
    jetson = fleet.classes()["jetson"]
    expected = "power +38% (canary 12.4 W vs stable 9.0 W, mean of 1 and 1 node(s)) > maxPowerIncreasePercent 20"
    assert expected in jetson["message"], jetson
    assert f"rolled back to {stable}" in jetson["message"], jetson["message"]
    assert expected in jetson["lastAnalysis"]["message"] and jetson["lastAnalysis"]["outcome"] == "fail"
    status = get(fleet.cluster, "edgemodel", MODEL, "-n", fleet.namespace)["status"]
    assert status["rollout"]["history"][-1]["outcome"] == "RolledBack"
