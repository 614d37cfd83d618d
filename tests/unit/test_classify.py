"""Nodes → classes: first match wins, unmatched are counted, taints keep pods out."""

from __future__ import annotations

from dataclasses import replace

from planning_support import device_node, factory_floor, fleet, profile_of

from edgewise.api.builtin import BUILTIN_PROFILE
from edgewise.core.classify import classify
from edgewise.core.observed import NodeInfo, Taint


def _names(result, cls: str) -> list[str]:
    return [n.name for n in result.members(cls).nodes]


def test_builtin_profile_sorts_a_mixed_fleet_by_device_labels() -> None:
    nodes = fleet(jetson_orin=2, jetson_xavier=1, arm64_cpu=3, amd64_cpu=1)
    result = classify(BUILTIN_PROFILE, nodes)
    assert _names(result, "jetson") == ["jetson-orin-0", "jetson-orin-1", "jetson-xavier-0"]
    assert _names(result, "arm64-cpu") == ["arm64-cpu-0", "arm64-cpu-1", "arm64-cpu-2"]
    assert _names(result, "amd64-cpu") == ["amd64-cpu-0"]
    assert result.unmatched == () and result.matched_count == 7


def test_factory_floor_profile_leaves_other_jetsons_alone_and_counts_them() -> None:
    nodes = fleet(jetson_orin=2, jetson_xavier=1, arm64_cpu=2, amd64_cpu=1)
    result = classify(factory_floor().spec, nodes)
    assert _names(result, "jetson-orin") == ["jetson-orin-0", "jetson-orin-1"]
    assert _names(result, "arm-cpu") == ["arm64-cpu-0", "arm64-cpu-1"]  # the Xavier has a GPU: not a CPU node
    assert _names(result, "x86-vnni") == ["amd64-cpu-0"]
    assert [n.name for n in result.unmatched] == ["jetson-xavier-0"]
    assert result.class_of("jetson-xavier-0") is None and result.class_of("amd64-cpu-0") == "x86-vnni"


def test_first_match_wins_in_profile_order() -> None:
    wide = {"name": "any-arm", "runtime": "onnxruntime", "nodeSelector": {"kubernetes.io/arch": "arm64"}}
    narrow = {
        "name": "orin",
        "runtime": "triton-tensorrt",
        "nodeSelector": {"nvidia.com/gpu.family": "ampere"},
    }
    nodes = fleet(jetson_orin=1, arm64_cpu=1)
    assert _names(classify(profile_of(wide, narrow).spec, nodes), "orin") == []
    assert _names(classify(profile_of(narrow, wide).spec, nodes), "orin") == ["jetson-orin-0"]


def test_match_expressions_with_numeric_compute_capability() -> None:
    modern = {
        "name": "sm8",
        "runtime": "triton-tensorrt",
        "matchExpressions": [{"key": "nvidia.com/gpu.compute.major", "operator": "Gt", "values": ["7"]}],
    }
    old = {
        "name": "sm7",
        "runtime": "triton-tensorrt",
        "matchExpressions": [
            {"key": "nvidia.com/gpu.compute.major", "operator": "Lt", "values": ["8"]},
            {"key": "nvidia.com/gpu.product", "operator": "NotIn", "values": ["nope"]},
        ],
    }
    cpu = {
        "name": "cpu",
        "runtime": "onnxruntime",
        "matchExpressions": [
            {"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"},
            {
                "key": "feature.node.kubernetes.io/cpu-model.vendor_id",
                "operator": "In",
                "values": ["ARM", "Intel"],
            },
        ],
    }
    result = classify(
        profile_of(modern, old, cpu).spec, fleet(jetson_orin=1, jetson_xavier=1, arm64_cpu=1, amd64_cpu=1)
    )
    assert (_names(result, "sm8"), _names(result, "sm7")) == (["jetson-orin-0"], ["jetson-xavier-0"])
    assert _names(result, "cpu") == ["amd64-cpu-0", "arm64-cpu-0"]


def test_nodes_without_matching_labels_are_unmatched() -> None:
    bare = NodeInfo(name="mystery", labels={"kubernetes.io/os": "linux"})
    riscv = device_node("riscv-0", "arm64-cpu", **{"kubernetes.io/arch": "riscv64"})
    result = classify(BUILTIN_PROFILE, [bare, riscv, *fleet(amd64_cpu=1)])
    assert [n.name for n in result.unmatched] == ["mystery", "riscv-0"]
    assert result.matched_count == 1


def test_untolerated_taints_keep_a_node_out_but_it_stays_in_its_class() -> None:
    gpu_taint = Taint(key="nvidia.com/gpu", value="true", effect="NoSchedule")
    tainted = device_node("orin-t", "jetson-orin", taints=(gpu_taint,))
    cordoned = device_node(
        "arm-c", "arm64-cpu", taints=(Taint(key="node.kubernetes.io/unschedulable", effect="NoSchedule"),)
    )
    soft = device_node("arm-s", "arm64-cpu", taints=(Taint(key="x", effect="PreferNoSchedule"),))
    result = classify(BUILTIN_PROFILE, [tainted, cordoned, soft])
    assert [n.name for n in result.members("jetson").untolerated] == ["orin-t"]
    assert _names(result, "arm64-cpu") == ["arm-c", "arm-s"]  # DaemonSets tolerate cordons by default
    tolerant = {
        "name": "jetson",
        "runtime": "triton-tensorrt",
        "nodeSelector": {"kubernetes.io/arch": "arm64"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    assert _names(classify(profile_of(tolerant).spec, [tainted]), "jetson") == ["orin-t"]
    wrong_effect = {
        **tolerant,
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}],
    }
    assert _names(classify(profile_of(wrong_effect).spec, [tainted]), "jetson") == []


def test_a_node_that_is_away_stays_in_its_class() -> None:
    # The node controller's taints for a NotReady or silent node: the node still counts (its pod is
    # not ready, which status and the unready-nodes alert report); a cordon-like taint of another key does not.
    away = [replace(device_node(f"arm-{key.rsplit('/', 1)[1]}", "arm64-cpu",
                                taints=(Taint(key=key, effect="NoSchedule"), Taint(key=key, effect="NoExecute"))),
                    ready=False)
            for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")]
    other = device_node("arm-x", "arm64-cpu", taints=(Taint(key="node.kubernetes.io/network-unavailable",
                                                            effect="NoSchedule"),))
    result = classify(BUILTIN_PROFILE, [*away, other])
    assert _names(result, "arm64-cpu") == ["arm-not-ready", "arm-unreachable"]
    assert [n.name for n in result.members("arm64-cpu").untolerated] == ["arm-x"]


def test_result_does_not_depend_on_listing_order() -> None:
    nodes = fleet(jetson_orin=2, arm64_cpu=3, amd64_cpu=2)
    assert classify(BUILTIN_PROFILE, nodes) == classify(BUILTIN_PROFILE, list(reversed(nodes)))
