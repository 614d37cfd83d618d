"""The simulated fleet's pure parts: parsing, spreading, node manifests."""

from __future__ import annotations

import pytest

from edgewise.devcluster.fleet import CATALOGUE, parse_fleet, plan_nodes, spread


def test_parse_fleet_sums_repeated_classes() -> None:
    assert parse_fleet("jetson-orin=2, arm64-cpu=3,jetson-orin=1") == {"jetson-orin": 3, "arm64-cpu": 3}


@pytest.mark.parametrize("text", ["jetson", "jetson-orin=", "nope=1", "arm64-cpu=-1"])
def test_parse_fleet_rejects_bad_entries(text: str) -> None:
    with pytest.raises(ValueError):
        parse_fleet(text)


def test_spread_covers_every_class_round_robin() -> None:
    assert spread(6) == {"jetson-orin": 2, "jetson-xavier": 2, "arm64-cpu": 1, "amd64-cpu": 1}
    assert sum(spread(1000).values()) == 1000
    assert spread(1) == {"jetson-orin": 1}


def test_plan_nodes_is_idempotent_and_gives_unique_loopback_ips() -> None:
    first = plan_nodes({"jetson-orin": 2, "amd64-cpu": 1}, existing={})
    names = [m["metadata"]["name"] for m in first]
    assert names == ["jetson-orin-0", "jetson-orin-1", "amd64-cpu-0"]
    existing = {m["metadata"]["name"]: m["status"]["addresses"][0]["address"] for m in first}
    assert len(set(existing.values())) == 3
    assert all(ip.startswith("127.65.") for ip in existing.values())
    assert plan_nodes({"jetson-orin": 2, "amd64-cpu": 1}, existing) == []
    more = plan_nodes({"jetson-orin": 3}, existing)
    assert [m["metadata"]["name"] for m in more] == ["jetson-orin-2"]
    assert more[0]["status"]["addresses"][0]["address"] not in existing.values()


def test_jetson_manifest_has_gpu_feature_discovery_labels_and_a_gpu() -> None:
    manifest = plan_nodes({"jetson-xavier": 1}, {}, prefix="x-")[0]
    labels = manifest["metadata"]["labels"]
    assert manifest["metadata"]["name"] == "x-jetson-xavier-0"
    assert labels["nvidia.com/gpu.family"] == "volta"
    assert labels["nvidia.com/gpu.compute.major"] == "7" and labels["nvidia.com/gpu.compute.minor"] == "2"
    assert manifest["status"]["capacity"]["nvidia.com/gpu"] == "1"
    assert manifest["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert CATALOGUE["arm64-cpu"].labels.get("nvidia.com/gpu.present") is None


def test_zones_spread_each_class_over_the_sites() -> None:
    manifests = plan_nodes({"arm64-cpu": 5, "amd64-cpu": 2}, {}, zones=["plant-a", "plant-b", "plant-c"])
    zone = {m["metadata"]["name"]: m["metadata"]["labels"]["topology.kubernetes.io/zone"] for m in manifests}
    assert [zone[f"arm64-cpu-{i}"] for i in range(5)] == ["plant-a", "plant-b", "plant-c", "plant-a", "plant-b"]
    assert [zone[f"amd64-cpu-{i}"] for i in range(2)] == ["plant-a", "plant-b"]
    assert "topology.kubernetes.io/zone" not in plan_nodes({"arm64-cpu": 1}, {})[0]["metadata"]["labels"]
