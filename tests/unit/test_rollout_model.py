"""Model-level rollout decisions and placement: slots, bucket affinity, kept templates, policy, history."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

from planning_support import fleet, model, profile_of

from edgewise.api.commands import COMMAND_ANNOTATION, Command
from edgewise.api.rollout_status import AnalysisRecord
from edgewise.api.settings import OperatorSettings
from edgewise.core.durations import iso
from edgewise.core.observed import NodeInfo, Workload
from edgewise.core.plan import plan_model
from edgewise.core.rollout import Observed, advance
from edgewise.core.rollout.buckets import BUCKET_LABEL, bucket_of
from edgewise.core.rollout.switch import bucket_range

T0 = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
SETTINGS = OperatorSettings()
PROFILE = profile_of({"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"}, "runtime": "onnxruntime",
                      "precision": "fp32"},
                     {"name": "x86", "nodeSelector": {"kubernetes.io/arch": "amd64"}, "runtime": "onnxruntime",
                      "precision": "fp32"})
NODES = fleet(arm64_cpu=4, amd64_cpu=2)
ROLLOUT = {"steps": [{"percent": 50}, {"percent": 100}], "analysis": {"interval": "5s", "failureLimit": 0}}


def live(manifests: list[dict[str, Any]], ready: int = 10) -> list[Workload]:
    """Workloads as the apiserver would hold them after applying `manifests`."""
    return [Workload(name=m["metadata"]["name"], labels=dict(m["metadata"]["labels"]),
                     annotations=dict(m["metadata"]["annotations"]), uid=f"uid-{m['metadata']['name']}",
                     generation=1, observed_generation=1, desired=ready, ready=ready,
                     template=m["spec"]["template"]) for m in manifests]


def run(version: str, status: Any = None, existing: list[Workload] | None = None, at: float = 0,
        verdicts: dict[str, AnalysisRecord] | None = None, command: Command | None = None, **rollout: Any):
    m = model(version=version, profile_ref="p", rollout={**ROLLOUT, **rollout})
    if status is not None:
        m = m.model_copy(update={"status": m.status.model_copy(update={"rollout": status})})
    if command is not None:
        annotations = {COMMAND_ANNOTATION: command.to_annotation()}
        m = m.model_copy(update={"metadata": m.metadata.model_copy(update={"annotations": annotations})})
    existing = existing or []
    plan = plan_model(m, PROFILE, NODES, existing, SETTINGS)
    now = T0 + dt.timedelta(seconds=at)
    return advance(m, plan, Observed(NODES, existing), verdicts, now)


def by_name(result) -> dict[str, dict[str, Any]]:
    return {w.name: w.manifest for w in result.apply}


def buckets_of(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    terms = manifest["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return [e for t in terms for e in t["matchExpressions"] if e["key"] == BUCKET_LABEL]


def passed(at: float) -> AnalysisRecord:
    return AnalysisRecord(time=iso(T0 + dt.timedelta(seconds=at)), outcome="pass", message="pass")


def failed(at: float) -> AnalysisRecord:
    return AnalysisRecord(time=iso(T0 + dt.timedelta(seconds=at)), outcome="fail", message="p95 99 ms")


def _first() -> tuple[Any, list[Workload]]:
    first = run("1")
    return first, live([w.manifest for w in first.apply])


def test_first_revision_places_one_ondelete_workload_per_class_without_buckets() -> None:
    first, _ = _first()
    ds = by_name(first)
    assert sorted(ds) == ["defect-detector-arm-a", "defect-detector-x86-a"]
    for m in ds.values():
        assert m["spec"]["updateStrategy"] == {"type": "OnDelete"}
        assert buckets_of(m) == []
        assert m["spec"]["template"]["metadata"]["labels"]["edgewise.io/revision"]
    assert [(h.revision, h.outcome) for h in first.status.history] == [(1, "Succeeded")]


def test_a_replace_step_is_one_write_per_workload_and_keeps_the_stable_template() -> None:
    first, existing = _first()
    second = run("2", first.status, existing, switch="Replace")
    ds = by_name(second)
    assert sorted(ds) == ["defect-detector-arm-a", "defect-detector-arm-b", "defect-detector-x86-a",
                          "defect-detector-x86-b"]
    arm = second.status.class_state("arm")
    assert arm and arm.percent == 50
    t = arm.bucket_threshold
    arm_buckets = [bucket_of(n.name) for n in NODES if n.labels["kubernetes.io/arch"] == "arm64"]
    assert arm.canary_nodes == sum(b < t for b in arm_buckets) >= 2  # at least half (ties in a bucket go along)
    assert buckets_of(ds["defect-detector-arm-b"]) == [{"key": BUCKET_LABEL, "operator": "Lt", "values": [str(t)]}]
    assert buckets_of(ds["defect-detector-arm-a"]) == [{"key": BUCKET_LABEL, "operator": "Gt",
                                                          "values": [str(t - 1)]}]
    # The stable workload still runs version 1; the canary runs version 2.
    assert ds["defect-detector-arm-a"]["spec"]["template"]["metadata"]["labels"]["edgewise.io/version"] == "1"
    assert ds["defect-detector-arm-b"]["spec"]["template"]["metadata"]["labels"]["edgewise.io/version"] == "2"
    stable_before = existing[0].template["spec"]["containers"]  # type: ignore[index]
    assert ds["defect-detector-arm-a"]["spec"]["template"]["spec"]["containers"] == stable_before
    assert {s.class_name for s in second.stage} == {"arm", "x86"}
    stage = {s.class_name: len(s.nodes) for s in second.stage}
    assert stage == {"arm": arm.canary_nodes, "x86": 1}  # exactly the nodes the step moves
    assert [(h.revision, h.outcome) for h in second.status.history] == [(1, "Succeeded"), (2, "Progressing")]


def test_promotion_flips_the_slot_and_deletes_the_old_stable() -> None:
    first, existing = _first()
    second = run("2", first.status, existing, switch="Replace")
    existing = live([w.manifest for w in second.apply])
    verdicts = {"arm": passed(10), "x86": passed(10)}
    third = run("2", second.status, existing, at=10, verdicts=verdicts, switch="Replace")
    assert third.status.class_state("arm").percent == 100  # type: ignore[union-attr]
    existing = live([w.manifest for w in third.apply])
    fourth = run("2", third.status, existing, at=20, verdicts={"arm": passed(20), "x86": passed(20)},
                 switch="Replace")
    assert sorted(by_name(fourth)) == ["defect-detector-arm-b", "defect-detector-x86-b"]
    assert sorted(fourth.delete) == ["defect-detector-arm-a", "defect-detector-x86-a"]
    assert all(buckets_of(m) == [] for m in by_name(fourth).values())
    assert fourth.status.history[-1].outcome == "Succeeded"


def test_a_promotion_whose_status_was_not_written_is_finished_not_redeployed() -> None:
    """The operator died after deleting the old stable workloads and before writing the status that says so
    (found by tests/cluster/test_chaos.py): the next pass finishes the promotion in slot b. Starting over
    as if nothing served would put the new version in slot a and delete slot b: every pod replaced."""
    first, existing = _first()
    second = run("2", first.status, existing, switch="Replace")
    existing = live([w.manifest for w in second.apply])
    third = run("2", second.status, existing, at=10, verdicts={"arm": passed(10), "x86": passed(10)},
                switch="Replace")
    existing = live([w.manifest for w in third.apply])
    verdicts = {"arm": passed(20), "x86": passed(20)}
    fourth = run("2", third.status, existing, at=20, verdicts=verdicts, switch="Replace")
    written = live([w.manifest for w in fourth.apply])  # slot a deleted, slot b everywhere
    again = run("2", third.status, written, at=21, verdicts=verdicts, switch="Replace")  # third's status
    assert sorted(by_name(again)) == ["defect-detector-arm-b", "defect-detector-x86-b"]
    assert by_name(again) == by_name(fourth) and not again.delete
    assert [again.status.class_state(c).stable_slot for c in ("arm", "x86")] == ["b", "b"]  # type: ignore[union-attr]
    assert [(h.revision, h.outcome) for h in again.status.history] == [(1, "Succeeded"), (2, "Succeeded")]


def test_all_or_nothing_a_failure_in_the_same_pass_stops_the_other_class_from_promoting() -> None:
    first, existing = _first()
    second = run("2", first.status, existing, classPolicy="AllOrNothing",
                 steps=[{"percent": 100}])
    existing = live([w.manifest for w in second.apply])
    third = run("2", second.status, existing, at=10, verdicts={"arm": passed(10), "x86": failed(10)},
                classPolicy="AllOrNothing", steps=[{"percent": 100}])
    arm, x86 = third.status.class_state("arm"), third.status.class_state("x86")
    assert x86 and x86.state == "RolledBack"
    assert arm and arm.state == "RolledBack" and "AllOrNothing" in arm.message and arm.stable_version == "1"
    assert sorted(by_name(third)) == ["defect-detector-arm-a", "defect-detector-x86-a"]
    assert third.status.history[-1].outcome == "RolledBack"


def test_a_command_is_handled_once() -> None:
    first, existing = _first()
    second = run("2", first.status, existing)
    existing = live([w.manifest for w in second.apply])
    cmd = Command(verb="abort", id="c1")
    aborted = run("2", second.status, existing, at=5, command=cmd)
    assert aborted.status.last_command == "c1"
    assert all(c.state == "RolledBack" for c in aborted.status.classes or [])
    assert aborted.status.history[-1].outcome == "Aborted"
    # The same annotation seen again (e.g. after a restart) changes nothing.
    again = run("2", aborted.status, live([w.manifest for w in aborted.apply]), at=6, command=cmd)
    assert again.status == aborted.status


# --- make-before-break through the whole model, against a small DaemonSet controller --------------

ARCH = {"arm": "arm64", "x86": "amd64"}


def controller(result, before: list[Workload], not_ready: frozenset[str] = frozenset()) -> list[Workload]:
    """What the DaemonSet controller makes of `result`: a changed spec bumps the generation, each
    workload schedules the class's nodes in its bucket range, and its pods are ready unless named."""
    old = {w.name: w for w in before}
    out = []
    for wp in result.apply:
        m, prev = wp.manifest, old.get(wp.name)
        generation = (prev.generation if prev else 0) + (prev is None or prev.annotations.get(
            "edgewise.io/spec-hash") != wp.spec_hash)
        w = Workload(name=wp.name, labels=dict(m["metadata"]["labels"]), annotations=dict(m["metadata"]["annotations"]),
                     uid=f"uid-{wp.name}", generation=generation, observed_generation=generation,
                     template=m["spec"]["template"])
        lo, hi = bucket_range(w)
        desired = len(on(w, lo, hi))
        out.append(replace(w, desired=desired, ready=0 if wp.name in not_ready else desired))
    return out


def on(w: Workload, lo: int, hi: int) -> list[str]:
    arch = ARCH[w.labels["edgewise.io/class"]]
    return [n.name for n in NODES if n.labels["kubernetes.io/arch"] == arch and lo <= bucket_of(n.name) < hi]


def pods(existing: list[Workload]) -> dict[str, dict[str, bool]]:
    """node → {workload: its pod there is ready}."""
    out: dict[str, dict[str, bool]] = {n.name: {} for n in NODES}
    for w in existing:
        for node in on(w, *bucket_range(w)):
            out[node][w.name] = w.ready == w.desired
    return out


def writes(result, before: list[Workload]) -> int:
    old = {w.name: w.annotations.get("edgewise.io/spec-hash") for w in before}
    return sum(old.get(w.name) != w.spec_hash for w in result.apply) + len(result.delete)


def assert_make_before_break(before: list[Workload], after: list[Workload]) -> None:
    """A node loses a pod only when another pod of the model was ready on it before."""
    was, now = pods(before), pods(after)
    for node, had in was.items():
        for gone in set(had) - set(now[node]):
            assert any(ok for name, ok in had.items() if name != gone and name in now[node]), (node, had, now[node])


def test_make_before_break_walks_a_rollout_two_writes_per_step_and_never_empties_a_node() -> None:
    first = run("1")
    existing = controller(first, [])
    status, history = first.status, []
    waiting = frozenset({"defect-detector-arm-b", "defect-detector-x86-b"})
    for at, not_ready in ((0, waiting), (5, frozenset()), (6, frozenset()), (10, frozenset()),
                          (11, frozenset()), (20, frozenset()), (21, frozenset())):
        result = run("2", status, existing, at=at, verdicts={"arm": passed(at), "x86": passed(at)})
        after = controller(result, existing, not_ready)
        assert_make_before_break(existing, after)
        assert writes(result, existing) <= 2 * 2  # two classes: at most one write per slot and class
        arm = result.status.class_state("arm")
        assert arm is not None
        placed = by_name(result)
        ranges = [(n, [e["operator"] for e in buckets_of(m)]) for n, m in sorted(placed.items()) if "-arm-" in n]
        history.append((arm.percent, arm.stable_slot, ranges))
        assert arm.switch == "MakeBeforeBreak" and "no memory figure" in arm.switch_reason
        status, existing = result.status, after
    a, b = "defect-detector-arm-a", "defect-detector-arm-b"
    assert history == [
        (50, "a", [(a, []), (b, ["Lt"])]),        # the canary widens; the stable keeps every node
        (50, "a", [(a, []), (b, ["Lt"])]),        # canary pods not ready yet: nothing leaves
        (50, "a", [(a, ["Gt"]), (b, ["Lt"])]),    # ready: now the stable shrinks
        (100, "a", [(a, ["Gt"]), (b, ["Lt"])]),   # next step: the canary widens to every node
        (100, "a", [(a, ["Gt"]), (b, ["Lt"])]),   # the stable shrinks to nothing (Gt 99)
        (0, "b", [(b, [])]),                      # promotion: the slot flips, the old stable is deleted
        (0, "b", [(b, [])]),                      # at rest
    ]
    assert writes(run("2", status, existing, at=30), existing) == 0  # at rest: no write


def test_make_before_break_rollback_brings_the_stable_back_before_the_canary_leaves() -> None:
    first = run("1")
    existing = controller(first, [])
    second = run("2", first.status, existing)
    existing = controller(second, existing)
    third = run("2", second.status, existing, at=1)  # the stable shrinks: the step is in place
    existing = controller(third, existing)
    aborted = run("2", third.status, existing, at=2, command=Command(verb="abort", id="c1"))
    arm = aborted.status.class_state("arm")
    assert arm is not None and arm.state == "RolledBack" and arm.canary_revision is None
    ds = by_name(aborted)
    assert buckets_of(ds["defect-detector-arm-a"]) == [] and buckets_of(ds["defect-detector-arm-b"])
    assert not aborted.delete  # the canary stays until the stable pods are back
    assert ds["defect-detector-arm-b"]["spec"]["template"]["metadata"]["labels"]["edgewise.io/version"] == "2"
    slow = frozenset({"defect-detector-arm-a", "defect-detector-x86-a"})
    after = controller(aborted, existing, not_ready=slow)
    assert_make_before_break(existing, after)
    existing = after
    waiting = run("2", aborted.status, existing, at=3)
    assert not waiting.delete and writes(waiting, existing) == 0
    existing = controller(waiting, existing)
    done = run("2", waiting.status, existing, at=4)
    assert sorted(done.delete) == ["defect-detector-arm-b", "defect-detector-x86-b"]
    assert_make_before_break(existing, controller(done, existing))


def test_replace_mode_moves_both_slots_in_one_pass_as_before() -> None:
    first = run("1")
    existing = controller(first, [])
    second = run("2", first.status, existing, switch="Replace")
    arm = second.status.class_state("arm")
    assert arm is not None and arm.switch == "Replace" and "spec.rollout.switch is Replace" in arm.switch_reason
    ds = by_name(second)
    assert [e["operator"] for e in buckets_of(ds["defect-detector-arm-a"])] == ["Gt"]
    assert [e["operator"] for e in buckets_of(ds["defect-detector-arm-b"])] == ["Lt"]
    aborted = run("2", second.status, controller(second, existing), at=1, switch="Replace",
                  command=Command(verb="abort", id="c1"))
    assert sorted(aborted.delete) == ["defect-detector-arm-b", "defect-detector-x86-b"]


def test_a_new_version_waits_while_a_rolled_back_canary_drains_then_starts_fresh() -> None:
    first = run("1")
    existing = controller(first, [])
    second = run("2", first.status, existing)
    existing = controller(second, existing)
    third = run("2", second.status, existing, at=1)
    existing = controller(third, existing)
    aborted = run("2", third.status, existing, at=2, command=Command(verb="abort", id="c1"))
    slow = frozenset({"defect-detector-arm-a", "defect-detector-x86-a"})
    existing = controller(aborted, existing, not_ready=slow)  # the stable pods are not back yet
    newer = run("3", aborted.status, existing, at=3)
    arm = newer.status.class_state("arm")
    assert arm is not None and arm.canary_revision is None and "3 starts once" in arm.message
    canary = by_name(newer)["defect-detector-arm-b"]  # still version 2's pods, where they were
    assert canary["spec"]["template"]["metadata"]["labels"]["edgewise.io/version"] == "2"
    existing = controller(newer, existing)  # now they are
    drained = run("3", newer.status, existing, at=4)
    assert "defect-detector-arm-b" in drained.delete
    existing = controller(drained, existing)
    started = run("3", drained.status, existing, at=5)
    arm = started.status.class_state("arm")
    assert arm is not None and arm.canary_version == "3" and arm.percent == 50
    assert by_name(started)["defect-detector-arm-b"]["spec"]["template"]["metadata"]["labels"][
        "edgewise.io/version"] == "3"


def test_auto_replaces_a_class_whose_two_copies_do_not_fit_its_nodes() -> None:
    small = [NodeInfo(name=n.name, labels=n.labels, memory_mib=1024) for n in NODES]
    profile = profile_of({"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"}, "runtime": "onnxruntime",
                          "precision": "fp32", "resources": {"requests": {"memory": "768Mi"}}},
                         {"name": "x86", "nodeSelector": {"kubernetes.io/arch": "amd64"}, "runtime": "onnxruntime",
                          "precision": "fp32", "resources": {"requests": {"memory": "256Mi"}}})
    m = model(version="1", profile_ref="p", rollout=ROLLOUT)
    out = advance(m, plan_model(m, profile, small, [], SETTINGS), Observed(small, []), None, T0)
    arm, x86 = out.status.class_state("arm"), out.status.class_state("x86")
    assert arm is not None and arm.switch == "Replace" and "1536 MiB" in arm.switch_reason
    assert x86 is not None and x86.switch == "MakeBeforeBreak"


def test_what_advance_returns_is_final_the_planner_already_renders_ondelete_and_status_sees_the_placed_workloads(
) -> None:
    m = model(version="1", profile_ref="p", rollout=ROLLOUT)
    plan = plan_model(m, PROFILE, NODES, [], SETTINGS)
    assert {w.manifest["spec"]["updateStrategy"]["type"] for w in plan.workloads} == {"OnDelete"}
    first, existing = _first()
    second = run("2", first.status, existing, switch="Replace")
    assert second.plan.workloads == second.apply  # status compares the live objects with what is applied
    assert len(second.apply) == 4 and second.delete == ()


def _version(manifest: dict[str, Any]) -> str:
    return manifest["spec"]["template"]["metadata"]["labels"]["edgewise.io/version"]


def _canary_of_2_in_place(**rollout: Any) -> tuple[Any, list[Workload]]:
    first = run("1", **rollout)
    existing = controller(first, [])
    second = run("2", first.status, existing, **rollout)
    existing = controller(second, existing)
    third = run("2", second.status, existing, at=1, **rollout)
    return third, controller(third, existing)


def test_a_canary_superseded_in_flight_drains_to_stable_before_the_newer_one_takes_its_slot() -> None:
    # OnDelete: re-templating arm-b while version 2's pods run would leave them serving 2, measured as 3.
    third, existing = _canary_of_2_in_place()
    assert _version(by_name(third)["defect-detector-arm-b"]) == "2"
    newer = run("3", third.status, existing, at=2)
    arm = newer.status.class_state("arm")
    assert arm is not None and arm.canary_revision is None and arm.state == "Progressing"
    assert "3 starts once the previous canary's nodes are back on stable 1" in arm.message
    assert "CanarySuperseded" in [e.reason for e in newer.events]
    ds = by_name(newer)
    assert _version(ds["defect-detector-arm-b"]) == "2"  # untouched: its nodes first go back to stable
    assert buckets_of(ds["defect-detector-arm-a"]) == []  # the stable widens to every node
    assert [(h.version, h.outcome) for h in newer.status.history][-2:] == [("2", "Superseded"), ("3", "Progressing")]
    slow = frozenset({"defect-detector-arm-a", "defect-detector-x86-a"})
    after = controller(newer, existing, not_ready=slow)
    assert_make_before_break(existing, after)
    existing = after
    held = run("3", newer.status, existing, at=3)  # the stable pods are not Ready yet: the canary stays
    assert not held.delete and _version(by_name(held)["defect-detector-arm-b"]) == "2"
    assert held.status.class_state("arm").canary_revision is None  # type: ignore[union-attr]
    existing = controller(held, existing)
    drained = run("3", held.status, existing, at=4)
    assert sorted(drained.delete) == ["defect-detector-arm-b", "defect-detector-x86-b"]
    assert "defect-detector-arm-b" not in by_name(drained)
    assert drained.status.history[-1].outcome == "Progressing"  # 3 has not even started: not finished
    after = controller(drained, existing)
    assert_make_before_break(existing, after)
    started = run("3", drained.status, after, at=5)
    arm = started.status.class_state("arm")
    assert arm is not None and arm.canary_version == "3" and arm.percent == 50
    assert _version(by_name(started)["defect-detector-arm-b"]) == "3"  # a new DaemonSet in an empty slot


def test_in_replace_mode_a_superseded_canary_is_deleted_before_the_newer_one_is_created() -> None:
    third, existing = _canary_of_2_in_place(switch="Replace")
    newer = run("3", third.status, existing, at=2, switch="Replace")
    assert sorted(newer.delete) == ["defect-detector-arm-b", "defect-detector-x86-b"]
    assert "defect-detector-arm-b" not in by_name(newer)
    started = run("3", newer.status, controller(newer, existing), at=3, switch="Replace")
    assert _version(by_name(started)["defect-detector-arm-b"]) == "3"


def test_a_canary_daemonset_still_there_after_a_rollback_is_never_re_templated_for_the_next_version() -> None:
    # Replace mode: the rollback deletes the canary at once, so no switch is pending; if that deletion did
    # not happen (failed, not seen yet), the next version must still not be written over its pods.
    third, existing = _canary_of_2_in_place(switch="Replace")
    aborted = run("2", third.status, existing, at=2, switch="Replace", command=Command(verb="abort", id="c1"))
    assert "defect-detector-arm-b" in aborted.delete
    not_deleted = [w for w in existing if w.name.endswith("-b")] + [
        w for w in controller(aborted, existing) if w.name.endswith("-a")]
    newer = run("3", aborted.status, not_deleted, at=3, switch="Replace")
    arm = newer.status.class_state("arm")
    assert arm is not None and arm.canary_revision is None
    assert "slot b still has DaemonSet(s) defect-detector-arm-b" in arm.message
    assert "defect-detector-arm-b" not in by_name(newer) and "defect-detector-arm-b" in newer.delete
