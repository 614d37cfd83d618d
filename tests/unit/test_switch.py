"""Make-before-break and Replace: the switch mode of a class, and how the two slots' ranges move."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from planning_support import fleet

from edgewise.api.profile import HardwareClass
from edgewise.core.observed import NodeInfo, Workload
from edgewise.core.rollout.buckets import BUCKET_LABEL, BUCKETS, bucket_of
from edgewise.core.rollout.switch import (
    MAKE_BEFORE_BREAK,
    REPLACE,
    Bounds,
    bucket_range,
    choose_mode,
    decide,
    live_bounds,
    settled,
)

GPU = "nvidia.com/gpu"


def hc(runtime: str = "onnxruntime", **extra: Any) -> HardwareClass:
    return HardwareClass.model_validate({"name": "c", "nodeSelector": {"kubernetes.io/arch": "arm64"},
                                         "runtime": runtime, **extra})


def with_memory(nodes: list[NodeInfo], mib: int) -> list[NodeInfo]:
    return [NodeInfo(name=n.name, labels=n.labels, memory_mib=mib) for n in nodes]


# --- the mode ------------------------------------------------------------------------------------


def test_an_explicit_setting_wins_over_every_figure() -> None:
    jetsons = fleet(jetson_orin=2)
    assert choose_mode("MakeBeforeBreak", hc("triton-tensorrt"), GPU, jetsons).name == MAKE_BEFORE_BREAK
    small = with_memory(fleet(arm64_cpu=2), 256)
    replace = choose_mode("Replace", hc(resources={"requests": {"memory": "64Mi"}}), GPU, small)
    assert replace.name == REPLACE and "spec.rollout.switch is Replace" in replace.reason


def test_auto_replaces_when_each_pod_needs_the_one_gpu_of_its_node() -> None:
    mode = choose_mode("Auto", hc("triton-tensorrt"), GPU, fleet(jetson_orin=2))
    assert mode.name == REPLACE and "jetson-orin-0" in mode.reason and GPU in mode.reason
    # An onnxruntime class that asks for a GPU is the same story.
    asks = hc(resources={"limits": {GPU: 1}})
    assert choose_mode("Auto", asks, GPU, fleet(jetson_orin=1)).name == REPLACE
    # Nodes with two GPUs (GPU Feature Discovery's count label) can hold both slots.
    two = [NodeInfo(name=n.name, labels={**n.labels, "nvidia.com/gpu.count": "2"}) for n in fleet(jetson_orin=2)]
    assert choose_mode("Auto", hc("triton-tensorrt"), GPU, two).name == MAKE_BEFORE_BREAK


@pytest.mark.parametrize(("figure", "node_mib", "expected"), [
    ({"resources": {"requests": {"memory": "300Mi"}}}, 512, REPLACE),        # 600 > 512
    ({"resources": {"requests": {"memory": "256Mi"}}}, 512, MAKE_BEFORE_BREAK),  # 512 fits exactly
    ({"resources": {"limits": {"memory": "1Gi"}}}, 1536, REPLACE),            # limits count too
    ({"resources": {"requests": {"memory": "4e8"}}}, 700, REPLACE),           # any quantity: 2 x 381 MiB
    ({"resources": {"requests": {"memory": "1T"}}}, 8000, REPLACE),
    ({"slo": {"maxMemoryMiB": 700}}, 1024, REPLACE),
    ({"slo": {"maxMemoryMiB": 300}}, 1024, MAKE_BEFORE_BREAK),
])
def test_auto_replaces_when_two_copies_exceed_the_smallest_node(figure: dict[str, Any], node_mib: int,
                                                                 expected: str) -> None:
    nodes = with_memory(fleet(arm64_cpu=2), 8192)
    nodes[1] = NodeInfo(name=nodes[1].name, labels=nodes[1].labels, memory_mib=node_mib)  # the smallest decides
    mode = choose_mode("Auto", hc(**figure), GPU, nodes)
    assert mode.name == expected, mode.reason
    assert nodes[1].name in mode.reason and f"{node_mib} MiB" in mode.reason


def test_auto_uses_the_optimization_reports_peak_plus_the_runtime() -> None:
    nodes = with_memory(fleet(arm64_cpu=1), 1024)
    assert choose_mode("Auto", hc(), GPU, nodes, peak_memory_mib=300).name == MAKE_BEFORE_BREAK  # 2*(300+128)
    big = choose_mode("Auto", hc(), GPU, nodes, peak_memory_mib=500)
    assert big.name == REPLACE and "1256 MiB" in big.reason


def test_auto_without_figures_assumes_two_copies_fit_and_says_so() -> None:
    mode = choose_mode("Auto", hc(), GPU, fleet(arm64_cpu=2))
    assert mode.name == MAKE_BEFORE_BREAK and "no memory figure" in mode.reason
    unknown_nodes = choose_mode("Auto", hc(resources={"requests": {"memory": "1Gi"}}), GPU, fleet(arm64_cpu=1))
    assert unknown_nodes.name == MAKE_BEFORE_BREAK and "no allocatable memory" in unknown_nodes.reason


# --- ranges from live workloads ------------------------------------------------------------------


def workload(name: str, lo: int | None = None, hi: int | None = None, ready: int = 1, desired: int = 1,
             generation: int = 1, observed: int = 1) -> Workload:
    exprs = [{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]
    if lo is not None:
        exprs.append({"key": BUCKET_LABEL, "operator": "Gt", "values": [str(lo - 1)]})
    if hi is not None:
        exprs.append({"key": BUCKET_LABEL, "operator": "Lt", "values": [str(hi)]})
    template = {"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": exprs}]}}}}}
    return Workload(name=name, generation=generation, observed_generation=observed, desired=desired, ready=ready,
                    template=template)


def test_ranges_are_read_from_the_live_affinity() -> None:
    assert bucket_range(workload("s")) == (0, BUCKETS)
    assert bucket_range(workload("s", lo=40)) == (40, BUCKETS)
    assert bucket_range(workload("c", hi=40)) == (0, 40)
    assert live_bounds([workload("c", hi=40)], [workload("s", lo=20)]) == Bounds(canary=40, stable=20)
    assert live_bounds([], [workload("s")]) == Bounds(canary=0, stable=0)  # no canary: stable everywhere
    assert live_bounds([], []) == Bounds(canary=0, stable=BUCKETS)  # nothing covers anything
    # The old stable slot after a promotion covers [100, 100): nothing, it is not a low-side canary.
    assert live_bounds([workload("old", lo=BUCKETS)], [workload("s", hi=BUCKETS)]) == Bounds(0, 0)


def test_a_slot_is_settled_when_its_controller_caught_up_and_every_pod_is_ready() -> None:
    nodes = fleet(arm64_cpu=4)
    assert settled([workload("c", hi=50, ready=2, desired=2)], 0, 50, nodes)
    assert not settled([workload("c", hi=50, ready=1, desired=2)], 0, 50, nodes)
    assert not settled([workload("c", hi=50, ready=2, desired=2, generation=2, observed=1)], 0, 50, nodes)
    assert not settled([], 0, 50, nodes)  # a slot that should cover buckets but has no workload
    assert settled([], 50, 50, nodes)
    # A NotReady node in the range cannot get a ready pod: it doesn't hold the switch.
    down = [NodeInfo(name=n.name, labels=n.labels, ready=False) if i == 0 else n for i, n in enumerate(nodes)]
    b = bucket_of(down[0].name)
    assert settled([workload("c", hi=b + 1, ready=0, desired=1)], 0, b + 1, down)
    assert not settled([workload("c", hi=b + 1, ready=0, desired=1)], 0, b + 1, nodes)


# --- the decision ---------------------------------------------------------------------------------

POINTS = (0, 10, 35, 60, BUCKETS)


def _covers(bounds: Bounds, bucket: int) -> set[str]:
    return {side for side, yes in (("canary", bucket < bounds.canary), ("stable", bucket >= bounds.stable)) if yes}


@pytest.mark.parametrize(("c_live", "s_live", "target", "canary_ok", "stable_ok"), [
    (c, s, t, co, so) for c, s, t, co, so in itertools.product(POINTS, POINTS, POINTS, (False, True), (False, True))
    if s <= c or (c == 0 and s == 0)  # reachable live states: the slots overlap or meet, never leave a gap
])
def test_make_before_break_never_removes_a_pod_before_the_other_slot_is_ready_there(
        c_live: int, s_live: int, target: int, canary_ok: bool, stable_ok: bool) -> None:
    live = Bounds(canary=c_live, stable=s_live)
    out = decide(MAKE_BEFORE_BREAK, Bounds(target, target), live, canary_ok, stable_ok)
    ok = {"canary": canary_ok, "stable": stable_ok}
    for bucket in range(BUCKETS):
        before, after = _covers(live, bucket), _covers(out, bucket)
        for side in before - after:  # a slot leaves this bucket...
            other = "stable" if side == "canary" else "canary"
            assert other in before and ok[other], (bucket, live, out)  # ...only where the other one is ready
        # The target's slot for this bucket is there at once (make first).
        wanted = "canary" if bucket < target else "stable"
        assert wanted in after, (bucket, live, out)
    # Once both slots are ready, one more decision lands exactly on the target: two writes at most.
    again = decide(MAKE_BEFORE_BREAK, Bounds(target, target), out, True, True)
    assert again == Bounds(target, target)


@pytest.mark.parametrize("live", [Bounds(0, 0), Bounds(35, 35), Bounds(60, 10), Bounds(BUCKETS, BUCKETS)])
def test_replace_moves_both_slots_at_once(live: Bounds) -> None:
    for target in POINTS:
        assert decide(REPLACE, Bounds(target, target), live, False, False) == Bounds(target, target)


def test_a_step_widens_the_canary_then_shrinks_the_stable() -> None:
    first = decide(MAKE_BEFORE_BREAK, Bounds(50, 50), Bounds(10, 10), canary_ok=True, stable_ok=True)
    assert first == Bounds(canary=50, stable=10)
    assert decide(MAKE_BEFORE_BREAK, Bounds(50, 50), first, canary_ok=False, stable_ok=True) == first
    assert decide(MAKE_BEFORE_BREAK, Bounds(50, 50), first, canary_ok=True, stable_ok=False) == Bounds(50, 50)


def test_a_rollback_widens_the_stable_then_removes_the_canary() -> None:
    first = decide(MAKE_BEFORE_BREAK, Bounds(0, 0), Bounds(50, 50), canary_ok=True, stable_ok=True)
    assert first == Bounds(canary=50, stable=0)
    assert decide(MAKE_BEFORE_BREAK, Bounds(0, 0), first, canary_ok=True, stable_ok=False) == first
    assert decide(MAKE_BEFORE_BREAK, Bounds(0, 0), first, canary_ok=False, stable_ok=True) == Bounds(0, 0)
