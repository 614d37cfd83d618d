"""Placement: which DaemonSet serves which nodes of a class while a canary rolls out.

The planner renders each class's workloads for the *current* spec. Placement
turns that into the objects to apply, given the class's rollout state:

- no canary: one workload in the stable slot, on every node of the class;
- a canary at p%: the candidate in the other slot on nodes whose bucket is
  below the threshold, and the stable workload — its live pod template kept as
  it is, so it keeps serving the old revision — on the rest.

Only node affinity changes from step to step, and the planner gives every
workload the OnDelete update strategy, so a step restarts exactly the nodes that
move: the DaemonSet controller removes a pod from a node its affinity no longer
selects and creates one where it newly does, and leaves every other pod alone.

`deletions` is the one place that decides which owned workloads go.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from edgewise.api.rollout_status import ClassRollout
from edgewise.core import names
from edgewise.core.observed import Workload
from edgewise.core.plan import ClassPlan, WorkloadPlan, spec_hash
from edgewise.core.rollout.buckets import BUCKET_LABEL
from edgewise.core.rollout.sites import RANK_PREFIX, Order, order_from
from edgewise.core.rollout.switch import PLACEMENT_ANNOTATION, Bounds

Expr = dict[str, Any]


def revision(plan: ClassPlan) -> str:
    """Hash of what a class's pods run — templates without placement (affinity, slot) — across variants."""
    parts = []
    for w in sorted(plan.workloads, key=lambda w: w.variant):
        template = copy.deepcopy(w.manifest["spec"]["template"])
        template["spec"].pop("affinity", None)
        for key in (names.SLOT_LABEL, names.REVISION_LABEL):
            template["metadata"]["labels"].pop(key, None)
        parts.append([w.variant, template])
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:10]


def place(model: str, classes: Sequence[ClassPlan], states: Mapping[str, ClassRollout],
          existing: Sequence[Workload], skip: frozenset[str] = frozenset(),
          bounds: Mapping[str, Bounds] | None = None) -> tuple[WorkloadPlan, ...]:
    """The workloads to apply for every planned class.

    Classes in `skip` (nothing deployed yet, waiting for their artifact) get nothing. `bounds` says
    per class which buckets each slot covers right now (see core/rollout/switch.py); without it, the
    slots sit exactly at the state's threshold (a Replace switch).
    """
    by_name = {w.name: w for w in existing}
    out: list[WorkloadPlan] = []
    for plan in classes:
        if plan.name in skip:
            continue
        state = states.get(plan.name)
        rev = revision(plan)
        if state is None or state.stable_revision is None:
            out += [_placed(w, w.manifest, names.DEFAULT_SLOT, None, rev) for w in plan.workloads]
            continue
        b = (bounds or {}).get(plan.name) or target_bounds(state)
        order = order_from(state.order_label, state.site_label)
        stable_slot = state.stable_slot
        canary_slot = names.other_slot(stable_slot)
        stable_req = _stable(order, b)
        canary_req = _canary(order, b)
        for w in plan.workloads:
            if state.stable_revision == rev:
                out.append(_placed(w, w.manifest, stable_slot, stable_req, rev))
            else:
                # A stable workload that is gone has no template to keep: nothing is placed for it here
                # (`advance` restarts such a class from the spec, or finishes its promotion: observe.stable_missing).
                live = by_name.get(names.workload_name(model, plan.name, stable_slot, w.variant))
                if live is not None and live.template is not None:
                    out.append(_placed(w, _keep_template(w.manifest, live), stable_slot, stable_req,
                                       state.stable_revision))
            if b.canary > 0 or b.canary_sites:
                if state.canary_revision == rev:
                    out.append(_placed(w, w.manifest, canary_slot, canary_req, rev))
                else:  # the spec moved on but its artifact isn't ready, or a rolled-back canary still drains:
                    # the pods in flight keep running what they run
                    live_canary = by_name.get(names.workload_name(model, plan.name, canary_slot, w.variant))
                    if live_canary is not None and live_canary.template is not None:
                        kept_rev = state.canary_revision or live_canary.labels.get(names.REVISION_LABEL, "")
                        out.append(_placed(w, _keep_template(w.manifest, live_canary), canary_slot,
                                           canary_req, kept_rev))
    return tuple(out)


def deletions(classes: Sequence[ClassPlan], existing: Sequence[Workload], placed: Sequence[WorkloadPlan],
              skip: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """The owned workloads to delete: those of a class the profile no longer has (or no class label),
    and those of a placed class that placement no longer wants (a promoted-away stable, a drained canary).

    A class that could not be planned, or waits for its first artifact (`skip`), keeps what it has.
    """
    profile_classes = {c.name for c in classes}
    placed_classes = {c.name for c in classes if not c.error and c.name not in skip}
    wanted = {w.name for w in placed}

    def goes(w: Workload) -> bool:
        cls = w.labels.get(names.CLASS_LABEL)
        return cls not in profile_classes or (cls in placed_classes and w.name not in wanted)

    return tuple(sorted(w.name for w in existing if goes(w)))


def target_bounds(state: ClassRollout) -> Bounds:
    """Where the state machine wants the slots: the canary on buckets below the threshold, the stable
    on the rest; no canary, the stable everywhere."""
    pinned = frozenset(state.canary_sites or ())
    if state.canary_revision and state.percent > 0 and (state.bucket_threshold > 0 or pinned):
        return Bounds(canary=state.bucket_threshold, stable=state.bucket_threshold, canary_sites=pinned,
                      stable_excluded=pinned)
    return Bounds(canary=0, stable=0)


@dataclass(frozen=True)
class Placement:
    """A slot's node constraint: alternatives (ORed, each ANDed into every class term), and for a site order the
    annotation that says where the slot is (switch.slot_range reads it back)."""

    alternatives: tuple[tuple[Expr, ...], ...]
    note: str | None = None


def _stable(order: Order, b: Bounds) -> Placement:
    # Node affinity has Gt/Lt on integer label values: rank >= t is written rank > t-1.
    req: list[Expr] = []
    if b.stable > 0:
        req.append({"key": order.label, "operator": "Gt", "values": [str(min(b.stable, order.end) - 1)]})
    if b.stable_excluded and order.site_label:  # NotIn also selects nodes without the site label
        req.append({"key": order.site_label, "operator": "NotIn", "values": sorted(b.stable_excluded)})
    return Placement((tuple(req),), _note(order, b.stable, order.end, (), sorted(b.stable_excluded)))


def _canary(order: Order, b: Bounds) -> Placement:
    alternatives: list[tuple[Expr, ...]] = []
    if b.canary > 0:
        alternatives.append(({"key": order.label, "operator": "Lt", "values": [str(b.canary)]},))
    if b.canary_sites and order.site_label:
        alternatives.append(({"key": order.site_label, "operator": "In", "values": sorted(b.canary_sites)},))
    return Placement(tuple(alternatives), _note(order, 0, b.canary, sorted(b.canary_sites), ()))


def _note(order: Order, lo: int, hi: int, sites_in: Sequence[str], sites_out: Sequence[str]) -> str | None:
    if not order.by_site:
        return None
    return json.dumps({"label": order.label, "lo": lo, "hi": hi, "end": order.end, "in": list(sites_in),
                       "notIn": list(sites_out)}, sort_keys=True)


def _ours(e: Expr) -> bool:
    return e.get("key") == BUCKET_LABEL or str(e.get("key", "")).startswith(RANK_PREFIX)


def _keep_template(candidate: dict[str, Any], live: Workload) -> dict[str, Any]:
    """The candidate's object, but with the live workload's pod template (and its version label)."""
    manifest = copy.deepcopy(candidate)
    template = copy.deepcopy(live.template or {})
    template.setdefault("spec", {})["affinity"] = manifest["spec"]["template"]["spec"].get("affinity")
    manifest["spec"]["template"] = template
    labels = template.get("metadata", {}).get("labels", {})
    if names.VERSION_LABEL in labels:
        manifest["metadata"]["labels"][names.VERSION_LABEL] = labels[names.VERSION_LABEL]
    artifact = template.get("metadata", {}).get("annotations", {}).get(names.ARTIFACT_ANNOTATION)
    if artifact:
        manifest["metadata"]["annotations"][names.ARTIFACT_ANNOTATION] = artifact
    return manifest


def _placed(w: WorkloadPlan, manifest: dict[str, Any], slot: str, where: Placement | None,
            rev: str) -> WorkloadPlan:
    m = copy.deepcopy(manifest)
    meta = m["metadata"]
    name = names.workload_name(meta["labels"][names.MODEL_LABEL], w.class_name, slot, w.variant)
    meta["name"] = name
    for labels in (meta["labels"], m["spec"]["selector"]["matchLabels"], m["spec"]["template"]["metadata"]["labels"]):
        labels[names.SLOT_LABEL] = slot
    meta["labels"].setdefault(names.REVISION_LABEL, rev)
    m["spec"]["template"]["metadata"]["labels"].setdefault(names.REVISION_LABEL, rev)
    affinity = m["spec"]["template"]["spec"].get("affinity")
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] \
        if affinity else []
    # Every term of the class's affinity gets the same range: ANDed into each term, and when the slot has
    # alternatives (a canary on ranks below t OR at pinned sites) each term once per alternative.
    alternatives = where.alternatives if where is not None else ((),)
    placed_terms = []
    for term in terms:
        kept = [e for e in term.get("matchExpressions", []) if not _ours(e)]
        placed_terms += [{**term, "matchExpressions": kept + list(alt)} for alt in alternatives]
    terms[:] = placed_terms
    meta["annotations"].pop(PLACEMENT_ANNOTATION, None)
    if where is not None and where.note is not None:
        meta["annotations"][PLACEMENT_ANNOTATION] = where.note
    meta["annotations"].pop(names.SPEC_HASH_ANNOTATION, None)
    meta["annotations"][names.SPEC_HASH_ANNOTATION] = spec_hash(m)
    return replace(w, name=name, slot=slot, manifest=m)
