"""The watch-fed node cache on the real apiserver, and an operator that reads nodes from it, not by LIST.

Issue 14: each model reconcile used to list every node, so reads at rest grew with events × fleet
size. The cache lists once and then follows one watch; the operator's client counts its requests
(`edgewise_kube_requests_total`), which is what the last test reads.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from operator_support import apply, example, running_operator, wait_status

from edgewise.core.observed import NodeInfo
from edgewise.devcluster import processes
from edgewise.devcluster.cluster import DevCluster
from edgewise.kube.node_cache import NodeCache
from wait_support import wait_for

ZONE = "topology.kubernetes.io/zone"


@pytest.fixture
def cache(cluster: DevCluster) -> Iterator[tuple[NodeCache, list[tuple[str, str]]]]:
    events: list[tuple[str, str]] = []
    with cluster.api_client() as api:
        nodes = NodeCache(api, on_event=lambda kind, node: events.append((kind, node.name)), watch_seconds=30)
        nodes.start()
        try:
            assert nodes.wait_synced(60), "the node cache's first listing"
            yield nodes, events
        finally:
            nodes.stop()


def _seen(cache: NodeCache, name: str) -> NodeInfo | None:
    return next((n for n in cache.snapshot() or [] if n.name == name), None)


def test_the_cache_sees_nodes_added_relabelled_and_deleted(cluster: DevCluster, fleet, cache) -> None:
    nodes, events = cache
    made = fleet({"arm64-cpu": 2})
    wait_for(lambda: all(_seen(nodes, n) for n in made), 60, "the new nodes in the cache")
    assert {("ADDED", n) for n in made} <= set(events)

    with cluster.api_client() as api:
        core = k8s.CoreV1Api(api)
        core.patch_node(made[0], {"metadata": {"labels": {ZONE: "plant-a"}}})
        wait_for(lambda: (n := _seen(nodes, made[0])) is not None and n.labels.get(ZONE) == "plant-a", 60,
                 "the new label in the cache")
        assert ("MODIFIED", made[0]) in events
        core.delete_node(made[1])
    wait_for(lambda: _seen(nodes, made[1]) is None, 60, "the deleted node gone from the cache")
    assert ("DELETED", made[1]) in events
    assert nodes.lists == 1, "everything after the first listing came from the watch"


def test_the_cache_lists_again_when_its_watch_expired_and_keeps_following(cluster: DevCluster, fleet,
                                                                          cache) -> None:
    nodes, events = cache
    before = fleet({"arm64-cpu": 1})
    wait_for(lambda: _seen(nodes, before[0]), 60, "the first node in the cache")
    with cluster.api_client() as api:
        core = k8s.CoreV1Api(api)
        for _ in range(3):  # move etcd's revision past the cache's, so it is older than what a new apiserver keeps
            core.create_namespaced_config_map("default", {"metadata": {"generateName": "node-cache-test-"}})
    # A restarted apiserver starts its watch cache at etcd's current revision: the cache's watch breaks, and
    # resuming from its resourceVersion answers 410 Gone. Only a fresh listing can tell what happened meanwhile.
    cluster.restart("kube-apiserver")
    wait_for(lambda: nodes.expired >= 1 and nodes.lists >= 2, 180, "the watch to expire and the cache to relist")
    after = fleet({"amd64-cpu": 1})
    wait_for(lambda: _seen(nodes, after[0]), 60, "a node made after the relist, from the new watch")
    with cluster.api_client() as api:
        k8s.CoreV1Api(api).delete_node(before[0])
    wait_for(lambda: _seen(nodes, before[0]) is None, 60, "a deletion after the relist")
    assert ("DELETED", before[0]) in events


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _count(metrics: dict[str, float], name: str, **labels: str) -> float:
    """The sum of the series of `name` whose labels include `labels`."""
    total = 0.0
    for series, value in metrics.items():
        if not series.startswith(name + "{") and series != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', series))
        if all(got.get(k) == v for k, v in labels.items()):
            total += value
    return total


def test_reconciles_read_nodes_from_the_cache_not_by_listing_them(cluster: DevCluster, namespace: str, fleet,
                                                                  tmp_path: Path) -> None:
    made = fleet({"arm64-cpu": 2, "jetson-orin": 1})
    port = processes.free_port()
    with running_operator(cluster, tmp_path, ["--metrics", f"127.0.0.1:{port}"]) as op:
        apply(cluster, example("factory-floor-profile.yaml", namespace) + example("defect-detector.yaml", namespace))
        ready = wait_status(cluster, namespace, "defect-detector",
                            lambda o: (o.get("status") or {}).get("phase") == "Ready", "Ready")
        matched = ready["status"]["matchedNodes"]  # other tests' nodes may match too
        op.settle()
        rest = _metrics(port)
        lists = _count(rest, "edgewise_kube_requests_total", verb="list", resource="nodes")
        reconciles = _count(rest, "edgewise_reconcile_duration_seconds_count", kind="model")
        daemonset_lists = _count(rest, "edgewise_kube_requests_total", verb="list", resource="daemonsets")
        assert lists >= 1, "the cache's first listing is counted"

        # Five more reconciles of the model (each change of the object is an event)...
        for i in range(5):
            cluster.kubectl("annotate", "edgemodel", "defect-detector", "-n", namespace, f"test/touch={i}",
                            "--overwrite")
            wait_for(lambda i=i: _count(_metrics(port), "edgewise_reconcile_duration_seconds_count",
                                        kind="model") >= reconciles + i + 1, 60, f"reconcile {i + 1}")
        # ...and a node joining its class, which the next reconcile must see without listing.
        joined = fleet({"arm64-cpu": 3})
        assert set(joined) - set(made)
        wait_status(cluster, namespace, "defect-detector",
                    lambda o: (o.get("status") or {}).get("matchedNodes", 0) == matched + 1, "the new node matched")
        after = _metrics(port)
    assert _count(after, "edgewise_kube_requests_total", verb="list", resource="nodes") == lists
    assert _count(after, "edgewise_kube_requests_total", verb="list", resource="daemonsets") > daemonset_lists, \
        "the counter does count reconciles' reads"
