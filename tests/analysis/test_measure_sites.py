"""Per-site judging in the shell: a rollout placed by sites measures each site's canary pods against the
stable pods at the same site (or, too few there, with the other such sites against the rest), each pod
once, and a failing site fails the class with the site named."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

from edgewise.analysis.measure import CanaryAnalysis
from edgewise.analysis.provider import AnalysisTarget
from edgewise.api.resources import EdgeModel
from edgewise.api.rollout_status import AnalysisRecord
from edgewise.api.settings import OperatorSettings
from edgewise.core import names
from edgewise.core.analysis import CohortMetrics, Measurement
from edgewise.core.observed import NodeInfo, RuntimePod, Workload

CLS = "cpu"
ZONE = "topology.kubernetes.io/zone"
# node → site; canary pods at oslo (2 stable there) and lyon (1 stable there), stable elsewhere
SITE = {"c-oslo": "oslo", "c-lyon": "lyon", "s-oslo-1": "oslo", "s-oslo-2": "oslo", "s-lyon": "lyon",
        "s-berlin-1": "berlin", "s-berlin-2": "berlin", "s-lone": ""}


def _healthy(pods: int, error_rate: float = 0.0) -> CohortMetrics:
    return CohortMetrics(pods=pods, requests=1000.0 * pods, request_rate=10.0 * pods, error_rate=error_rate,
                         p95_latency_ms=5.0, mean_latency_ms=4.0, ready_ratio=1.0)


class _BadAtLyon:
    """A provider whose canary pods at lyon fail every request; it records what it was asked to read."""

    name = "fake"

    def __init__(self) -> None:
        self.targets: list[AnalysisTarget] = []

    async def measure(self, target: AnalysisTarget) -> Measurement:
        self.targets.append(target)
        bad = any(SITE[p.node] == "lyon" for p in target.canary)
        return Measurement(canary=_healthy(len(target.canary), 0.5 if bad else 0.0),
                           stable=_healthy(len(target.stable)))


def _pod(node: str, slot: str, revision: str) -> RuntimePod:
    return RuntimePod(name=f"pod-{node}", uid=f"uid-{node}", ip="10.0.0.1", node=node, owner_uid=f"ds-{slot}",
                      revision=revision, ready=True)


def _measure(state: dict[str, Any]) -> tuple[_BadAtLyon, AnalysisRecord]:
    """One analysis interval of class CLS in `state`, every SITE node with a pod (c-* canary, the rest stable)."""
    m = EdgeModel.model_validate({
        "apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel",
        "metadata": {"name": "m", "namespace": "vision", "uid": "uid-m"},
        "spec": {"version": "2", "source": {"uri": "https://models.example.com/m.onnx", "sha256": "0" * 64}},
        "status": {"rollout": {"classes": [state]}}})
    nodes = [NodeInfo(name=n, labels={ZONE: s} if s else {}) for n, s in SITE.items()]
    pods = [_pod(n, "b" if n.startswith("c-") else "a", "r2" if n.startswith("c-") else "r1") for n in SITE]
    workloads = [Workload(name=f"m-{CLS}-{slot}", uid=f"ds-{slot}",
                          labels={names.CLASS_LABEL: CLS, names.SLOT_LABEL: slot}) for slot in "ab"]
    analysis = CanaryAnalysis(OperatorSettings())
    provider = _BadAtLyon()
    analysis._provider = lambda analysis: provider  # type: ignore[method-assign]
    got = analysis.measure(m, SimpleNamespace(profile=None), nodes, workloads, pods,  # type: ignore[arg-type]
                           [CLS], dt.datetime(2026, 1, 1, tzinfo=dt.UTC))[CLS]
    return provider, got


def test_each_site_is_judged_and_a_failing_one_fails_the_class() -> None:
    provider, got = _measure({"name": CLS, "stableSlot": "a", "stableRevision": "r1", "canaryRevision": "r2",
                              "percent": 25, "orderLabel": "edgewise.io/site-rank-x", "siteLabel": ZONE,
                              "canarySites": ["oslo"]})

    groups = {tuple(sorted(p.node for p in t.canary)): sorted(p.node for p in t.stable) for t in provider.targets}
    assert groups == {("c-oslo",): ["s-oslo-1", "s-oslo-2"],  # oslo against oslo
                      ("c-lyon",): ["s-berlin-1", "s-berlin-2", "s-lone", "s-lyon"]}  # lyon has one: the rest
    read = [p.uid for t in provider.targets for p in (*t.canary, *t.stable)]
    assert len(read) == len(set(read))  # each pod once per interval
    assert got.outcome == "fail" and "site lyon (fleet baseline) fail" in got.message
    assert {s.site: (s.outcome, s.baseline) for s in got.sites or []} == {
        "oslo": ("pass", "site"), "lyon": ("fail", "fleet")}
    assert got.canary_pods == 2 and got.stable_pods == 6


def test_a_rollout_not_placed_by_sites_is_measured_as_one_class() -> None:
    provider, got = _measure({"name": CLS, "stableSlot": "a", "stableRevision": "r1", "canaryRevision": "r2",
                              "percent": 25})
    assert len(provider.targets) == 1 and got.sites is None
    assert got.outcome == "fail"  # the class's canary includes lyon's pod
