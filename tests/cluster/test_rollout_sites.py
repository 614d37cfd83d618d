"""A rollout in sites on a real control plane: a kwok fleet across three sites walks {sites: 1} pinned to a
canary site, {sitesPercent: 50} and {percent: 100}; each step runs the new version on exactly the nodes of
the sites it names, and the status and `kubectl edgewise status` show each site."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from operator_support import Operator, apply, get, rollout_classes

from edgewise.core.rollout.sites import rank_label, rank_of, site_key
from edgewise.devcluster import demo_models
from edgewise.devcluster.cluster import DevCluster
from wait_support import wait_for

ZONE = "topology.kubernetes.io/zone"
SITES = sorted(["plant-a", "plant-b", "plant-c"], key=site_key)  # the rollout's hashed order
CANARY = SITES[-1]  # pinned although it comes last in that order: it must still go first
SECOND = SITES[0]  # the first site in the hashed order joins it at sitesPercent: 50 (2 of 3 sites)
# Pauses between the steps hold each step for the test to look at; `kubectl edgewise promote` moves on.
STEPS = [{"sites": 1, "canarySites": [CANARY]}, {"pause": {}}, {"sitesPercent": 50}, {"pause": {}},
         {"percent": 100}]


def _model(ns: str, version: str, src: Path) -> dict[str, Any]:
    return {"apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel", "metadata": {"name": "m", "namespace": ns},
            "spec": {"profileRef": "p", "version": version,
                     "source": {"uri": src.as_uri(), "sha256": demo_models.sha256(src)},
                     "optimization": {"quantization": "none"},
                     "rollout": {"steps": STEPS, "analysis": {"provider": "none"}, "progressDeadline": "5m"}}}


def _profile(ns: str) -> dict[str, Any]:
    return {"apiVersion": "edgewise.io/v1alpha1", "kind": "DeploymentProfile",
            "metadata": {"name": "p", "namespace": ns},
            "spec": {"classes": [{"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"},
                                  "runtime": "onnxruntime", "precision": "fp32"}]}}


def _versions(cluster: DevCluster, ns: str) -> dict[str, str]:
    """node → version of its Running model pods (two while a node switches make-before-break)."""
    pods = get(cluster, "pods", "-n", ns, "-l", "edgewise.io/model=m")["items"]
    out: dict[str, set[str]] = {}
    for p in pods:
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp") \
                and p["spec"].get("nodeName"):
            out.setdefault(p["spec"]["nodeName"], set()).add(p["metadata"]["labels"]["edgewise.io/version"])
    return {n: ",".join(sorted(v)) for n, v in out.items()}


def _arm(cluster: DevCluster, ns: str) -> dict[str, Any]:
    return rollout_classes(get(cluster, "edgemodel", "m", "-n", ns)).get("arm", {})


def _plugin(cluster: DevCluster, ns: str, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "edgewise.cli.kubectl_plugin", "--kubeconfig",
                           str(cluster.kubeconfig), "-n", ns, *args], capture_output=True, text=True,
                          check=True).stdout


def test_a_rollout_in_sites_moves_the_canary_site_then_half_the_sites_then_every_node(
        cluster: DevCluster, namespace: str, fleet, operator: Operator, tmp_path: Path) -> None:
    nodes = fleet({"arm64-cpu": 6})
    site_of = {n: SITES[i // 2] for i, n in enumerate(sorted(nodes))}
    for node, site in site_of.items():
        cluster.kubectl("label", "node", node, f"{ZONE}={site}", "--overwrite")
    at = {site: {n for n, s in site_of.items() if s == site} for site in SITES}
    src = demo_models.good(tmp_path / "model.onnx")
    apply(cluster, [_profile(namespace), _model(namespace, "1.0", src)])
    wait_for(lambda: _versions(cluster, namespace) == dict.fromkeys(nodes, "1.0"), 120, "1.0 on every node")
    labels = {n["metadata"]["name"]: n["metadata"]["labels"] for n in get(cluster, "nodes")["items"]}
    assert all(labels[n][rank_label(ZONE)] == str(rank_of(n, site_of[n])) for n in nodes)  # ranks written

    def on_two(expected: set[str]) -> bool:
        versions = _versions(cluster, namespace)
        return versions == {n: "2.0" if n in expected else "1.0" for n in nodes}

    apply(cluster, _model(namespace, "2.0", src))
    # Step 1, {sites: 1, canarySites: [CANARY]}: the pinned site's nodes and nothing else.
    wait_for(lambda: _arm(cluster, namespace).get("stepIndex") == 1 and on_two(at[CANARY]), 150,
             f"2.0 on {CANARY} only, paused after step 1")
    arm = _arm(cluster, namespace)
    assert arm["canarySites"] == [CANARY] and arm["canaryNodes"] == 2 and arm["stableNodes"] == 4
    sites = {s["site"]: s for s in arm["sites"]}
    assert arm["sites"][0]["site"] == CANARY and sites[CANARY]["canarySite"] is True
    assert {s: (p["nodes"], p["canaryNodes"]) for s, p in sites.items()} == {
        CANARY: (2, 2), SITES[0]: (2, 0), SITES[1]: (2, 0)}
    text = _plugin(cluster, namespace, "status", "m")
    assert any(line.split()[:5] == [CANARY, "*", "2", "2", "2"] for line in text.splitlines()), text

    # Step 3, {sitesPercent: 50}: two sites of three — the canary site and the first in the hashed order.
    _plugin(cluster, namespace, "promote", "m")
    wait_for(lambda: _arm(cluster, namespace).get("stepIndex") == 3 and on_two(at[CANARY] | at[SECOND]), 150,
             f"2.0 on {CANARY} and {SECOND}, paused after step 3")
    sites = {s["site"]: s for s in _arm(cluster, namespace)["sites"]}
    assert {s: p["canaryNodes"] for s, p in sites.items()} == {CANARY: 2, SECOND: 2, SITES[1]: 0}

    # Step 5, {percent: 100}: every node, then promoted.
    _plugin(cluster, namespace, "promote", "m")
    wait_for(lambda: _arm(cluster, namespace).get("stableVersion") == "2.0" and on_two(set(nodes)), 150,
             "2.0 promoted on every node")
    arm = _arm(cluster, namespace)
    assert arm["state"] == "Stable" and not arm.get("sites")
