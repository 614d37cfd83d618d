"""`make demo`: the local fleet, Edgewise's per-class workloads, and a canary that rolls itself back.

1. A real control plane with a simulated fleet (2 Jetson Orin, 1 Xavier, 3 ARM boards, 1 x86 PC).
2. The operator, and `examples/` applied: one workload per hardware class, status per class.
3. A model served for real: every pod's `edgewise serve` runs on its pod IP with traffic flowing;
   version 2 rolls out step by step; version 3 is 40 ms slower per request and is rolled back
   by the canary analysis, on its own, while the stable nodes keep serving.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from edgewise.devcluster import demo_models, processes
from edgewise.devcluster.cluster import DevCluster
from edgewise.devcluster.fleet import DEFAULT_FLEET, apply_fleet, parse_fleet, wait_ready
from edgewise.devcluster.podrunner import PodRunner
from edgewise.devcluster.report import describe
from edgewise.devcluster.tools import repo_root
from edgewise.devcluster.traffic import Traffic, serving

DEMO_NS = "demo"
MODEL = "classifier"
OPERATOR_NS = "edgewise-system"
AGENT_NS = "edgewise-node"  # host network and a hostPath: a namespace allowing `privileged`


def run() -> int:
    root = repo_root()
    cluster = DevCluster()
    _say("starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)")
    cluster.up()
    with cluster.api_client() as api:
        wait_ready(api, apply_fleet(api, parse_fleet(DEFAULT_FLEET)))
        print(describe(cluster, api))

    _say("installing the CRDs and starting the operator")
    cluster.kubectl("apply", "-f", str(root / "crds"))
    cluster.wait_established("edgemodels.edgewise.io", "deploymentprofiles.edgewise.io")
    _apply(cluster, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NS}})
    _apply(cluster, {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": AGENT_NS, "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}})
    _apply(cluster, {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "nvidia"},
                     "handler": "nvidia"})
    log = root / ".cache" / "devcluster" / "logs" / "operator.log"
    operator = subprocess.Popen(
        [sys.executable, "-m", "edgewise", "operator", "run", "--kubeconfig", str(cluster.kubeconfig),
         "--operator-namespace", OPERATOR_NS, "--agent-namespace", AGENT_NS], stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        # The demo's file:// models (and golden inputs) are on "the nodes' host", which is this machine.
        env={**os.environ, "PYTHONUNBUFFERED": "1", "EDGEWISE_LOCAL_SOURCE_DIRS": str(root / ".cache" / "demo")})
    try:
        _examples(cluster, root)
        _rollout_story(cluster, root)
    finally:
        processes.terminate(operator)
    print(f"\nThe cluster keeps running: export KUBECONFIG={cluster.kubeconfig}; `make cluster-down` stops it.")
    print(f"Operator log: {log}")
    return 0


def _examples(cluster: DevCluster, root: Path) -> None:
    examples = root / "examples"
    _say("kubectl apply -f examples/  (a DeploymentProfile with three classes, and two EdgeModels)")
    # The text embedder second: each Orin has one GPU and the story below wants the defect
    # detector on it (applied together, whichever model's pods are scheduled first win it).
    first = [examples / f for f in ("00-namespace.yaml", "factory-floor-profile.yaml", "defect-detector.yaml")]
    print(cluster.kubectl("apply", *(a for f in first for a in ("-f", str(f)))).stdout.rstrip())
    _wait(lambda: _phase(cluster, "vision", "defect-detector") == "Ready", 60, "defect-detector Ready")
    print(cluster.kubectl("apply", "-f", str(examples)).stdout.rstrip())
    print(cluster.kubectl("get", "edgemodels", "-A").stdout.rstrip())
    print(cluster.kubectl("get", "daemonsets", "-n", "vision", "-o", "wide").stdout.rstrip())
    print("  (text-embedder's Orin pods wait for a GPU: defect-detector holds the one GPU of each Orin;"
          " see docs/api.md)")
    print(_plugin(cluster, "vision", "status", "defect-detector"))


def _rollout_story(cluster: DevCluster, root: Path) -> None:
    models = root / ".cache" / "demo"
    good = demo_models.good(models / "good" / "model.onnx")
    slow = demo_models.slow(models / "slow" / "model.onnx")
    golden = demo_models.golden(models / "golden.npz")
    _apply(cluster, {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": DEMO_NS, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    _apply(cluster, _profile())
    _say(f"a model served for real: version 1.0 of {MODEL} on every Jetson and ARM board")
    _apply(cluster, _model("1.0", good, golden))
    with cluster.api_client() as api, PodRunner(api, models / "pods", DEMO_NS,
                                                f"edgewise.io/model={MODEL}").start() as runner, \
            Traffic(runner, MODEL) as traffic:
        _wait(lambda: _all_stable(cluster, "1.0") and serving(runner, 6), 180, "6 pods serving 1.0")
        print(f"  6 pods serve 1.0 on their pod IPs; {traffic.sent} inference requests so far, each node's "
              "client calling its own node's pod")

        _say("version 2.0 (a good one): canary on a third of each class, then two thirds, then every node")
        _apply(cluster, _model("2.0", good, golden))
        _watch(cluster, lambda: _all_stable(cluster, "2.0"), 240)

        _say("version 3.0: 40 ms slower per request — the canary analysis should catch it")
        _apply(cluster, _model("3.0", slow, golden))
        _watch(cluster, lambda: _all_state(cluster, "RolledBack"), 240)
        _wait(lambda: serving(runner, 6), 120, "6 pods serving 2.0 again")

        _say("summary")
        print(_plugin(cluster, DEMO_NS, "status", MODEL))
        print()
        print(_plugin(cluster, DEMO_NS, "history", MODEL))
        print(f"\n{traffic.sent} inference requests answered during the demo, one client per node calling the "
              f"model on its own node like a client of edgewise-{MODEL}.{DEMO_NS}.svc ({traffic.errors} refused "
              f"while nodes were switching; switch mode per class in the status above)")
        if traffic.reasons:
            print(f"  why: {dict(traffic.reasons.most_common(3))}")


def _profile() -> dict[str, Any]:
    cls = {"runtime": "onnxruntime", "precision": "fp32", "threads": 1}
    return {"apiVersion": "edgewise.io/v1alpha1", "kind": "DeploymentProfile",
            "metadata": {"name": "demo-fleet", "namespace": DEMO_NS},
            "spec": {"classes": [
                # Triton can't run on this machine: the Jetsons serve with Edgewise's ONNX Runtime server here.
                {"name": "jetson", "nodeSelector": {"nvidia.com/gpu.present": "true"}, **cls},
                {"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"}, **cls}]}}


def _model(version: str, path: Path, golden: Path) -> dict[str, Any]:
    return {"apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel",
            "metadata": {"name": MODEL, "namespace": DEMO_NS},
            "spec": {"profileRef": "demo-fleet", "version": version,
                     "source": {"uri": path.as_uri(), "sha256": demo_models.sha256(path)},
                     "optimization": {"quantization": "none"},
                     "rollout": {"steps": [{"percent": 33}, {"pause": {"duration": "5s"}}, {"percent": 66},
                                           {"percent": 100}],
                                 "analysis": {"interval": "3s", "failureLimit": 1, "maxP95LatencyMs": 30,
                                              "maxLatencyIncreasePercent": 400,
                                              "goldenInputs": {"uri": golden.as_uri(),
                                                               "sha256": demo_models.sha256(golden)}}}}}


# -- views -----------------------------------------------------------------------------------------


def _classes(cluster: DevCluster) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "edgemodel", MODEL, "-n", DEMO_NS, "-o", "yaml", check=False)
    if out.returncode != 0:
        return []
    obj = yaml.safe_load(out.stdout)
    return ((obj.get("status") or {}).get("rollout") or {}).get("classes") or []


def _all_stable(cluster: DevCluster, version: str) -> bool:
    cs = _classes(cluster)
    return len(cs) == 2 and all(c.get("state") == "Stable" and c.get("stableVersion") == version for c in cs)


def _all_state(cluster: DevCluster, state: str) -> bool:
    cs = _classes(cluster)
    return len(cs) == 2 and all(c.get("state") == state for c in cs)


def _watch(cluster: DevCluster, done: Callable[[], bool], timeout: float) -> None:
    """A live per-class view: a progress bar per class, printed when something changes."""
    last = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = []
        for c in _classes(cluster):
            pct = int(c.get("percent") or 0) if c.get("canaryVersion") else 0
            bar = "#" * (pct // 5) + "." * (20 - pct // 5)
            lines.append(f"  {c['name']:<7} [{bar}] {pct:>3}% canary {c.get('canaryVersion') or '-':<5} "
                         f"stable {c.get('stableVersion') or '-':<5} {c.get('state', ''):<11} "
                         f"{(c.get('message') or '')[:110]}")
        view = "\n".join(lines)
        if view != last:
            print(f"[{time.strftime('%H:%M:%S')}]\n{view}", flush=True)
            last = view
        if done():
            return
        time.sleep(1)
    raise SystemExit(f"demo: timed out after {timeout:.0f}s; see .cache/devcluster/logs/operator.log")


def _phase(cluster: DevCluster, ns: str, name: str) -> str:
    return cluster.kubectl("get", "edgemodel", name, "-n", ns, "-o", "jsonpath={.status.phase}",
                           check=False).stdout


def _plugin(cluster: DevCluster, ns: str, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "edgewise.cli.kubectl_plugin", "--kubeconfig",
                           str(cluster.kubeconfig), "-n", ns, *args], capture_output=True, text=True,
                          check=True).stdout.rstrip()


def _apply(cluster: DevCluster, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(obj))


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(1)


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)
