"""Canary rollouts end to end: real control plane, real operator, real `edgewise serve` per pod, real traffic.

The pod runner runs every runtime pod of the model as real processes on its
loopback pod IP (fetch from the source by digest, then serve); traffic flows to
all of them; the operator's runtime analysis reads their Triton statistics.
Triton itself can't run here, so both classes — the Jetson nodes and the ARM
boards — serve with `edgewise serve` (runtime onnxruntime): what is under test
is the per-class rollout, not TensorRT.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from operator_support import Operator, apply, get, rollout_classes
from rollout_support import ARM, MODEL, ORIN, edgemodel, profile

from edgewise.core.rollout.buckets import bucket_of
from edgewise.devcluster.cluster import DevCluster
from edgewise.devcluster.podrunner import PodRunner
from edgewise.devcluster.traffic import Traffic, serving
from wait_support import wait_for


def em(cluster: DevCluster, ns: str) -> dict[str, Any]:
    return get(cluster, "edgemodel", MODEL, "-n", ns)


def wait_classes(cluster: DevCluster, ns: str, predicate, what: str, timeout: float = 150) -> dict[str, Any]:
    def check():
        obj = em(cluster, ns)
        return obj if predicate(rollout_classes(obj)) else None
    return wait_for(check, timeout, what, interval=0.5)  # type: ignore[return-value]


def pods(cluster: DevCluster, ns: str) -> dict[str, dict[str, Any]]:
    """node → its running model pod."""
    items = get(cluster, "pods", "-n", ns, "-l", f"edgewise.io/model={MODEL}")["items"]
    return {p["spec"]["nodeName"]: p for p in items
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")}


def events(cluster: DevCluster, ns: str) -> str:
    return cluster.kubectl("get", "events", "-n", ns, "--field-selector", f"involvedObject.name={MODEL}",
                           "-o", "custom-columns=REASON:.reason,MESSAGE:.message", "--no-headers").stdout


def plugin(cluster: DevCluster, ns: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "edgewise.cli.kubectl_plugin", "--kubeconfig",
                          str(cluster.kubeconfig), "-n", ns, *args], capture_output=True, text=True, check=True)
    return out.stdout


def watch_status(cluster: DevCluster, ns: str) -> subprocess.Popen[str]:
    """`kubectl edgewise status --watch`, as a CI job runs it right after applying a new version."""
    return subprocess.Popen([sys.executable, "-m", "edgewise.cli.kubectl_plugin", "--kubeconfig",
                             str(cluster.kubeconfig), "-n", ns, "status", MODEL, "--watch", "--timeout", "4m"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def verdict_of(watcher: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = watcher.communicate(timeout=300)  # the watch's own --timeout ends it before this
    return watcher.returncode, out + err


@dataclass(frozen=True)
class Fleet:
    """The module's model, deployed once (revision 1.0 on every node), served and under traffic."""

    cluster: DevCluster
    namespace: str
    nodes: list[str]
    runner: PodRunner
    traffic: Traffic
    operator: Operator
    models: dict[str, Path]

    def apply(self, version: str, model: str = "good", jetson_queue_delay_us: int = 0, **rollout: Any) -> None:
        apply(self.cluster, [profile(self.namespace, jetson_queue_delay_us),
                             edgemodel(self.namespace, version, self.models[model], self.models["golden"], **rollout)])

    def classes(self) -> dict[str, dict[str, Any]]:
        return rollout_classes(em(self.cluster, self.namespace))

    def history(self) -> list[tuple[int, str, str]]:
        return [(h["revision"], h["version"], h["outcome"])
                for h in em(self.cluster, self.namespace)["status"]["rollout"]["history"]]

    def versions_served(self) -> set[str]:
        return {p["metadata"]["labels"]["edgewise.io/version"] for p in pods(self.cluster, self.namespace).values()}


@pytest.fixture(scope="module")
def deployed(cluster: DevCluster, module_namespace: str, module_fleet, operator: Operator, models: dict[str, Path],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    namespace = module_namespace
    nodes = module_fleet({ORIN: 2, ARM: 2})
    apply(cluster, [profile(namespace), edgemodel(namespace, "1.0", models["good"], models["golden"])])
    with cluster.api_client() as api, PodRunner(api, tmp_path_factory.mktemp("pods"), namespace,
                                                f"edgewise.io/model={MODEL}").start() as runner, \
            Traffic(runner, MODEL) as traffic:
        # Revision 1 has nothing to protect: straight to every node.
        wait_classes(cluster, namespace, lambda c: set(c) == {"jetson", "arm"} and all(
            x["state"] == "Stable" and x.get("stableVersion") == "1.0" for x in c.values()), "1.0 everywhere")
        wait_for(lambda: serving(runner, 4), 120, "four pods serving 1.0")
        yield Fleet(cluster, namespace, nodes, runner, traffic, operator, models)


def test_first_revision_goes_to_every_node_and_each_node_is_labelled_with_its_bucket(deployed: Fleet) -> None:
    labels = {n["metadata"]["name"]: n["metadata"].get("labels", {}) for n in get(deployed.cluster, "nodes")["items"]}
    assert all(labels[n]["edgewise.io/bucket"] == str(bucket_of(n)) for n in deployed.nodes)  # labelled once
    assert deployed.history()[-1][1:] == ("1.0", "Succeeded")


def test_a_good_version_walks_every_step_of_every_class_and_ends_on_every_node(deployed: Fleet) -> None:
    """(a)"""
    cluster, namespace = deployed.cluster, deployed.namespace
    slots_before = {name: c["stableSlot"] for name, c in deployed.classes().items()}
    history_before = deployed.history()
    deployed.apply("2.0")
    watcher = watch_status(cluster, namespace)
    obj = wait_classes(cluster, namespace, lambda c: all(
        x["state"] == "Stable" and x.get("stableVersion") == "2.0" for x in c.values()), "2.0 promoted")
    code, out = verdict_of(watcher)
    assert code == 0 and "PROMOTED: 2.0 promoted" in out and "2.0: phase" in out, out
    assert {n: c["stableSlot"] for n, c in rollout_classes(obj).items()} == {
        n: "b" if s == "a" else "a" for n, s in slots_before.items()}  # the slot flipped
    wait_for(lambda: serving(deployed.runner, 4), 120, "four pods serving 2.0")
    assert sorted(pods(cluster, namespace)) == sorted(deployed.nodes)
    assert deployed.versions_served() == {"2.0"}
    history = obj["status"]["rollout"]["history"]
    assert [(h["revision"], h["version"], h["outcome"]) for h in history] == [
        *history_before, (history_before[-1][0] + 1, "2.0", "Succeeded")]
    seen = events(cluster, namespace)
    for reason in ("RolloutStarted", "StepChanged", "Promoted"):
        assert reason in seen, seen
    assert obj["status"]["phase"] == "Ready" and obj["status"]["stableVersion"] == "2.0"
    listed = plugin(cluster, namespace, "list").splitlines()
    revision = str(history[-1]["revision"])
    assert listed[0].split()[0] == "NAME" and listed[1].split()[:4] == [MODEL, "2.0", "Ready", revision], listed
    assert "jetson=Stable (2.0)" in listed[1] and "arm=Stable (2.0)" in listed[1], listed


def test_a_slower_version_is_rolled_back_by_itself_and_only_canary_nodes_restart(deployed: Fleet) -> None:
    """(b)"""
    cluster, namespace = deployed.cluster, deployed.namespace
    stable = _one_stable_version(deployed)
    before = {n: p["metadata"]["uid"] for n, p in pods(cluster, namespace).items()}
    deployed.apply("3.0-slow", model="slow")
    watcher = watch_status(cluster, namespace)
    obj = wait_classes(cluster, namespace, lambda c: all(
        x["state"] == "RolledBack" and "3.0-slow" in x["message"] for x in c.values()), "3.0-slow rolled back")
    code, out = verdict_of(watcher)
    assert code == 3 and "ROLLED_BACK: revision" in out and "latency" in out, out  # 3: rolled back
    for c in rollout_classes(obj).values():
        assert f"rolled back to {stable}" in c["message"] and "latency" in c["message"], c["message"]
        assert " ms" in c["message"]  # with the numbers
    canary_nodes = first_step_cohort(deployed.nodes)
    wait_for(lambda: serving(deployed.runner, 4), 120, f"four pods serving {stable} again")
    after = {n: p["metadata"]["uid"] for n, p in pods(cluster, namespace).items()}
    untouched = [n for n in deployed.nodes if n not in canary_nodes]
    assert untouched and all(after[n] == before[n] for n in untouched), (before, after, canary_nodes)
    assert deployed.versions_served() == {stable}
    assert obj["status"]["phase"] == "Degraded"
    assert obj["status"]["rollout"]["history"][-1]["outcome"] == "RolledBack"
    assert "RolledBack" in events(cluster, namespace)
    status_text = plugin(cluster, namespace, "status", MODEL)
    assert "RolledBack" in status_text and "latency" in status_text, status_text


def test_a_fast_healthy_but_wrong_version_fails_the_golden_input_check(deployed: Fleet) -> None:
    deployed.apply("3.1-wrong", model="wrong")
    obj = wait_classes(deployed.cluster, deployed.namespace, lambda c: all(
        x["state"] == "RolledBack" and "3.1-wrong" in x["message"] for x in c.values()), "3.1-wrong rolled back")
    assert all("golden" in c["message"] for c in rollout_classes(obj).values()), rollout_classes(obj)


def test_one_class_regressing_rolls_back_alone_while_the_other_is_promoted(deployed: Fleet) -> None:
    """(c) The Jetson class regresses while the ARM class succeeds: per-class outcomes."""
    jetson_stable = deployed.classes()["jetson"]["stableVersion"]
    deployed.apply("4.0", jetson_queue_delay_us=80_000)
    obj = wait_classes(deployed.cluster, deployed.namespace, lambda c: c["jetson"]["state"] == "RolledBack"
                       and "4.0" in c["jetson"]["message"] and c["arm"]["state"] == "Stable"
                       and c["arm"].get("stableVersion") == "4.0", "jetson rolled back, arm on 4.0")
    assert rollout_classes(obj)["jetson"]["stableVersion"] == jetson_stable


def test_with_all_or_nothing_one_class_regressing_rolls_every_class_back(deployed: Fleet) -> None:
    """(c) ... and with classPolicy AllOrNothing, the Jetson regression rolls the ARM class back too."""
    arm_stable = deployed.classes()["arm"]["stableVersion"]
    deployed.apply("5.0", jetson_queue_delay_us=80_000, classPolicy="AllOrNothing")
    obj = wait_classes(deployed.cluster, deployed.namespace, lambda c: all(
        x["state"] == "RolledBack" and "5.0" in x["message"] for x in c.values()), "5.0 rolled back everywhere")
    assert "AllOrNothing" in rollout_classes(obj)["arm"]["message"]
    assert rollout_classes(obj)["arm"]["stableVersion"] == arm_stable


def test_an_operator_killed_mid_rollout_resumes_where_it_was_without_duplicates(deployed: Fleet) -> None:
    """(d)"""
    cluster, namespace, operator = deployed.cluster, deployed.namespace, deployed.operator
    outcomes_before = {outcome for _, _, outcome in deployed.history()}
    deployed.apply("6.0", steps=[{"percent": 50}, {"pause": {}}, {"percent": 100}])
    paused = wait_classes(cluster, namespace, lambda c: all(
        x["state"] == "Paused" and x.get("canaryVersion") == "6.0" for x in c.values()), "6.0 paused at step 2")
    assert operator.proc is not None
    os.kill(operator.proc.pid, signal.SIGKILL)
    operator.proc.wait(10)
    operator.start()
    again = wait_classes(cluster, namespace, lambda c: all(x["state"] == "Paused" for x in c.values()),
                         "still paused after the restart")
    for name, c in rollout_classes(again).items():
        was = rollout_classes(paused)[name]
        assert (c["stepIndex"], c["percent"], c["canaryVersion"]) == (was["stepIndex"], was["percent"], "6.0")
    daemonsets = sorted(d["metadata"]["name"] for d in get(cluster, "daemonsets", "-n", namespace)["items"])
    assert daemonsets == sorted(f"{MODEL}-{cls}-{slot}" for cls in ("jetson", "arm") for slot in "ab")
    assert "promote requested" in plugin(cluster, namespace, "promote", MODEL)
    wait_classes(cluster, namespace, lambda c: all(
        x["state"] == "Stable" and x.get("stableVersion") == "6.0" for x in c.values()), "6.0 promoted")
    history = plugin(cluster, namespace, "history", MODEL)
    assert "6.0" in history and "Succeeded" in history
    assert all(outcome in history for outcome in outcomes_before - {"Progressing"}), history
    assert deployed.traffic.sent > 500


def _one_stable_version(deployed: Fleet) -> str:
    (stable,) = {c["stableVersion"] for c in deployed.classes().values()}
    return stable


def first_step_cohort(nodes: list[str]) -> set[str]:
    """The canary nodes of step 1 (50%): per class of two nodes, the one with the lower bucket."""
    out = set()
    for device in (ORIN, ARM):
        members = [n for n in nodes if device in n]
        out.add(min(members, key=bucket_of))
    return out
