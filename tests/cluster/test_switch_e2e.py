"""How a node changes version, on the real control plane: the node-local Service, make-before-break
per node (watched pod by pod), Replace for devices with room for one copy, and O(1) writes per step.

Pod and DaemonSet events come from watches, so the assertions compare the order in which the
apiserver recorded things, never durations.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from operator_support import Operator, apply, get, rollout_classes

from edgewise.devcluster import demo_models
from edgewise.devcluster.cluster import DevCluster
from edgewise.devcluster.podrunner import PodRunner
from edgewise.devcluster.traffic import Traffic, serving
from wait_support import wait_for

MODEL = "switcher"
SERVICE = f"edgewise-{MODEL}"
ARM, ORIN = "arm64-cpu", "jetson-orin"
GPU = "nvidia.com/gpu"


def profile(ns: str, gpu: bool = False) -> dict[str, Any]:
    cls = {"runtime": "onnxruntime", "precision": "fp32", "threads": 1}
    # Each pod takes the one GPU of its Orin: Auto must choose Replace.
    orin = {"name": "orin", "nodeSelector": {"nvidia.com/gpu.family": "ampere"}, **cls,
            "resources": {"limits": {GPU: 1}}}
    arm = {"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"}, **cls}
    return {"apiVersion": "edgewise.io/v1alpha1", "kind": "DeploymentProfile",
            "metadata": {"name": "p", "namespace": ns}, "spec": {"classes": [orin] if gpu else [arm]}}


def model(ns: str, version: str, src: Path, **rollout: Any) -> dict[str, Any]:
    return {"apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel", "metadata": {"name": MODEL, "namespace": ns},
            "spec": {"profileRef": "p", "version": version,
                     "source": {"uri": src.as_uri(), "sha256": demo_models.sha256(src)},
                     "optimization": {"quantization": "none"},
                     "rollout": {"steps": [{"percent": 34}, {"percent": 100}], "analysis": {"provider": "none"},
                                 "progressDeadline": "3m", **rollout}}}


def stable_on(cluster: DevCluster, ns: str, version: str, classes: set[str]) -> dict[str, Any] | None:
    obj = get(cluster, "edgemodel", MODEL, "-n", ns)
    cs = rollout_classes(obj)  # (a class of the profile with no node here stays out of it)
    done = all(cs.get(c, {}).get("state") == "Stable" and cs[c].get("stableVersion") == version for c in classes)
    return obj if done else None


class Recorder:
    """Every event of a watch, in the order the apiserver sent them.

    The objects that exist come first (as ADDED), listed before the constructor returns; the watch
    goes on from that list's resourceVersion, so a change the test makes next is never missed, however
    late the watching thread gets going on a busy machine.
    """

    def __init__(self, api: client.ApiClient, list_call: Any, ns: str, selector: str) -> None:
        listed = list_call(ns, label_selector=selector)
        self.events: list[tuple[str, dict[str, Any]]] = [
            ("ADDED", api.sanitize_for_serialization(item)) for item in listed.items]
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        args=(api, list_call, ns, selector, listed.metadata.resource_version))
        self._thread.start()

    def _run(self, api: client.ApiClient, list_call: Any, ns: str, selector: str, since: str) -> None:
        try:
            for ev in self._watch.stream(list_call, ns, label_selector=selector, resource_version=since,
                                         timeout_seconds=900):
                self.events.append((ev["type"], api.sanitize_for_serialization(ev["object"])))
        except Exception:  # noqa: BLE001 - stopped
            return

    def stop(self) -> list[tuple[str, dict[str, Any]]]:
        self._watch.stop()
        self._thread.join(timeout=5)
        return list(self.events)


def pod_recorder(api: client.ApiClient, ns: str) -> Recorder:
    return Recorder(api, client.CoreV1Api(api).list_namespaced_pod, ns, f"edgewise.io/model={MODEL}")


def ds_recorder(api: client.ApiClient, ns: str) -> Recorder:
    return Recorder(api, client.AppsV1Api(api).list_namespaced_daemon_set, ns, f"edgewise.io/model={MODEL}")


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def switch_order(events: list[tuple[str, dict[str, Any]]], cls: str, old: str, new: str
                 ) -> dict[str, tuple[int | None, int | None]]:
    """node → (index of the first event with the new slot's pod Ready there,
               index of the first event with the old slot's pod terminating or gone there)."""
    out: dict[str, list[int | None]] = {}
    for i, (kind, pod) in enumerate(events):
        labels, node = pod["metadata"].get("labels") or {}, (pod.get("spec") or {}).get("nodeName")
        if labels.get("edgewise.io/class") != cls or not node:
            continue
        seen = out.setdefault(node, [None, None])
        slot = labels.get("edgewise.io/slot")
        if slot == new and _ready(pod) and seen[0] is None and kind != "DELETED":
            seen[0] = i
        if slot == old and (kind == "DELETED" or pod["metadata"].get("deletionTimestamp")) and seen[1] is None:
            seen[1] = i
    return {n: (a, b) for n, (a, b) in out.items()}


def bucket_ops(ds: dict[str, Any]) -> list[str]:
    terms = ds["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return [e["operator"] for t in terms for e in t.get("matchExpressions") or [] if e["key"] == "edgewise.io/bucket"]


def daemonset_writes(op: Operator) -> int:
    """DaemonSet writes since the operator started (its `queue drained` line counts them by verb)."""
    lines = re.findall(r"queue drained: writes since start=\d+ (\{.*\})", op.log())
    totals = ast.literal_eval(lines[-1]) if lines else {}
    return sum(totals.get(verb, 0) for verb in ("created", "updated", "deleted"))


def test_the_node_local_service_and_make_before_break_on_every_moving_node(
        cluster: DevCluster, namespace: str, fleet, operator: Operator, tmp_path: Path) -> None:
    nodes = fleet({ARM: 12})  # kwok pods only: cheap, and enough nodes that per-node writes would show
    src = demo_models.good(tmp_path / "model.onnx")
    apply(cluster, [profile(namespace), model(namespace, "1.0", src)])
    obj = wait_for(lambda: stable_on(cluster, namespace, "1.0", {"arm"}), 120, "1.0 on every node")

    # (a) The model's address: a Service it owns, node-local, on Triton's ports, selecting its runtime pods.
    svc = get(cluster, "service", SERVICE, "-n", namespace)
    assert svc["spec"]["internalTrafficPolicy"] == "Local"
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("http", 8000), ("grpc", 8001)]
    owners = [(o["kind"], o["uid"]) for o in svc["metadata"]["ownerReferences"]]
    assert owners == [("EdgeModel", obj["metadata"]["uid"])]
    assert obj["status"]["address"] == f"{SERVICE}.{namespace}.svc"
    status_text = subprocess.run([sys.executable, "-m", "edgewise.cli.kubectl_plugin", "--kubeconfig",
                                  str(cluster.kubeconfig), "-n", namespace, "status", MODEL],
                                 capture_output=True, text=True, check=True).stdout
    assert f"{SERVICE}.{namespace}.svc:8000" in status_text and "switch MakeBeforeBreak" in status_text
    assert rollout_classes(obj)["arm"]["switch"] == "MakeBeforeBreak"

    operator.settle()
    writes_before = daemonset_writes(operator)
    with cluster.api_client() as api:
        pods, daemonsets = pod_recorder(api, namespace), ds_recorder(api, namespace)
        apply(cluster, model(namespace, "2.0", src))
        done = wait_for(lambda: stable_on(cluster, namespace, "2.0", {"arm"}), 180, "2.0 promoted")
        wait_for(lambda: {p["metadata"]["labels"]["edgewise.io/slot"] for p in get(
            cluster, "pods", "-n", namespace, "-l", f"edgewise.io/model={MODEL}")["items"]} == {"b"}, 60,
                 "only slot b's pods left")
        operator.settle()
        pod_events, ds_events = pods.stop(), daemonsets.stop()
    assert rollout_classes(done)["arm"]["stableSlot"] == "b"

    # (b) Every node moved, and on each the new slot's pod was Ready before the old one began to leave.
    order = switch_order(pod_events, "arm", old="a", new="b")
    assert sorted(order) == sorted(nodes)
    for node, (ready, leaving) in order.items():
        assert ready is not None and leaving is not None and ready < leaving, (node, ready, leaving)
    # The Service selects the pods of both slots.
    for slot in "ab":
        labels = next(p["metadata"]["labels"] for _, p in pod_events
                      if p["metadata"]["labels"]["edgewise.io/slot"] == slot)
        assert svc["spec"]["selector"].items() <= labels.items(), (slot, labels)
    # The stable DaemonSet shrank only after the canary's status counted its pods Ready (a single watch: ordered).
    first_shrink = next(i for i, (_, d) in enumerate(ds_events)
                        if d["metadata"]["name"] == f"{MODEL}-arm-a" and "Gt" in bucket_ops(d))
    canary_ready = next(i for i, (_, d) in enumerate(ds_events) if d["metadata"]["name"] == f"{MODEL}-arm-b"
                        and (d.get("status") or {}).get("numberReady", 0) > 0)
    assert canary_ready < first_shrink

    # (d) O(1) writes: a handful per step for the class (two steps and the promotion), not one per node.
    writes = daemonset_writes(operator) - writes_before
    print(f"\nDaemonSet writes for a 2-step rollout over {len(nodes)} nodes, make-before-break: {writes}")
    assert 0 < writes <= 8, writes


def test_replace_when_each_pod_needs_the_nodes_one_gpu(cluster: DevCluster, namespace: str, fleet,
                                                         operator: Operator, tmp_path: Path) -> None:
    fleet({ORIN: 3})
    src = demo_models.good(tmp_path / "model.onnx")
    apply(cluster, [profile(namespace, gpu=True), model(namespace, "1.0", src)])
    obj = wait_for(lambda: stable_on(cluster, namespace, "1.0", {"orin"}), 120, "1.0 on every Orin")
    orin = rollout_classes(obj)["orin"]
    assert orin["switch"] == "Replace" and GPU in orin["switchReason"], orin
    with cluster.api_client() as api:
        daemonsets = ds_recorder(api, namespace)
        apply(cluster, model(namespace, "2.0", src))
        wait_for(lambda: stable_on(cluster, namespace, "2.0", {"orin"}), 180, "2.0 promoted on the Orins")
        ds_events = daemonsets.stop()
    # (c) Replace, as before make-before-break existed: the stable DaemonSet shrinks in the same pass that
    # creates the canary, before the canary exists (there is no GPU for a second pod beside the first).
    first_shrink = next(i for i, (_, d) in enumerate(ds_events)
                        if d["metadata"]["name"] == f"{MODEL}-orin-a" and "Gt" in bucket_ops(d))
    canary_added = next(i for i, (kind, d) in enumerate(ds_events)
                        if kind == "ADDED" and d["metadata"]["name"] == f"{MODEL}-orin-b")
    assert first_shrink < canary_added


def test_traffic_through_each_nodes_address_while_versions_switch(
        cluster: DevCluster, namespace: str, fleet, operator: Operator, tmp_path: Path) -> None:
    """Real servers and one client per node: the figure the demo reports, per switch mode."""
    nodes = fleet({ARM: 3})
    src = demo_models.good(tmp_path / "model.onnx")
    apply(cluster, [profile(namespace), model(namespace, "1.0", src)])
    figures = {}
    with cluster.api_client() as api, PodRunner(api, tmp_path / "pods", namespace,
                                                f"edgewise.io/model={MODEL}").start() as runner:
        wait_for(lambda: stable_on(cluster, namespace, "1.0", {"arm"}) and serving(runner, len(nodes)), 180,
                 "1.0 serving on every node")
        for version, switch in (("2.0", "MakeBeforeBreak"), ("3.0", "Replace")):
            with Traffic(runner, MODEL) as traffic:
                wait_for(lambda: traffic.sent > 50, 60, "traffic flowing")  # noqa: B023 - used at once
                apply(cluster, model(namespace, version, src, switch=switch))
                wait_for(lambda: stable_on(cluster, namespace, version, {"arm"}), 180,  # noqa: B023
                         f"{version} promoted ({switch})")
                wait_for(lambda: serving(runner, len(nodes)), 120, f"{version} serving on every node")
            figures[switch] = (traffic.sent, traffic.errors)
            print(f"\n{switch}: " + ", ".join(f"{n}: sent {c.sent} errors {c.errors} (no endpoint {c.no_endpoint})"
                                             for n, c in sorted(traffic.per_node.items()))
                  + f"; why: {dict(traffic.reasons.most_common(4))}")
            assert sorted(traffic.per_node) == sorted(nodes)  # one client per node, each served
    print(f"\nrequests answered/refused while {len(nodes)} nodes switched: {figures}")
    assert all(sent > 100 for sent, _ in figures.values()), figures
