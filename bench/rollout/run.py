"""Rollout benchmarks on the local control plane (see docs/benchmarks.md).

(a) rollback reaction: a real fleet serving with `edgewise serve` and real traffic gets a
    version 40 ms slower per request; measured from the moment the first canary pod serves
    it to every canary node serving the stable version again, next to the analysis budget
    (interval × (failureLimit + 1), plus one interval for the first reading of a new pod).
(b) scale: N simulated nodes (default 1000), analysis off, four steps (10, 25, 50, 100%):
    time from `kubectl apply` to every node running the new revision, next to a plain
    DaemonSet RollingUpdate of the same fleet in the same run; API writes per step and the
    operator's peak RSS.

    .venv/bin/python bench/rollout/run.py [--nodes 1000] [--skip-reaction] [--skip-scale]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s

from edgewise.devcluster import demo_models, processes
from edgewise.devcluster.cluster import DevCluster
from edgewise.devcluster.fleet import apply_fleet, delete_nodes, wait_ready
from edgewise.devcluster.podrunner import PodRunner
from edgewise.devcluster.traffic import Traffic, serving

REPO = Path(__file__).resolve().parents[2]
WORK = REPO / ".cache" / "bench-rollout"
CPU = {"runtime": "onnxruntime", "precision": "fp32", "threads": 1}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--skip-reaction", action="store_true")
    p.add_argument("--skip-scale", action="store_true")
    args = p.parse_args()
    cluster = DevCluster(WORK / "cluster")
    cluster.down()
    cluster.up()
    results: dict[str, Any] = {}
    try:
        cluster.kubectl("apply", "-f", str(REPO / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "crd/edgemodels.edgewise.io", "--timeout=60s")
        _apply(cluster, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "edgewise-system"}})
        if not args.skip_reaction:
            results["reaction"] = reaction(cluster)
        if not args.skip_scale:
            results["scale"] = scale(cluster, args.nodes)
    finally:
        cluster.down()
    print(json.dumps(results, indent=2))


class Operator:
    def __init__(self, cluster: DevCluster, name: str) -> None:
        self.log = WORK / f"operator-{name}.log"
        self.log.unlink(missing_ok=True)  # processes.start appends; writes() must read this run's log only
        self.proc = processes.start(
            f"operator-{name}",
            [sys.executable, "-m", "edgewise", "operator", "run", "--kubeconfig", str(cluster.kubeconfig),
             "--operator-namespace", "edgewise-system", "--resync-seconds", "3600"],
            WORK, env={"PYTHONUNBUFFERED": "1"})

    def writes(self) -> int:
        """Writes since start, from the operator's own accounting (bucket labels, workloads, status)."""
        found = re.findall(r"writes since start=(\d+)", self.log.read_text(errors="replace"))
        return int(found[-1]) if found else 0

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


def scale(cluster: DevCluster, nodes: int) -> dict[str, Any]:
    with cluster.api_client() as api:
        t = time.monotonic()
        names = apply_fleet(api, {"arm64-cpu": nodes}, prefix="s-")
        wait_ready(api, names, timeout=600)
        created = time.monotonic() - t
    ns = "bench-scale"
    _apply(cluster, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    src = demo_models.good(WORK / "models" / "good" / "model.onnx")
    out: dict[str, Any] = {"nodes": nodes, "fleet_created_s": round(created, 1)}

    # Baseline: a plain DaemonSet on the same nodes, RollingUpdate with maxUnavailable 10% (1 is the default).
    max_unavailable = "10%"
    ds = _plain_daemonset(ns, "plain", "1", max_unavailable)
    _apply(cluster, ds)
    _until(lambda: _ds_done(cluster, ns, "plain", nodes), 900)
    ds["spec"]["template"]["metadata"]["labels"]["version"] = "2"
    t = time.monotonic()
    _apply(cluster, ds)
    _until(lambda: _ds_done(cluster, ns, "plain", nodes), 1800)
    out[f"plain_daemonset_rollingupdate_{max_unavailable}_s"] = round(time.monotonic() - t, 1)
    cluster.kubectl("delete", "daemonset", "plain", "-n", ns, "--wait=true", "--timeout=600s")

    _apply(cluster, _profile(ns, {"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"}, **CPU}))
    op = Operator(cluster, "scale")
    try:
        steps = [{"percent": 10}, {"percent": 25}, {"percent": 50}, {"percent": 100}]
        _apply(cluster, _model(ns, "fleet", "1.0", src, steps=steps, analysis={"provider": "none"}))
        _until(lambda: _model_on(cluster, ns, "fleet", "1.0", nodes), 900)
        writes_before = op.writes()
        t = time.monotonic()
        _apply(cluster, _model(ns, "fleet", "2.0", src, steps=steps, analysis={"provider": "none"}))
        _until(lambda: _model_on(cluster, ns, "fleet", "2.0", nodes), 1800)
        elapsed = time.monotonic() - t
        time.sleep(3)
        writes = op.writes() - writes_before
        out.update({
            "edgewise_four_steps_s": round(elapsed, 1),
            "ratio_edgewise_to_plain": round(elapsed / out["plain_daemonset_rollingupdate_10%_s"], 2),
            "operator_writes_during_rollout": writes,
            "operator_writes_per_step": round(writes / len(steps), 1),
            "operator_peak_rss_mib": round(op.peak_rss_mib(), 1),
        })
    finally:
        op.stop()
    return out


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


def _plain_daemonset(ns: str, name: str, version: str, max_unavailable: str) -> dict[str, Any]:
    sc = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
          "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}}
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": max_unavailable}},
                     "template": {"metadata": {"labels": {"app": name, "version": version}},
                                  "spec": {"nodeSelector": {"kubernetes.io/arch": "arm64"},
                                           "containers": [{"name": "c", "image": "edgewise/onnxruntime:bench",
                                                           "securityContext": sc}]}}}}


def _ds_done(cluster: DevCluster, ns: str, name: str, nodes: int) -> bool:
    st = json.loads(cluster.kubectl("get", "daemonset", name, "-n", ns, "-o", "json").stdout)
    s = st.get("status", {})
    return (s.get("observedGeneration") == st["metadata"]["generation"] and s.get("updatedNumberScheduled") == nodes
            and s.get("numberReady") == nodes and s.get("desiredNumberScheduled") == nodes)


def _model_on(cluster: DevCluster, ns: str, name: str, version: str, nodes: int) -> bool:
    out = cluster.kubectl("get", "pods", "-n", ns, "-l", f"edgewise.io/model={name},edgewise.io/version={version}",
                          "--field-selector", "status.phase=Running", "-o", "name")
    cs = _classes(cluster, ns, name)
    return len(out.stdout.split()) >= nodes and all(c.get("state") == "Stable" for c in cs.values()) and bool(cs)


def _classes(cluster: DevCluster, ns: str, name: str) -> dict[str, dict[str, Any]]:
    out = cluster.kubectl("get", "edgemodel", name, "-n", ns, "-o", "json", check=False)
    if out.returncode:
        return {}
    obj = json.loads(out.stdout)
    return {c["name"]: c for c in ((obj.get("status") or {}).get("rollout") or {}).get("classes") or []}


def _running_versions(api: k8s.ApiClient, ns: str, runner: PodRunner) -> list[str | None]:
    """The `edgewise.io/version` label of each pod the runner runs without error."""
    uids = {uid for uid, p in runner.running().items() if not p.error}
    pods = k8s.CoreV1Api(api).list_namespaced_pod(ns).items
    return [(p.metadata.labels or {}).get("edgewise.io/version") for p in pods if p.metadata.uid in uids]


def _apply(cluster: DevCluster, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(obj))


def _until(check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout:.0f}s")
        time.sleep(0.5)


if __name__ == "__main__":
    main()
