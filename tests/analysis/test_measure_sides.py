"""Which pods analysis measures as a class's canary and stable: those of the live DaemonSet of each slot,
and on the canary side only those of the canary's revision.

A DaemonSet the operator deleted (Background propagation) leaves its pods behind, not yet marked for
deletion, until the garbage collector gets to them; they must not stand in for the next canary.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

from edgewise.analysis.measure import CanaryAnalysis
from edgewise.analysis.provider import AnalysisTarget
from edgewise.api.resources import EdgeModel
from edgewise.api.settings import OperatorSettings
from edgewise.core import names
from edgewise.core.observed import Workload
from edgewise.kube.convert import runtime_pod

CLS = "cpu"


def _pod(name: str, owner: str, slot: str, revision: str, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name, "uid": f"uid-{name}",
        "labels": {names.CLASS_LABEL: CLS, names.SLOT_LABEL: slot, names.REVISION_LABEL: revision},
        "ownerReferences": [{"kind": "DaemonSet", "name": f"m-{CLS}-{slot}", "uid": owner, "controller": True}]}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"nodeName": f"node-{name}"},
            "status": {"podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}}


def _ds(uid: str, slot: str) -> Workload:
    return Workload(name=f"m-{CLS}-{slot}", uid=uid, labels={names.CLASS_LABEL: CLS, names.SLOT_LABEL: slot})


class _Seen:
    name = "fake"

    def __init__(self) -> None:
        self.targets: list[AnalysisTarget] = []

    async def measure(self, target: AnalysisTarget) -> Any:
        self.targets.append(target)
        raise RuntimeError("only the target is looked at")


def _measure(pods: list[dict[str, Any]], existing: list[Workload]) -> AnalysisTarget:
    m = EdgeModel.model_validate({
        "apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel",
        "metadata": {"name": "m", "namespace": "vision", "uid": "uid-m"},
        "spec": {"version": "3", "source": {"uri": "https://models.example.com/m.onnx", "sha256": "0" * 64}},
        "status": {"rollout": {"classes": [{"name": CLS, "stableSlot": "a", "stableRevision": "r1",
                                            "canaryRevision": "r3", "percent": 10}]}}})
    analysis = CanaryAnalysis(OperatorSettings())
    seen = _Seen()
    analysis._provider = lambda analysis: seen  # type: ignore[method-assign]
    analysis.measure(m, SimpleNamespace(profile=None), [], existing, [runtime_pod(p) for p in pods],  # type: ignore[arg-type]
                     [CLS], dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    (target,) = seen.targets
    return target


def test_pods_of_a_deleted_daemonset_are_not_the_canary() -> None:
    # The rolled-back canary r2 was in slot b (DaemonSet uid old-b); the canary r3 now has slot b (new-b).
    pods = [_pod("stable", "ds-a", "a", "r1"), _pod("orphan", "old-b", "b", "r2"),
            _pod("canary", "new-b", "b", "r3"), _pod("going", "new-b", "b", "r3", deleting=True)]
    target = _measure(pods, [_ds("ds-a", "a"), _ds("new-b", "b")])
    assert [p.name for p in target.canary] == ["canary"]
    assert [p.name for p in target.stable] == ["stable"]


def test_a_canary_slot_pod_of_another_revision_is_not_the_canary() -> None:
    # OnDelete: a pod the canary slot's DaemonSet made from an older template (r2) keeps running it when
    # the template becomes r3's; judging r3 by its answers would blame r3 for r2 (or pass r2 as r3).
    pods = [_pod("stable", "ds-a", "a", "r1"), _pod("early", "ds-b", "b", "r2"), _pod("canary", "ds-b", "b", "r3")]
    target = _measure(pods, [_ds("ds-a", "a"), _ds("ds-b", "b")])
    assert [p.name for p in target.canary] == ["canary"]
    assert [p.name for p in target.stable] == ["stable"]


def test_a_stable_slot_pod_counts_whatever_its_revision_label() -> None:
    # The stable side serves its DaemonSet's nodes with whatever template its pods were made from.
    pods = [_pod("stable", "ds-a", "a", "r1"), _pod("older", "ds-a", "a", "r0"), _pod("canary", "ds-b", "b", "r3")]
    target = _measure(pods, [_ds("ds-a", "a"), _ds("ds-b", "b")])
    assert sorted(p.name for p in target.stable) == ["older", "stable"]
    assert [p.name for p in target.canary] == ["canary"]
