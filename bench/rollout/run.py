"""Rollout benchmarks on the local control plane (see docs/benchmarks.md).

(a) rollback reaction: a real fleet serving with `edgewise serve` and real traffic gets a
    version 40 ms slower per request; measured from the moment the first canary pod serves
    it to every canary node serving the stable version again, next to the analysis budget
    (interval × (failureLimit + 1), plus one interval for the first reading of a new pod).
(b) scale: N simulated nodes over five sites (`topology.kubernetes.io/zone`), analysis off,
    four steps (10, 25, 50, 100%): time from `kubectl apply` to every node running the new
    revision, next to three plain DaemonSet RollingUpdates of the same fleet in the same run
    (maxUnavailable 10%; the same with the node-local Service Edgewise gives a model; maxSurge
    10% with that Service, which like Edgewise's make-before-break never leaves a node without a
    Ready pod); the operator's API writes per step, reconciles, node LISTs and peak RSS; CPU
    seconds of every component during each rollout (where the time goes); and a minute at rest
    (the operator's reads, every client's node LISTs at the apiserver). Several sizes in one run
    (`--nodes 1000,5000`) add nodes to the same cluster. Above 200 nodes the cluster runs with
    `Simulation.fleet()` (devcluster/cluster.py): kwok's Leases renewed every hour, node
    heartbeats every 6 hours, routable pod IPs. The reaction bench runs on a cluster of its own
    with the tests' simulation, whose loopback pod IPs the pod runner serves on.

    .venv/bin/python bench/rollout/run.py [--nodes 1000[,5000]] [--skip-reaction] [--skip-scale]
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import re
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s

from edgewise.api.resources import DeploymentProfile, EdgeModel
from edgewise.api.settings import OperatorSettings
from edgewise.core.observed import NodeInfo
from edgewise.core.plan import ResolvedProfile, plan_model
from edgewise.core.rollout.buckets import BUCKET_LABEL
from edgewise.devcluster import demo_models, processes
from edgewise.devcluster.cluster import DevCluster, Simulation
from edgewise.devcluster.fleet import apply_fleet, delete_nodes, wait_ready
from edgewise.devcluster.podrunner import PodRunner
from edgewise.devcluster.traffic import Traffic, serving

REPO = Path(__file__).resolve().parents[2]
WORK = REPO / ".cache" / "bench-rollout"
CPU = {"runtime": "onnxruntime", "precision": "fp32", "threads": 1}
ARM = {"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"}, **CPU}  # the bench profile's one class


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", default="1000", help="fleet sizes, comma-separated (e.g. 1000,5000): each in turn, "
                   "adding nodes to the same cluster")
    p.add_argument("--skip-reaction", action="store_true")
    p.add_argument("--skip-scale", action="store_true")
    args = p.parse_args()
    sizes = sorted(int(n) for n in args.nodes.split(","))
    results: dict[str, Any] = {}
    if not args.skip_reaction:
        # Real pods serve on loopback pod IPs (the pod runner): the tests' simulation.
        results["reaction"] = _on_cluster(Simulation(), reaction)
    if not args.skip_scale:
        # Thousands of kwok nodes need the cheap simulation (devcluster/cluster.py Simulation.fleet); a small
        # fleet keeps the tests' defaults.
        results["scale"] = _on_cluster(Simulation.fleet() if max(sizes) > 200 else Simulation(),
                                       functools.partial(scale, sizes=sizes))
    print(json.dumps(results, indent=2))


def _on_cluster(simulation: Simulation, run: Any) -> Any:
    """`run(cluster)` on a fresh cluster of this simulation, with the CRDs and the operator's namespace."""
    cluster = DevCluster(WORK / "cluster", simulation=simulation)
    cluster.down()
    cluster.up()
    try:
        cluster.kubectl("apply", "-f", str(REPO / "crds"))
        cluster.wait_established("edgemodels.edgewise.io")
        _apply(cluster, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "edgewise-system"}})
        return run(cluster)
    finally:
        cluster.down()


class Operator:
    def __init__(self, cluster: DevCluster, name: str, metrics_port: int = 0) -> None:
        self.log = WORK / f"operator-{name}.log"
        self.log.unlink(missing_ok=True)  # processes.start appends; writes() must read this run's log only
        self.metrics_port = metrics_port
        metrics = ["--metrics", f"127.0.0.1:{metrics_port}"] if metrics_port else []
        self.proc = processes.start(
            f"operator-{name}",
            [sys.executable, "-m", "edgewise", "operator", "run", "--kubeconfig", str(cluster.kubeconfig),
             "--operator-namespace", "edgewise-system", "--resync-seconds", "3600", *metrics],
            WORK, env={"PYTHONUNBUFFERED": "1"})

    def writes(self) -> int:
        """Writes since start, from the operator's own accounting (bucket labels, workloads, status)."""
        found = re.findall(r"writes since start=(\d+)", self.log.read_text(errors="replace"))
        return int(found[-1]) if found else 0

    def settled(self, quiet: float = 3.0) -> bool:
        """Its work queue drained and its log quiet for `quiet` seconds (e.g. every new node's bucket labelled)."""
        text = self.log.read_text(errors="replace")
        return "queue drained" in text and time.time() - self.log.stat().st_mtime > quiet

    def metrics(self) -> dict[str, float]:
        """Its Prometheus metrics: series (name and labels) → value."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=30) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                out[series] = float(value)
        return out

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        processes.stop(self.proc, grace=30)


def reaction(cluster: DevCluster) -> dict[str, Any]:
    ns = "bench-reaction"
    models = WORK / "models"
    good = demo_models.good(models / "good" / "model.onnx")
    slow = demo_models.slow(models / "slow" / "model.onnx")
    interval, failure_limit = 3.0, 1
    with cluster.api_client() as api:
        fleet = apply_fleet(api, {"arm64-cpu": 4}, prefix="r-")
        wait_ready(api, fleet)
    _apply(cluster, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    _apply(cluster, _profile(ns, {"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"}, **CPU}))

    def model(version: str, path: Path) -> dict[str, Any]:
        return _model(ns, "clf", version, path, steps=[{"percent": 50}, {"percent": 100}],
                      analysis={"interval": f"{interval:.0f}s", "failureLimit": failure_limit,
                                "maxP95LatencyMs": 30, "maxLatencyIncreasePercent": 400})

    op = Operator(cluster, "reaction")
    try:
        _apply(cluster, model("1.0", good))
        with cluster.api_client() as api, \
                PodRunner(api, WORK / "pods", ns, "edgewise.io/model=clf").start() as runner, Traffic(runner, "clf"):
            _until(lambda: serving(runner, 4), 180)
            _apply(cluster, model("2.0", slow))
            # The regression starts when a canary pod serves the slow version.
            _until(lambda: "2.0" in _running_versions(api, ns, runner), 120)
            started = time.monotonic()
            _until(lambda: _classes(cluster, ns, "clf").get("arm", {}).get("state") == "RolledBack", 120)
            decided = time.monotonic()
            _until(lambda: serving(runner, 4) and all(v == "1.0" for v in _running_versions(api, ns, runner)), 120)
            done = time.monotonic()
    finally:
        op.stop()
        cluster.kubectl("delete", "namespace", ns, "--wait=false")
        with cluster.api_client() as api:
            delete_nodes(api, fleet)
    budget = interval * (failure_limit + 1) + interval
    return {"nodes": 4, "canary_nodes": 2, "interval_s": interval, "failure_limit": failure_limit,
            "analysis_budget_s": budget, "regression_to_rollback_decision_s": round(decided - started, 1),
            "regression_to_all_canary_nodes_serving_stable_s": round(done - started, 1)}


SITES = ["plant-a", "plant-b", "plant-c", "store-d", "substation-e"]
STEPS = [{"percent": 10}, {"percent": 25}, {"percent": 50}, {"percent": 100}]
REST_SECONDS = 60.0
FLEET_REST_SECONDS = 30.0


def scale(cluster: DevCluster, sizes: list[int]) -> list[dict[str, Any]]:
    """Each fleet size in turn on the same cluster (nodes are added, never removed): the plain DaemonSet's
    rolling update, then Edgewise's four steps, then a minute at rest."""
    op = Operator(cluster, "scale", metrics_port=processes.free_port())
    try:
        return [scale_once(cluster, op, n) for n in sizes]
    finally:
        op.stop()


def scale_once(cluster: DevCluster, op: Operator, nodes: int) -> dict[str, Any]:
    cpu, requests = CpuMeter(cluster, op), RequestMeter(cluster)
    with cluster.api_client() as api:
        t = time.monotonic()
        names = apply_fleet(api, {"arm64-cpu": nodes}, prefix="s-", zones=SITES, parallel=16)
        if not wait_ready(api, names, timeout=1800):
            raise SystemExit(f"bench: {nodes} nodes not Ready after 1800s")
        created = time.monotonic() - t
        t = time.monotonic()
        _until(lambda: _all_labelled(api), 1800, every=5.0)  # the operator labels each new node's bucket once
        _until(op.settled, 600)
        out: dict[str, Any] = {"nodes": nodes, "sites": len(SITES), "fleet_created_s": round(created, 1),
                               "buckets_labelled_s": round(time.monotonic() - t, 1)}
        # What the simulated fleet alone costs (no pod yet): the background every rollout below shares.
        cpu.start()
        requests.start()
        time.sleep(FLEET_REST_SECONDS)
        per_minute = 60.0 / FLEET_REST_SECONDS
        out["fleet_only_cpu_s_per_minute"] = {k: round(v * per_minute, 1) for k, v in cpu.stop().items()}
        out["fleet_only_apiserver_requests_per_minute"] = {k: round(v * per_minute)
                                                           for k, v in requests.stop().items()}
        ns, plain_ns = f"bench-scale-{nodes}", f"bench-plain-{nodes}"
        for name in (ns, plain_ns):
            _apply(cluster, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        apps = k8s.AppsV1Api(api)

        src = demo_models.good(WORK / "models" / "good" / "model.onnx")
        # Baseline: a plain DaemonSet on the same nodes, RollingUpdate with maxUnavailable 10% (1 is the default),
        # in a namespace of its own (the DaemonSet controller reads a namespace's pods at each sync).
        ds = _plain_daemonset(plain_ns, "plain", "1", "10%", src)
        _apply(cluster, ds)
        _until(lambda: _ds_done(apps, plain_ns, "plain", nodes), 1800)
        roll = functools.partial(_roll_plain, cluster, apps, ds, nodes, cpu, requests, out)
        plain = roll("2", "plain_daemonset_rollingupdate_10%", "plain")
        # The same rollout once more, now with the node-local Service Edgewise gives every model
        # (core/address.py): apps on a node need an address for the DaemonSet's pods too. Its endpoint
        # controllers then recompute the Service at each pod change, as they do for Edgewise's.
        _apply(cluster, _plain_service(plain_ns, "plain"))
        time.sleep(10)  # the endpoints of the pods already Ready, before the clock starts
        plain_service = roll("3", "plain_with_service", "plain_with_service")
        # And once more the way a DaemonSet switches without a node going dark, like Edgewise's default
        # make-before-break (core/rollout/switch.py): maxSurge 10%, maxUnavailable 0 — the new pod Ready
        # on a node before the old one is deleted.
        ds["spec"]["updateStrategy"]["rollingUpdate"] = {"maxSurge": "10%", "maxUnavailable": 0}
        plain_surge = roll("4", "plain_surge_with_service", "plain_surge_with_service")
        # Edgewise rolls out on a fleet without the baseline's pods, as the baseline did: kwok, the scheduler
        # and the controllers then hold the same number of pods in both.
        apps.delete_namespaced_daemon_set("plain", plain_ns, propagation_policy="Background")
        _until(lambda: not _pods(api, plain_ns, "app=plain"), 1800, every=5.0)

        _apply(cluster, _profile(ns, ARM))
        _apply(cluster, _model(ns, "fleet", "1.0", src, steps=STEPS, analysis={"provider": "none"}))
        _until(lambda: _model_on(apps, cluster, ns, "fleet", "1.0", nodes), 3600)
        _until(op.settled, 600)
        writes_before, before = op.writes(), op.metrics()
        cpu.start()
        requests.start()
        steps = StepClock()
        t = time.monotonic()
        _apply(cluster, _model(ns, "fleet", "2.0", src, steps=STEPS, analysis={"provider": "none"}))
        _until(lambda: steps.saw(_classes(cluster, ns, "fleet")) and _model_on(apps, cluster, ns, "fleet", "2.0",
                                                                                nodes), 3600)
        elapsed = time.monotonic() - t
        out["edgewise_cpu_s"] = cpu.stop()
        out["edgewise_apiserver_requests"] = requests.stop()
        time.sleep(3)
        writes, after = op.writes() - writes_before, op.metrics()
        out.update({
            "edgewise_four_steps_s": round(elapsed, 1),
            "ratio_edgewise_to_plain": round(elapsed / plain, 2),
            "ratio_edgewise_to_plain_with_service": round(elapsed / plain_service, 2),
            "ratio_edgewise_to_plain_surge_with_service": round(elapsed / plain_surge, 2),
            "edgewise_step_seconds": steps.durations(t),
            "operator_writes_during_rollout": writes,
            "operator_writes_per_step": round(writes / len(STEPS), 1),
            "operator_reconciles_during_rollout": int(_sum(after, "edgewise_reconcile_duration_seconds_count")
                                                      - _sum(before, "edgewise_reconcile_duration_seconds_count")),
            "operator_reconcile_seconds_during_rollout": round(
                _sum(after, "edgewise_reconcile_duration_seconds_sum")
                - _sum(before, "edgewise_reconcile_duration_seconds_sum"), 1),
            "operator_node_lists_during_rollout": int(_sum(after, "edgewise_kube_requests_total", verb="list",
                                                           resource="nodes")
                                                      - _sum(before, "edgewise_kube_requests_total", verb="list",
                                                             resource="nodes")),
        })
        cpu.start()
        requests.start()
        out["at_rest"] = at_rest(cluster, op, REST_SECONDS)
        out["at_rest"]["cpu_s_per_minute"] = {k: round(v * 60.0 / REST_SECONDS, 1) for k, v in cpu.stop().items()}
        out["at_rest"]["apiserver_requests_per_minute"] = {
            k: round(v * 60.0 / REST_SECONDS) for k, v in requests.stop().items()}
        out["operator_peak_rss_mib"] = round(op.peak_rss_mib(), 1)
        # The next size's fleet starts without this model's pods (its DaemonSets would grow onto the new nodes).
        cluster.kubectl("delete", "edgemodel", "fleet", "-n", ns, "--wait=false")
        _until(lambda: not _pods(api, ns, "edgewise.io/model=fleet"), 1800, every=5.0)
        return out


def _roll_plain(cluster: DevCluster, apps: k8s.AppsV1Api, ds: dict[str, Any], nodes: int, cpu: CpuMeter,
                requests: RequestMeter, out: dict[str, Any], version: str, time_key: str, prefix: str) -> float:
    """Roll the plain DaemonSet `ds` to `version`, metered; its seconds, recorded in `out` with its CPU and
    apiserver requests."""
    ds["spec"]["template"]["metadata"]["labels"]["version"] = version
    cpu.start()
    requests.start()
    t = time.monotonic()
    _apply(cluster, ds)
    _until(lambda: _ds_done(apps, ds["metadata"]["namespace"], ds["metadata"]["name"], nodes), 3600)
    elapsed = time.monotonic() - t
    out[f"{time_key}_s"] = round(elapsed, 1)
    out[f"{prefix}_cpu_s"] = cpu.stop()
    out[f"{prefix}_apiserver_requests"] = requests.stop()
    return elapsed


def at_rest(cluster: DevCluster, op: Operator, seconds: float) -> dict[str, Any]:
    """What the operator asks of the apiserver in a minute with nothing to do (the model rolled out)."""
    before, lists_before = op.metrics(), _apiserver_node_lists(cluster)
    time.sleep(seconds)
    after, lists_after = op.metrics(), _apiserver_node_lists(cluster)
    per_minute = 60.0 / seconds
    reads = {verb: round((_sum(after, "edgewise_kube_requests_total", verb=verb)
                          - _sum(before, "edgewise_kube_requests_total", verb=verb)) * per_minute, 1)
             for verb in ("get", "list", "watch")}
    return {"operator_reads_per_minute": reads,
            "operator_node_lists_per_minute": round((_sum(after, "edgewise_kube_requests_total", verb="list",
                                                         resource="nodes")
                                                    - _sum(before, "edgewise_kube_requests_total", verb="list",
                                                           resource="nodes")) * per_minute, 1),
            "operator_reconciles_per_minute": round((_sum(after, "edgewise_reconcile_duration_seconds_count")
                                                    - _sum(before, "edgewise_reconcile_duration_seconds_count"))
                                                   * per_minute, 1),
            "apiserver_node_lists_per_minute_all_clients": round((lists_after - lists_before) * per_minute, 1)}


class StepClock:
    """When the model's class moved from one step to the next, from its status (polled with the rollout)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str]] = []

    def saw(self, classes: dict[str, dict[str, Any]]) -> bool:
        c = classes.get("arm", {})
        mark = f"{c.get('state')}:{c.get('stepIndex', '')}"
        if not self.seen or self.seen[-1][1] != mark:
            self.seen.append((time.monotonic(), mark))
        return True

    def durations(self, start: float) -> list[tuple[str, float]]:
        return [(mark, round(t - start, 1)) for t, mark in self.seen]


class CpuMeter:
    """CPU seconds each process of the cluster, the operator and this script used between start() and stop()."""

    def __init__(self, cluster: DevCluster, op: Operator) -> None:
        state = cluster.state()
        self.pids = {p.name: p.pid for p in (state.processes if state else [])}
        self.pids["edgewise-operator"] = op.proc.pid
        self.started = time.time()
        self._at: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        out = {name: _cpu_seconds(pid) for name, pid in self.pids.items()}
        own = os.times()
        out["bench-script"] = own.user + own.system
        return out

    def start(self) -> None:
        self._at = self._now()

    def stop(self) -> dict[str, float]:
        now = self._now()
        return {name: round(now[name] - self._at.get(name, 0.0), 1) for name in now}


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- helpers ---------------------------------------------------------------------------------------


def _profile(ns: str, *classes: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "edgewise.io/v1alpha1", "kind": "DeploymentProfile",
            "metadata": {"name": "bench", "namespace": ns}, "spec": {"classes": list(classes)}}


def _model(ns: str, name: str, version: str, path: Path, steps: list[dict[str, Any]],
           analysis: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel", "metadata": {"name": name, "namespace": ns},
            "spec": {"profileRef": "bench", "version": version,
                     "source": {"uri": path.as_uri(), "sha256": demo_models.sha256(path)},
                     "optimization": {"quantization": "none"},
                     "rollout": {"steps": steps, "analysis": analysis, "progressDeadline": "30m"}}}


def _plain_daemonset(ns: str, name: str, version: str, max_unavailable: str, src: Path) -> dict[str, Any]:
    """A DaemonSet of the very pods Edgewise runs for the bench's model (init container, probes, volumes:
    the planner's own template), without Edgewise's placement: the baseline rolls the same pods."""
    model = EdgeModel.model_validate({**_model(ns, "fleet", version, src, steps=STEPS, analysis={"provider": "none"}),
                                      "metadata": {"name": "fleet", "namespace": ns, "uid": "plain"}})
    profile = DeploymentProfile.model_validate(_profile(ns, ARM))
    node = NodeInfo(name="any", labels={"kubernetes.io/arch": "arm64", "kubernetes.io/os": "linux"})
    plan = plan_model(model, ResolvedProfile(name="bench", spec=profile.spec), [node], [], OperatorSettings())
    template = copy.deepcopy(plan.classes[0].workloads[0].manifest["spec"]["template"])
    template["metadata"] = {"labels": {"app": name, "version": version}}
    template["spec"].pop("affinity", None)  # Edgewise's class and bucket placement
    template["spec"]["nodeSelector"] = ARM["nodeSelector"]
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": max_unavailable}},
                     "template": template}}


def _plain_service(ns: str, name: str) -> dict[str, Any]:
    """The node-local Service Edgewise makes for a model (core/address.py), for the plain DaemonSet's pods."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": name}, "internalTrafficPolicy": "Local",
                     "ports": [{"name": "http", "port": 8000, "targetPort": 8000},
                               {"name": "grpc", "port": 8001, "targetPort": 8001}]}}


def _all_labelled(api: k8s.ApiClient) -> bool:
    unlabelled = json.loads(k8s.CoreV1Api(api).list_node(label_selector=f"!{BUCKET_LABEL}", limit=1,
                                                          _preload_content=False).data)
    return not unlabelled["items"]


def _ds_done(apps: k8s.AppsV1Api, ns: str, name: str, nodes: int) -> bool:
    st = json.loads(apps.read_namespaced_daemon_set_status(name, ns, _preload_content=False).data)
    s = st.get("status", {})
    return (s.get("observedGeneration") == st["metadata"]["generation"] and s.get("updatedNumberScheduled") == nodes
            and s.get("numberReady") == nodes and s.get("desiredNumberScheduled") == nodes)


def _model_on(apps: k8s.AppsV1Api, cluster: DevCluster, ns: str, name: str, version: str, nodes: int) -> bool:
    """Every class Stable, and the model's DaemonSets of `version` have a ready pod on every node.

    Reads the DaemonSets' counters, not the pods: listing thousands of pods twice a second would
    load the apiserver the benchmark measures."""
    cs = _classes(cluster, ns, name)
    if not cs or any(c.get("state") != "Stable" for c in cs.values()):
        return False
    found = json.loads(apps.list_namespaced_daemon_set(ns, label_selector=f"edgewise.io/model={name}",
                                                       _preload_content=False).data)["items"]
    ready = sum(int((d.get("status") or {}).get("numberReady") or 0) for d in found
                if ((d["spec"]["template"]["metadata"].get("labels") or {}).get("edgewise.io/version") == version))
    return ready >= nodes


def _pods(api: k8s.ApiClient, ns: str, selector: str) -> list[Any]:
    return list(json.loads(k8s.CoreV1Api(api).list_namespaced_pod(
        ns, label_selector=selector, limit=1, _preload_content=False).data)["items"])


def _apiserver_node_lists(cluster: DevCluster) -> float:
    """LISTs of nodes the apiserver served since it started, from every client (its own metrics)."""
    requests = _apiserver_requests(cluster)
    return requests.get("LIST nodes", 0.0) if requests else float("nan")


def _apiserver_requests(cluster: DevCluster) -> dict[str, float]:
    """Requests the apiserver served since it started, from every client, by "VERB resource[/subresource]"."""
    code, body = cluster.get("/metrics")
    if code != 200:
        return {}
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line.startswith("apiserver_request_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            key = f"{labels.get('verb')} {labels.get('resource')}" + (
                f"/{labels['subresource']}" if labels.get("subresource") else "")
            out[key] = out.get(key, 0.0) + float(line.rpartition(" ")[2])
    return out


class RequestMeter:
    """The apiserver's requests between start() and stop(), the busiest first (where the time goes)."""

    def __init__(self, cluster: DevCluster) -> None:
        self.cluster = cluster
        self._at: dict[str, float] = {}

    def start(self) -> None:
        self._at = _apiserver_requests(self.cluster)

    def stop(self, top: int = 12) -> dict[str, int]:
        now = _apiserver_requests(self.cluster)
        diff = {k: int(v - self._at.get(k, 0.0)) for k, v in now.items() if v - self._at.get(k, 0.0) >= 1}
        return dict(sorted(diff.items(), key=lambda kv: -kv[1])[:top])


def _sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    """The sum of the series of `name` whose labels include `labels`."""
    total = 0.0
    for series, value in metrics.items():
        if series != name and not series.startswith(name + "{"):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', series))
        if all(got.get(k) == v for k, v in labels.items()):
            total += value
    return total


def _classes(cluster: DevCluster, ns: str, name: str) -> dict[str, dict[str, Any]]:
    try:
        obj = k8s.CustomObjectsApi(_client(str(cluster.kubeconfig))).get_namespaced_custom_object(
            "edgewise.io", "v1alpha1", ns, "edgemodels", name)
    except k8s.ApiException as err:
        if err.status == 404:
            return {}
        raise
    return {c["name"]: c for c in ((obj.get("status") or {}).get("rollout") or {}).get("classes") or []}


@functools.cache
def _client(kubeconfig: str) -> k8s.ApiClient:
    """One client for the bench's polling: a kubectl process twice a second costs the machine measured."""
    from kubernetes import config

    return config.new_client_from_config(config_file=kubeconfig)


def _running_versions(api: k8s.ApiClient, ns: str, runner: PodRunner) -> list[str | None]:
    """The `edgewise.io/version` label of each pod the runner runs without error."""
    uids = {uid for uid, p in runner.running().items() if not p.error}
    pods = k8s.CoreV1Api(api).list_namespaced_pod(ns).items
    return [(p.metadata.labels or {}).get("edgewise.io/version") for p in pods if p.metadata.uid in uids]


def _apply(cluster: DevCluster, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(obj))


def _until(check, timeout: float, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout:.0f}s")
        time.sleep(every)


if __name__ == "__main__":
    main()
