"""How a node changes version: make-before-break with the two slots, or replace.

A class has two DaemonSets (slots). During a canary the canary slot covers the
buckets [0, c) and the stable slot [s, 100); at rest c == s == t, the threshold
the rollout state machine wants. A step, a rollback or an abort moves t, and
the nodes between the old and the new threshold change slot.

- MakeBeforeBreak: the slot that gains nodes widens first (c up, or s down), so
  those nodes run both pods for a moment; only once the gaining slot's pods are
  Ready — observed from its DaemonSets' status — does the losing slot shrink,
  and the DaemonSet controller removes its pods. The node-local Service selects
  both slots and follows readiness, so a client on a switching node always has
  a Ready pod. Each side is still one write per workload: two writes per step.
- Replace: both bounds move at once (one copy per node at a time: the old pod
  goes, then the new one comes). For devices that cannot hold two copies.

Everything here is pure: ranges are read from the live DaemonSets' affinity,
readiness from their status, and the result is the affinity to apply now.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from edgewise.api.profile import HardwareClass
from edgewise.core.observed import NodeInfo, Workload
from edgewise.core.quantities import BadQuantity, parse_quantity
from edgewise.core.rollout.buckets import BUCKET_LABEL, BUCKETS, bucket_of
from edgewise.core.rollout.sites import BY_BUCKET, Order
from edgewise.core.runtimes.openvino import device_resource

MAKE_BEFORE_BREAK = "MakeBeforeBreak"
REPLACE = "Replace"
# Room one copy of the runtime needs beside the model itself (interpreter, runtime libraries, buffers).
RUNTIME_OVERHEAD_MIB = 128
GPU_COUNT_LABEL = "nvidia.com/gpu.count"  # GPU Feature Discovery


@dataclass(frozen=True)
class Mode:
    name: str  # MakeBeforeBreak | Replace
    reason: str


@dataclass(frozen=True)
class Bounds:
    """Canary slot on ranks [0, canary) plus the sites `canary_sites`; stable slot on [stable, end) minus
    the sites `stable_excluded` (ranks are buckets 0–99 unless the rollout counts sites: core/rollout/sites.py)."""

    canary: int
    stable: int
    canary_sites: frozenset[str] = frozenset()
    stable_excluded: frozenset[str] = frozenset()
    foreign: bool = False  # read from workloads placed in another order (live_bounds)


def choose_mode(setting: str, hc: HardwareClass, gpu_resource: str, nodes: Sequence[NodeInfo],
                peak_memory_mib: float | None = None) -> Mode:
    """The switch mode of one class: the spec's choice, or (Auto) what its nodes can hold."""
    if setting == MAKE_BEFORE_BREAK:
        return Mode(MAKE_BEFORE_BREAK, "spec.rollout.switch is MakeBeforeBreak")
    if setting == REPLACE:
        return Mode(REPLACE, "spec.rollout.switch is Replace")
    if hc.runtime == "triton-tensorrt" or _gpu_limit(hc, gpu_resource):
        single = [n.name for n in nodes if gpu_count(n.labels) < 2]
        if single or not nodes:
            example = f" (e.g. {single[0]})" if single else ""
            return Mode(REPLACE, f"Auto: each pod needs a whole GPU ({gpu_resource}) and the class's nodes have "
                                 f"one{example}, so two copies cannot run side by side")
    device = device_resource(hc) if hc.runtime == "openvino" else None
    if device:
        # Intel's plugins advertise a device once per container that may share it (their -shared-dev-num).
        single = [n.name for n in nodes if _allocatable_count(n, device) < 2]
        if single or not nodes:
            example = f" (e.g. {single[0]})" if single else ""
            return Mode(REPLACE, f"Auto: each pod needs a {device} device and the class's nodes offer one"
                                 f"{example}, so two copies cannot run side by side")
    need = _copy_mib(hc, peak_memory_mib)
    known = [n for n in nodes if n.memory_mib]
    if need is None:
        return Mode(MAKE_BEFORE_BREAK, "Auto: no memory figure for the class (resources.requests.memory, "
                                       "resources.limits.memory, slo.maxMemoryMiB or the optimization report's "
                                       "peak); two copies assumed to fit")
    if not known:
        return Mode(MAKE_BEFORE_BREAK, f"Auto: one copy needs {need:.0f} MiB; the nodes report no allocatable "
                                       "memory, two copies assumed to fit")
    smallest = min(known, key=lambda n: n.memory_mib)
    if 2 * need > smallest.memory_mib:
        return Mode(REPLACE, f"Auto: two copies need {2 * need:.0f} MiB and node {smallest.name} can allocate "
                             f"{smallest.memory_mib} MiB")
    return Mode(MAKE_BEFORE_BREAK, f"Auto: two copies need {2 * need:.0f} MiB; the smallest node "
                                   f"({smallest.name}) can allocate {smallest.memory_mib} MiB")


def gpu_count(labels: dict[str, str]) -> int:
    value = labels.get(GPU_COUNT_LABEL, "")
    return int(value) if value.isdigit() else 0


def _allocatable_count(node: NodeInfo, resource: str) -> int:
    try:
        return int(parse_quantity(node.allocatable.get(resource, "0")))
    except BadQuantity:
        return 0


def _gpu_limit(hc: HardwareClass, gpu_resource: str) -> bool:
    res = hc.resources
    return bool(res and ((res.limits or {}).get(gpu_resource) or (res.requests or {}).get(gpu_resource)))


def _copy_mib(hc: HardwareClass, peak_memory_mib: float | None) -> float | None:
    """Memory one copy takes: the largest figure the class or the optimization report gives."""
    figures: list[float] = []
    res = hc.resources
    for quantities in ((res.requests if res else None), (res.limits if res else None)):
        value = (quantities or {}).get("memory")
        try:
            mib = float(parse_quantity(value)) / 2**20 if value is not None else 0.0
        except BadQuantity:  # refused by the guards (core/guards.py) before a switch is chosen
            mib = 0.0
        if mib > 0:
            figures.append(mib)
    if hc.slo and hc.slo.max_memory_mib:
        figures.append(hc.slo.max_memory_mib)
    if peak_memory_mib:
        figures.append(peak_memory_mib + RUNTIME_OVERHEAD_MIB)
    return max(figures) if figures else None


# -- ranges --------------------------------------------------------------------------------------

# Where a slot is, as placement wrote it (site orders only; a bucket-ordered workload's range is read
# from its affinity, as before this annotation existed, so those objects never change for it).
PLACEMENT_ANNOTATION = "edgewise.io/placement"


@dataclass(frozen=True)
class SlotRange:
    """What one live workload covers: ranks [lo, hi), plus `sites_in`, minus `sites_out`."""

    lo: int
    hi: int
    sites_in: frozenset[str] = frozenset()
    sites_out: frozenset[str] = frozenset()
    foreign: bool = False  # placed in another order than the one asked about (the spec changed it)

    def covers(self, order: Order, node: NodeInfo) -> bool:
        site = order.site(node)
        if site in self.sites_in:
            return True
        return self.lo <= order.rank(node) < self.hi and site not in self.sites_out


def slot_range(w: Workload, order: Order = BY_BUCKET) -> SlotRange:
    note = w.annotations.get(PLACEMENT_ANNOTATION) or \
        ((w.template or {}).get("metadata") or {}).get("annotations", {}).get(PLACEMENT_ANNOTATION)
    if note:
        try:
            d = json.loads(note)
            r = SlotRange(lo=int(d["lo"]), hi=int(d["hi"]), sites_in=frozenset(d.get("in") or ()),
                          sites_out=frozenset(d.get("notIn") or ()))
            return r if d.get("label") == order.label else _translated(r, int(d.get("end") or r.hi), order)
        except (ValueError, KeyError, TypeError):
            pass  # not ours to trust: read the affinity
    lo, hi, seen = 0, order.end, False
    affinity = ((w.template or {}).get("spec") or {}).get("affinity") or {}
    terms = (((affinity.get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or {})
             .get("nodeSelectorTerms") or [])
    for e in (terms[0].get("matchExpressions") or []) if terms else []:
        if e.get("key") != BUCKET_LABEL:
            continue
        seen = True
        value = int(e["values"][0])
        if e.get("operator") == "Gt":
            lo = max(lo, value + 1)
        elif e.get("operator") == "Lt":
            hi = min(hi, value)
    r = SlotRange(lo=lo, hi=hi)
    return _translated(r, BUCKETS, order) if seen and order.label != BUCKET_LABEL else r


def _translated(r: SlotRange, end: int, order: Order) -> SlotRange:
    """A range placed in another order: "every node" and "no node" mean the same in any order, the rest
    cannot be compared (foreign)."""
    if r.lo == 0 and r.hi >= end and not r.sites_out:
        return SlotRange(0, order.end)
    if r.lo >= r.hi and not r.sites_in:
        return SlotRange(order.end, order.end) if r.hi >= end else SlotRange(0, 0)
    return replace(r, foreign=True)


def bucket_range(w: Workload, order: Order = BY_BUCKET) -> tuple[int, int]:
    """Ranks [lo, hi) a live workload's placement allows (every term carries the same range)."""
    r = slot_range(w, order)
    return r.lo, r.hi


def live_bounds(canary: Sequence[Workload], stable: Sequence[Workload], order: Order = BY_BUCKET) -> Bounds:
    """Where the two slots of a class are now. A slot without workloads covers nothing."""
    c, c_sites, foreign = 0, frozenset[str](), False
    for w in canary:
        r = slot_range(w, order)
        c = max(c, r.hi if r.lo == 0 else 0)  # e.g. the old stable after a promotion: [end, end), nothing
        c_sites |= r.sites_in
        foreign = foreign or r.foreign
    s, s_out = order.end, frozenset[str]()
    for w in stable:
        r = slot_range(w, order)
        s = min(s, r.lo if r.hi == order.end else order.end)
        s_out |= r.sites_out
        foreign = foreign or r.foreign
    return Bounds(canary=c, stable=s, canary_sites=c_sites, stable_excluded=s_out, foreign=foreign)


def settled(workloads: Sequence[Workload], lo: int, hi: int, members: Sequence[NodeInfo],
            covers: Callable[[NodeInfo], bool] | None = None) -> bool:
    """Every pod the slot wants on its range is Ready, NotReady nodes aside.

    The range is buckets [lo, hi), or whatever `covers` says (site orders). From DaemonSet status: the
    controller has seen the latest spec (observedGeneration) and counts as many ready pods as it
    schedules, less the NotReady nodes of the range (their pods cannot become ready; they catch up when
    the node returns).
    """
    inside = covers or (lambda n: lo <= bucket_of(n.name) < hi)
    if not workloads:
        return not any(inside(n) for n in members) if covers else hi <= lo
    down = sum(1 for n in members if inside(n) and not n.ready)
    return all(w.observed_generation >= w.generation and w.ready >= w.desired - down for w in workloads)


def decide(mode: str, target: Bounds, live: Bounds, canary_ok: bool, stable_ok: bool) -> Bounds:
    """The bounds to apply now, moving from `live` towards `target`.

    Make-before-break: a slot that gains nodes (ranks or pinned sites) gets them now; a slot that loses
    nodes keeps them until the other slot covers them with Ready pods. A live placement in another order
    (the spec switched between site and percent steps) cannot be compared with the target: it moves at once.
    """
    if mode == REPLACE or live.foreign:
        return target
    canary, stable = live.canary, live.stable
    if target.canary >= canary:
        canary = target.canary
    elif live.stable <= target.canary and stable_ok:
        canary = target.canary
    if target.stable <= stable:
        stable = target.stable
    elif live.canary >= target.stable and canary_ok:
        stable = target.stable
    lost = live.canary_sites - target.canary_sites
    if not lost or (stable_ok and not lost & live.stable_excluded):
        canary_sites = target.canary_sites
    else:
        canary_sites = live.canary_sites | target.canary_sites
    newly_out = target.stable_excluded - live.stable_excluded
    if not newly_out or (canary_ok and newly_out <= live.canary_sites):
        stable_excluded = target.stable_excluded
    else:
        stable_excluded = live.stable_excluded & target.stable_excluded
    return Bounds(canary=canary, stable=stable, canary_sites=canary_sites, stable_excluded=stable_excluded)
