"""What one class looks like right now, read from its nodes and live workloads (pure).

The state machine (`class_machine`) sees a class through a `ClassObservation`; this module builds
it: the class's buckets, its ready canary pods, where its two slots are and whether a
make-before-break switch is still under way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from edgewise.api.resources import EdgeModel
from edgewise.api.rollout_status import ClassRollout
from edgewise.core import names
from edgewise.core.observed import NodeInfo, Workload
from edgewise.core.plan import ClassPlan
from edgewise.core.rollout.class_machine import ClassObservation
from edgewise.core.rollout.placement import revision, target_bounds
from edgewise.core.rollout.sites import BY_BUCKET, Order, in_cohort, order_from, ranked
from edgewise.core.rollout.switch import MAKE_BEFORE_BREAK, Bounds, Mode, SlotRange, live_bounds, settled


def class_nodes(plan: ClassPlan, nodes: Mapping[str, NodeInfo]) -> list[NodeInfo]:
    """The nodes a class's pods may run on (matched, tolerated and not rejected by the runtime)."""
    rejected = set(plan.rejected)
    return [nodes[n] for n in plan.nodes if n in nodes and n not in rejected]


def placed_order(state: ClassRollout | None) -> Order:
    """The order the class's current cohort was placed in."""
    return order_from(state.order_label, state.site_label) if state else BY_BUCKET


def observe(model: EdgeModel, cp: ClassPlan, members: list[NodeInfo], existing: Sequence[Workload],
            state: ClassRollout | None, order: Order = BY_BUCKET) -> ClassObservation:
    """`order` is the one the spec asks for; the cohort in place may be in the state's (placed_order)."""
    nodes = ranked(order, members)
    buckets = tuple(r for r, _ in nodes)
    canary_slot = None
    if state and state.canary_revision:
        canary_slot = names.other_slot(state.stable_slot)
    canary = [w for w in existing if w.labels.get(names.CLASS_LABEL) == cp.name
              and w.labels.get(names.SLOT_LABEL) == canary_slot]
    threshold = state.bucket_threshold if state else 0
    placed, pinned = placed_order(state), frozenset(state.canary_sites or ()) if state else frozenset()
    not_ready = sum(1 for n in members if in_cohort(placed.rank(n), placed.site(n), threshold, pinned)
                    and not n.ready) if canary_slot else 0
    return ClassObservation(
        name=cp.name, desired_revision=revision(cp), desired_version=model.spec.version, buckets=buckets,
        canary_ready=sum(w.ready for w in canary), not_ready_canary_nodes=not_ready,
        analysis_enabled=model.spec.rollout.analysis.provider != "none",
        canary_slot_leftover=canary_slot_leftover(cp, existing, state), order=order, ranked=nodes)


def canary_slot_leftover(cp: ClassPlan, existing: Sequence[Workload], state: ClassRollout | None) -> str:
    """What still occupies the slot a new canary of the class would take ("" if nothing).

    Read from the live DaemonSets themselves, not their status: a slot is empty once its DaemonSets are
    deleted, however far behind the DaemonSet controller is. (Their pods may outlive them until the
    garbage collector gets to them; they belong to no live DaemonSet, so no new one adopts or counts them.)
    """
    if state is None or not state.stable_revision:
        return ""
    slot = names.other_slot(state.stable_slot)
    left = sorted((w for w in existing if w.labels.get(names.CLASS_LABEL) == cp.name
                   and w.labels.get(names.SLOT_LABEL) == slot), key=lambda w: w.name)
    if not left:
        return ""
    revisions = sorted({w.labels.get(names.REVISION_LABEL) or "unknown" for w in left})
    return (f"slot {slot} still has DaemonSet(s) {', '.join(w.name for w in left)} of revision "
            f"{', '.join(revisions)}; it is deleted once the stable pods on its nodes are Ready")


def slots(cp: ClassPlan, existing: Sequence[Workload], members: Sequence[NodeInfo], stable_slot: str,
          order: Order = BY_BUCKET) -> tuple[Bounds, bool, bool]:
    """Where the class's two slots are now, and whether each has Ready pods on every node it covers."""
    mine = [w for w in existing if w.labels.get(names.CLASS_LABEL) == cp.name]
    stable = [w for w in mine if w.labels.get(names.SLOT_LABEL) == stable_slot]
    canary = [w for w in mine if w.labels.get(names.SLOT_LABEL) == names.other_slot(stable_slot)]
    live = live_bounds(canary, stable, order)
    c, s = _ranges(live, order)
    return (live, settled(canary, 0, live.canary, members, lambda n: c.covers(order, n)),
            settled(stable, live.stable, order.end, members, lambda n: s.covers(order, n)))


def _ranges(b: Bounds, order: Order) -> tuple[SlotRange, SlotRange]:
    """What the canary and the stable slot cover, as ranges."""
    return (SlotRange(0, b.canary, sites_in=b.canary_sites),
            SlotRange(b.stable, order.end, sites_out=b.stable_excluded))


def switch_observation(mode: Mode, cp: ClassPlan, existing: Sequence[Workload], members: Sequence[NodeInfo],
                       state: ClassRollout) -> dict[str, object]:
    """Is a make-before-break switch of this class still under way, and what does it wait for?"""
    if mode.name != MAKE_BEFORE_BREAK:
        return {}
    order = placed_order(state)
    live, _, _ = slots(cp, existing, members, state.stable_slot, order)
    target = target_bounds(state)
    if live == target:
        return {"make_before_break": True}
    canary_slot = names.other_slot(state.stable_slot)
    # Nodes in both ranges run two pods, nodes in neither none yet: those are the ones switching.
    c, s = _ranges(live, order)
    moving = sum(1 for n in members if c.covers(order, n) == s.covers(order, n))
    gaining = canary_slot if (live.stable < target.stable or target.stable_excluded - live.stable_excluded) \
        else state.stable_slot
    return {"make_before_break": True, "switch_pending": True,
            "switching": f"{moving} node(s) switching make-before-break: waiting for slot {gaining}'s pods "
                         "there to be Ready before the old ones leave"}


def stable_missing(model: EdgeModel, cp: ClassPlan, existing: Sequence[Workload], state: ClassRollout,
                   desired_revision: str) -> bool:
    """The class's stable workloads are gone (deleted by hand, lost), and not because a promotion the
    status has not recorded yet deleted them: nothing is left to protect, start from the spec."""
    return bool(state.stable_revision) and state.stable_revision != desired_revision \
        and not _has_slot(model, cp, existing, state.stable_slot) \
        and not _promoting(model, cp, existing, state, desired_revision)


def _has_slot(model: EdgeModel, cp: ClassPlan, existing: Sequence[Workload], slot: str) -> bool:
    wanted = {names.workload_name(model.metadata.name, cp.name, slot, w.variant) for w in cp.workloads}
    live = {w.name for w in existing if w.template is not None}
    return bool(wanted) and wanted <= live


def _promoting(model: EdgeModel, cp: ClassPlan, existing: Sequence[Workload], state: ClassRollout,
               desired_revision: str) -> bool:
    """The old stable workloads are gone because a promotion deleted them, and the operator stopped before
    its status said so: the canary slot holds the desired revision, and the promotion is to be finished."""
    return state.canary_revision == desired_revision and \
        _has_slot(model, cp, existing, names.other_slot(state.stable_slot))
