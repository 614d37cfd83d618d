"""Rollouts in sites: the site order, steps resolved in sites, mandatory canary sites, placement by one
threshold (and the pinned sites), per-site judging and per-site progress."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest
from planning_support import device_node, model, profile_of

from edgewise.api.model import Step
from edgewise.api.rollout_status import AnalysisRecord, ClassRollout, Outcome, SiteVerdict
from edgewise.api.settings import OperatorSettings
from edgewise.api.status import EdgeModelStatus
from edgewise.cli.kubectl_plugin import render_status
from edgewise.controller.series import model_series
from edgewise.core.analysis import Verdict
from edgewise.core.durations import iso
from edgewise.core.observed import NodeInfo, Workload
from edgewise.core.plan import plan_model
from edgewise.core.rollout import Observed, advance
from edgewise.core.rollout.buckets import BUCKET_LABEL, BUCKETS, bucket_of
from edgewise.core.rollout.site_progress import site_progress
from edgewise.core.rollout.sites import (
    BY_BUCKET,
    NO_SITE,
    RANK_END,
    cohort_size,
    order_for,
    pinned_through,
    rank_label,
    rank_of,
    ranked,
    site_key,
    site_order,
    step_threshold,
)
from edgewise.core.rollout.switch import MAKE_BEFORE_BREAK, Bounds, decide, live_bounds
from edgewise.core.site_analysis import combine, group_by_site

ZONE = "topology.kubernetes.io/zone"
T0 = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
SITES = ("berlin", "lyon", "oslo")
PROFILE = profile_of({"name": "x86", "nodeSelector": {"kubernetes.io/arch": "amd64"}, "runtime": "onnxruntime",
                      "precision": "fp32"})


def site_fleet(per_site: int = 4, unlabelled: int = 2, label: str = ZONE) -> list[NodeInfo]:
    nodes = [device_node(f"{site}-{i}", "amd64-cpu", **{label: site}) for site in SITES for i in range(per_site)]
    return nodes + [device_node(f"lone-{i}", "amd64-cpu") for i in range(unlabelled)]


NODES = site_fleet()
STEPS = [{"sites": 1, "canarySites": ["oslo"]}, {"sitesPercent": 50}, {"percent": 100}]


def labelled(nodes: list[NodeInfo], site_label: str = ZONE) -> list[NodeInfo]:
    """The nodes as the controller leaves them: bucket and rank labels written."""
    return [replace(n, labels={**n.labels, BUCKET_LABEL: str(bucket_of(n.name)),
                               rank_label(site_label): str(rank_of(n.name, n.labels.get(site_label, "")))})
            for n in nodes]


# -- the order -----------------------------------------------------------------------------------


def test_site_keys_are_stable_and_the_unlabelled_site_comes_last() -> None:
    assert site_key("berlin") == site_key("berlin")
    assert all(site_key(s) < site_key(NO_SITE) for s in SITES)
    # ranks group a site's nodes: every node of the first site ranks below every node of the next
    nodes = ranked(order_for(model(rollout={"steps": STEPS}).spec.rollout, None), NODES)
    sites_in_rank_order = [s for _, s in nodes]
    assert sites_in_rank_order == sorted(sites_in_rank_order, key=lambda s: site_key(s))
    assert sites_in_rank_order[-2:] == [NO_SITE, NO_SITE]
    assert max(r for r, _ in nodes) < RANK_END


def test_the_rank_label_is_a_valid_label_key_per_site_label() -> None:
    a, b = rank_label(ZONE), rank_label("edgewise.io/site")
    assert a != b
    assert a.startswith("edgewise.io/") and len(a.split("/", 1)[1]) <= 63


def test_only_a_rollout_with_site_steps_orders_by_site() -> None:
    assert not order_for(model(rollout={"steps": [{"percent": 10}, {"percent": 100}]}).spec.rollout, None).by_site
    order = order_for(model(rollout={"steps": STEPS}).spec.rollout, "edgewise.io/site")
    assert order.site_label == "edgewise.io/site"  # the profile's label when the model names none
    own = order_for(model(rollout={"steps": STEPS, "siteLabel": "example.com/store"}).spec.rollout, ZONE)
    assert own.site_label == "example.com/store"  # the model's wins
    assert order_for(model(rollout={"steps": STEPS}).spec.rollout, None).site_label == ZONE


@pytest.mark.parametrize(("step", "pinned", "expected_sites"), [
    ({"sites": 1}, set(), 1),
    ({"sites": 2}, set(), 2),
    ({"sites": 1}, {"oslo"}, 1),  # the pinned site is the one site
    ({"sites": 2}, {"oslo"}, 2),  # oslo and the first other site
    ({"sitesPercent": 50}, set(), 2),  # 4 sites (the unlabelled nodes are one) → 2
    ({"sitesPercent": 1}, set(), 1),  # at least one site
    ({"sitesPercent": 100}, set(), 4),
    ({"sites": 10}, set(), 4),
])
def test_steps_in_sites_take_whole_sites_in_order_after_the_pinned_ones(step: dict[str, Any], pinned: set[str],
                                                                       expected_sites: int) -> None:
    order = order_for(model(rollout={"steps": STEPS}).spec.rollout, None)
    nodes = ranked(order, NODES)
    t = step_threshold(Step.model_validate(step), nodes, frozenset(pinned), order.end)
    chosen = {s for r, s in nodes if r < t} | pinned
    assert len(chosen) == expected_sites
    others = [s for s in site_order(nodes) if s not in pinned]
    assert chosen - pinned == set(others[:expected_sites - len(pinned)])  # the first ones in the hashed order
    for site in chosen:  # whole sites
        assert all(r < t or s in pinned for r, s in nodes if s == site)


def test_a_percent_step_counts_nodes_site_by_site_pinned_sites_first() -> None:
    order = order_for(model(rollout={"steps": STEPS}).spec.rollout, None)
    nodes = ranked(order, NODES)  # 14 nodes
    pinned = frozenset({"oslo"})
    t = step_threshold(Step(percent=50), nodes, pinned, order.end)
    assert cohort_size(nodes, t, pinned) == 7  # ceil(14 / 2): oslo's 4, then 3 in rank order
    first_other = [s for s in site_order(nodes) if s != "oslo"][0]
    assert {s for r, s in nodes if r < t} - pinned == {first_other}  # the next site, partly
    assert step_threshold(Step(percent=100), nodes, pinned, order.end) == RANK_END
    assert step_threshold(Step(percent=10), nodes, pinned, order.end) == 0  # oslo alone is already 10 %


def test_pinned_sites_accumulate_over_the_steps_reached() -> None:
    steps = [Step(sites=1, canary_sites=["oslo"]), Step(sites=2, canary_sites=["lyon"]), Step(percent=100)]
    assert pinned_through(steps, 0) == {"oslo"}
    assert pinned_through(steps, 1) == {"oslo", "lyon"}
    assert pinned_through(steps, 2) == {"oslo", "lyon"}


# -- a rollout, through advance() ----------------------------------------------------------------


def matches(labels: dict[str, str], manifest: dict[str, Any]) -> bool:
    """Node affinity as the scheduler evaluates it: any term, every expression of it."""
    terms = manifest["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]

    def ok(e: dict[str, Any]) -> bool:
        value, values, op = labels.get(e["key"]), e.get("values") or [], e["operator"]
        return {"In": lambda: value in values, "NotIn": lambda: value not in values,
                "Exists": lambda: value is not None, "DoesNotExist": lambda: value is None,
                "Gt": lambda: value is not None and int(value) > int(values[0]),
                "Lt": lambda: value is not None and int(value) < int(values[0])}[op]()

    return any(all(ok(e) for e in t.get("matchExpressions", [])) for t in terms)


def simulate(result: Any, before: list[Workload], nodes: list[NodeInfo]) -> list[Workload]:
    """The DaemonSet controller: each workload runs a Ready pod on every node its affinity selects."""
    old = {w.name: w for w in before}
    out = []
    for wp in result.apply:
        m, prev = wp.manifest, old.get(wp.name)
        generation = (prev.generation if prev else 0) + (
            prev is None or prev.annotations.get("edgewise.io/spec-hash") != wp.spec_hash)
        n = sum(matches(node.labels, m) for node in nodes)
        out.append(Workload(name=wp.name, labels=dict(m["metadata"]["labels"]),
                            annotations=dict(m["metadata"]["annotations"]), uid=f"uid-{wp.name}",
                            generation=generation, observed_generation=generation, desired=n, ready=n,
                            template=m["spec"]["template"]))
    return out


def on(result: Any, nodes: list[NodeInfo], slot: str) -> set[str]:
    ds = next((w.manifest for w in result.apply if w.name.endswith(f"-{slot}")), None)
    return {n.name for n in nodes if ds is not None and matches(n.labels, ds)}


class Walk:
    """A rollout driven reconcile by reconcile, with the DaemonSet controller simulated in between."""

    def __init__(self, switch: str = "Replace", steps: list[dict[str, Any]] | None = None) -> None:
        self.nodes = labelled(NODES)
        self.rollout = {"steps": steps or STEPS, "analysis": {"interval": "5s", "failureLimit": 0}, "switch": switch}
        self.status: Any = None
        self.existing: list[Workload] = []
        self.at = 0.0
        self.last: Any = None

    def step(self, version: str, verdict: str | None = None) -> Any:
        m = model(version=version, profile_ref="p", rollout=self.rollout)
        if self.status is not None:
            m = m.model_copy(update={"status": m.status.model_copy(update={"rollout": self.status})})
        plan = plan_model(m, PROFILE, self.nodes, self.existing, OperatorSettings())
        now = T0 + dt.timedelta(seconds=self.at)
        verdicts = {"x86": AnalysisRecord(time=iso(now), outcome=verdict, message=verdict)} if verdict else None
        result = advance(m, plan, Observed(self.nodes, self.existing), verdicts, now)
        self.existing = simulate(result, self.existing, self.nodes)
        self.status, self.last = result.status, result
        self.at += 10
        return result

    def canary(self) -> set[str]:
        state = self.status.class_state("x86")
        return on(self.last, self.nodes, "b" if state.stable_slot == "a" else "a")

    def stable(self) -> set[str]:
        return on(self.last, self.nodes, self.status.class_state("x86").stable_slot)


def names_at(*sites: str) -> set[str]:
    return {n.name for n in NODES if n.labels.get(ZONE, "") in sites}


def test_a_site_rollout_places_the_canary_site_then_half_the_sites_then_everything() -> None:
    walk = Walk()
    walk.step("1")
    assert walk.stable() == names_at(*SITES, "")
    second = walk.step("2")
    state = walk.status.class_state("x86")
    assert state.canary_sites == ["oslo"] and state.site_label == ZONE
    assert walk.canary() == names_at("oslo")  # the mandatory site, and nothing else: sites: 1
    assert walk.stable() == names_at("berlin", "lyon", "")  # every node in exactly one slot
    assert {n.name for s in second.stage for n in s.nodes} == names_at("oslo")  # staged before the step
    assert [(p.site, p.nodes, p.canary_nodes, p.canary_site) for p in state.sites][0] == ("oslo", 4, 4, True)
    assert sorted(p.site for p in state.sites) == sorted([*SITES, ""])

    walk.step("2", verdict="pass")  # step 1 passes → sitesPercent 50: oslo and the first other site
    first_other = [s for s in site_order(ranked(order_for(model(rollout={"steps": STEPS}).spec.rollout, None),
                                                NODES)) if s != "oslo"][0]
    assert walk.canary() == names_at("oslo", first_other)
    assert walk.stable() == names_at(*SITES, "") - names_at("oslo", first_other)
    assert walk.status.class_state("x86").step_index == 1

    walk.step("2", verdict="pass")  # → percent 100
    assert walk.canary() == names_at(*SITES, "")
    assert walk.stable() == set()
    walk.step("2", verdict="pass")  # promoted
    state = walk.status.class_state("x86")
    assert state.state == "Stable" and state.stable_version == "2" and state.sites is None
    assert walk.stable() == names_at(*SITES, "")


def test_a_site_step_waiting_for_its_activation_window_stages_exactly_the_nodes_it_will_move() -> None:
    # Staged ahead while the step waits, before it is placed: the state holds no site order yet (first step)
    # or the previous step's, so the nodes come from the order the spec asks for, and the pinned site counts.
    closed = {"activation": [{"kind": "Allow", "schedule": "0 22 * * *", "duration": "1h", "timeZone": "UTC"}]}
    open_now = {"activation": [{"kind": "Allow", "schedule": "0 11 * * *", "duration": "3h", "timeZone": "UTC"}]}
    walk = Walk()
    walk.step("1")
    walk.rollout["windows"] = closed
    waiting = walk.step("2")
    state = walk.status.class_state("x86")
    assert state.waiting_for_window and state.canary_nodes == 0 and walk.canary() == set()
    assert {n.name for s in waiting.stage for n in s.nodes} == names_at("oslo")  # the pinned site, only it
    walk.rollout["windows"] = open_now
    walk.step("2")
    assert walk.canary() == names_at("oslo")

    walk.rollout["windows"] = closed
    waiting = walk.step("2", verdict="pass")  # sitesPercent 50 is due, and waits
    first_other = [s for s in site_order(ranked(order_for(model(rollout={"steps": STEPS}).spec.rollout, None),
                                                NODES)) if s != "oslo"][0]
    assert walk.status.class_state("x86").waiting_for_window and walk.canary() == names_at("oslo")
    assert {n.name for s in waiting.stage for n in s.nodes} == names_at(first_other)  # by rank: the next site
    walk.rollout["windows"] = open_now
    walk.step("2")
    assert walk.canary() == names_at("oslo", first_other)


def test_each_site_step_is_one_write_per_workload() -> None:
    walk = Walk()
    walk.step("1")
    for verdict in (None, "pass", "pass"):
        before = {w.name: w.annotations.get("edgewise.io/spec-hash") for w in walk.existing}
        result = walk.step("2", verdict=verdict)
        changed = [w.name for w in result.apply if before.get(w.name) != w.spec_hash]
        assert len(changed) <= 2, changed  # the canary's and the stable's affinity, whatever the fleet size


def test_make_before_break_gains_a_pinned_site_before_the_stable_lets_it_go() -> None:
    walk = Walk(switch="MakeBeforeBreak")
    walk.step("1")
    walk.step("2")
    assert walk.canary() == names_at("oslo")
    assert walk.stable() == names_at(*SITES, "")  # oslo runs both until the canary there is Ready
    walk.step("2")
    assert walk.stable() == names_at("berlin", "lyon", "")  # now the stable leaves oslo


def test_a_failing_site_rolls_the_class_back_and_the_stable_takes_the_site_back_first() -> None:
    walk = Walk(switch="MakeBeforeBreak")
    walk.step("1")
    walk.step("2")
    walk.step("2")
    walk.step("2", verdict="fail")
    state = walk.status.class_state("x86")
    assert state.state == "RolledBack" and state.canary_sites is None
    assert walk.stable() == names_at(*SITES, "")  # back everywhere before the canary goes
    assert walk.canary() == names_at("oslo")
    walk.step("2")
    assert walk.canary() == set()


def test_a_percent_only_rollout_keeps_the_bucket_order_and_no_placement_annotation() -> None:
    walk = Walk(steps=[{"percent": 50}, {"percent": 100}])
    walk.step("1")
    result = walk.step("2")
    state = walk.status.class_state("x86")
    assert state.order_label is None and state.sites is None
    for w in result.apply:
        assert "edgewise.io/placement" not in w.manifest["metadata"]["annotations"]
        keys = {e["key"] for t in w.manifest["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] for e in t["matchExpressions"]}
        assert not any(k.startswith("edgewise.io/site-rank-") for k in keys)
    assert state.bucket_threshold <= BUCKETS


# -- judging per site ----------------------------------------------------------------------------


def test_sites_with_enough_stable_pods_are_judged_alone_the_rest_against_the_fleet() -> None:
    site = {"c-oslo-1": "oslo", "c-oslo-2": "oslo", "c-lyon-1": "lyon", "s-oslo-1": "oslo", "s-oslo-2": "oslo",
            "s-lyon-1": "lyon", "s-berlin-1": "berlin", "s-berlin-2": "berlin"}
    canary = ["c-oslo-1", "c-oslo-2", "c-lyon-1"]
    stable = ["s-oslo-1", "s-oslo-2", "s-lyon-1", "s-berlin-1", "s-berlin-2"]
    groups = group_by_site(canary, stable, site.__getitem__, min_stable=2)
    by_sites = {g.sites: g for g in groups}
    assert by_sites[("oslo",)].baseline == "site"
    assert set(by_sites[("oslo",)].stable) == {"s-oslo-1", "s-oslo-2"}
    assert by_sites[("lyon",)].baseline == "fleet"  # one stable pod at lyon is too few
    # against every stable pod not already the baseline of another site: each pod is read once
    assert set(by_sites[("lyon",)].stable) == {"s-lyon-1", "s-berlin-1", "s-berlin-2"}
    measured = [p for g in groups for p in (*g.canary, *g.stable)]
    assert len(measured) == len(set(measured))


def test_one_failing_site_fails_the_class_and_names_the_site() -> None:
    groups = group_by_site(["a", "b"], ["sa1", "sa2", "sb1", "sb2"], lambda p: p[-2] if p[0] == "s" else p,
                           min_stable=2)
    assert [g.sites for g in groups] == sorted([("a",), ("b",)], key=lambda s: site_key(s[0]))
    verdicts = {("a",): Verdict(Outcome.PASS), ("b",): Verdict(Outcome.FAIL, ("error rate 9% (limit 1%)",))}
    verdict, sites = combine([(g, verdicts[g.sites]) for g in groups])
    assert verdict.outcome is Outcome.FAIL
    assert verdict.reasons == ("site b (site baseline) fail: error rate 9% (limit 1%)",)
    assert {s.site: s.outcome for s in sites} == {"a": Outcome.PASS, "b": Outcome.FAIL}
    waiting = {("a",): Verdict(Outcome.PASS), ("b",): Verdict(Outcome.INCONCLUSIVE, ("no traffic",))}
    assert combine([(g, waiting[g.sites]) for g in groups])[0].outcome is Outcome.INCONCLUSIVE
    assert combine([(g, Verdict(Outcome.PASS)) for g in groups])[0].outcome is Outcome.PASS
    assert combine([])[0].outcome is Outcome.INCONCLUSIVE


# -- status, kubectl, metrics ---------------------------------------------------------------------


def _in_flight() -> ClassRollout:
    order = order_for(model(rollout={"steps": STEPS}).spec.rollout, None)
    record = AnalysisRecord(time=iso(T0 + dt.timedelta(seconds=5)), outcome=Outcome.FAIL, message="fail",
                            sites=[SiteVerdict(site="oslo", outcome=Outcome.FAIL, baseline="fleet", message="x")])
    return ClassRollout(name="x86", canary_revision="r2", canary_version="2", percent=29, bucket_threshold=0,
                        order_label=order.label, site_label=ZONE, canary_sites=["oslo"], step_started_at=iso(T0),
                        last_analysis=record, last_analysis_at=record.time)


def test_site_progress_counts_nodes_canary_and_ready_per_site_canary_sites_first() -> None:
    down = {"oslo-0", "lyon-1"}
    nodes = [replace(n, ready=n.name not in down) for n in NODES]
    progress = site_progress(_in_flight(), nodes)
    assert progress[0].site == "oslo" and progress[0].canary_site
    got = {p.site: (p.nodes, p.canary_nodes, p.ready_nodes, p.verdict) for p in progress}
    assert got["oslo"] == (4, 4, 3, Outcome.FAIL)
    assert got["lyon"] == (4, 0, 3, None)
    assert got[""] == (2, 0, 2, None)
    assert site_progress(_in_flight().model_copy(update={"canary_revision": None}), nodes) == []


def test_kubectl_status_and_the_metrics_show_each_site() -> None:
    state = _in_flight()
    state = state.model_copy(update={"sites": site_progress(state, NODES)})
    status = EdgeModelStatus.model_validate({"rollout": {"revision": 2, "classes": [state.to_api()]}})
    obj = {"metadata": {"namespace": "vision", "name": "m"}, "spec": {"version": "2", "rollout": {"steps": STEPS}},
           "status": status.to_api()}
    text = render_status(obj)
    assert "SITE" in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("oslo"))
    assert line.split() == ["oslo", "*", "4", "4", "4", "fail"]
    series = model_series("vision", "m", "2", "10m", status)
    sites = {s.site: (s.nodes, s.canary_nodes) for s in series.classes[0].sites}
    assert sites["oslo"] == (4, 4) and sites["berlin"] == (4, 0)


# -- make-before-break of pinned sites, and orders that cannot be compared -----------------------


def test_make_before_break_moves_pinned_sites_gaining_slot_first() -> None:
    x = frozenset({"oslo"})
    target = Bounds(0, 0, canary_sites=x, stable_excluded=x)
    first = decide(MAKE_BEFORE_BREAK, target, Bounds(0, 0), canary_ok=True, stable_ok=True)
    assert first == Bounds(0, 0, canary_sites=x)  # the canary gains oslo; the stable still covers it
    assert decide(MAKE_BEFORE_BREAK, target, first, canary_ok=False, stable_ok=True) == first  # not Ready yet
    assert decide(MAKE_BEFORE_BREAK, target, first, canary_ok=True, stable_ok=True) == target
    # a rollback: the stable takes oslo back first, the canary lets it go once the stable is Ready there
    back = decide(MAKE_BEFORE_BREAK, Bounds(0, 0), target, canary_ok=True, stable_ok=True)
    assert back == Bounds(0, 0, canary_sites=x)
    assert decide(MAKE_BEFORE_BREAK, Bounds(0, 0), back, canary_ok=True, stable_ok=False) == back
    assert decide(MAKE_BEFORE_BREAK, Bounds(0, 0), back, canary_ok=True, stable_ok=True) == Bounds(0, 0)


def test_a_live_placement_in_another_order_moves_at_once_unless_it_covers_all_or_nothing() -> None:
    from edgewise.core.rollout.switch import MAKE_BEFORE_BREAK, Bounds, decide
    walk = Walk(switch="MakeBeforeBreak")
    walk.step("1")
    walk.step("2")  # placed by rank
    order = order_for(model(rollout={"steps": STEPS}).spec.rollout, None)
    canary = [w for w in walk.existing if w.name.endswith("-b")]
    stable = [w for w in walk.existing if w.name.endswith("-a")]
    assert not live_bounds(canary, stable, order).foreign
    live = live_bounds(canary, stable, BY_BUCKET)
    assert live.foreign  # the canary's range means nothing in bucket terms
    assert decide(MAKE_BEFORE_BREAK, Bounds(50, 50), live, True, True) == Bounds(50, 50)
    # a stable on every node is on every node in any order
    at_rest = Walk(switch="MakeBeforeBreak")
    at_rest.step("1")
    assert not live_bounds([], at_rest.existing, order).foreign


def test_a_spec_that_moves_to_site_steps_mid_rollout_places_the_step_again_by_site() -> None:
    walk = Walk(switch="Replace", steps=[{"percent": 50}, {"percent": 100}])
    walk.step("1")
    walk.step("2")
    assert walk.status.class_state("x86").order_label is None
    walk.rollout["steps"] = [{"sites": 1, "canarySites": ["oslo"]}, {"percent": 100}]
    walk.step("2")
    state = walk.status.class_state("x86")
    assert state.order_label == rank_label(ZONE) and state.canary_sites == ["oslo"]
    # the threshold starts again in the new order (the two cannot be compared): oslo, as the step says
    assert walk.canary() == names_at("oslo")
    assert walk.canary() | walk.stable() == names_at(*SITES, "") and not walk.canary() & walk.stable()


def test_a_canary_site_waiting_for_its_activation_window_is_staged_once() -> None:
    """Its nodes are asked to prefetch once (one Staged Event), not at every reconcile while the step waits."""
    walk = Walk()
    walk.rollout["windows"] = {"activation": [{"kind": "Allow", "schedule": "0 22 * * *", "duration": "2h",
                                               "timeZone": "UTC"}]}
    walk.step("1")
    first = walk.step("2")
    assert walk.status.class_state("x86").waiting_for_window and walk.canary() == set()
    assert {n.name for s in first.stage for n in s.nodes} == names_at("oslo")
    again = walk.step("2")
    assert walk.status.class_state("x86").waiting_for_window
    assert not again.stage, [n.name for s in again.stage for n in s.nodes]
