"""Measure the canaries whose analysis is due: one event loop per reconcile, classes one after another.

The controller hands over what it read (nodes, the model's DaemonSets and runtime pods); this
module picks each class's canary and stable pods, fetches the golden inputs, runs the provider and
judges the measurement (`edgewise.core.analysis.judge`). The cost is bounded by the provider's
sample size, not by the fleet.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from edgewise.analysis.factory import ProviderNotAllowed, make_provider
from edgewise.analysis.golden_file import fetch_golden, why_not
from edgewise.analysis.local_files import LocalFileRefused
from edgewise.analysis.provider import AnalysisProvider, AnalysisTarget, GoldenFile, PodEndpoint
from edgewise.api.model import Analysis
from edgewise.api.resources import EdgeModel
from edgewise.api.rollout_status import AnalysisRecord, Outcome
from edgewise.api.settings import OperatorSettings
from edgewise.core import names
from edgewise.core.analysis import (
    Measurement,
    NodeReading,
    PowerMeasurement,
    Thresholds,
    Verdict,
    judge,
    record,
    sample,
)
from edgewise.core.durations import seconds
from edgewise.core.observed import NodeInfo, RuntimePod, Workload
from edgewise.core.plan import ModelPlan
from edgewise.core.site_analysis import SiteGroup, combine, group_by_site
from edgewise.shared import tracing
from edgewise.shared.digest import DigestMismatch
from edgewise.shared.download import DownloadError

log = logging.getLogger("edgewise.analysis")

# Reads the power and temperature of the given nodes from their agents (the controller passes
# kube.node_agents.telemetry): one reading per node asked, unavailable ones with their reason.
TelemetryReader = Callable[[Sequence[NodeInfo]], Mapping[str, NodeReading]]


class CanaryAnalysis:
    """Per-operator analysis state: providers (they remember the last reading of each pod), golden files."""

    def __init__(self, settings: OperatorSettings | None = None, telemetry: TelemetryReader | None = None) -> None:
        self.settings = settings or OperatorSettings()
        self.providers: dict[str, AnalysisProvider] = {}
        self.golden_dir = Path(tempfile.mkdtemp(prefix="edgewise-golden-"))
        self.telemetry = telemetry

    def measure(self, model: EdgeModel, plan: ModelPlan, nodes: Sequence[NodeInfo], workloads: Sequence[Workload],
                pods: Sequence[RuntimePod], classes: Sequence[str], now: dt.datetime) -> dict[str, AnalysisRecord]:
        """An analysis record per class in `classes` (those whose analysis is due)."""
        analysis = model.spec.rollout.analysis
        where = f"{model.metadata.namespace}/{model.metadata.name}"
        try:
            provider = self._provider(analysis)
            golden = self._golden(analysis)
        except (ProviderNotAllowed, LocalFileRefused, DownloadError, DigestMismatch, OSError) as err:
            # Nothing to measure with: every class waits, and says why in words that repeat nothing
            # a server or the disk said (the error itself goes to the operator's log).
            log.warning("analysis of %s cannot start: %s", where, err)
            refused = Verdict(outcome=Outcome.INCONCLUSIVE,
                              reasons=(str(err) if isinstance(err, ProviderNotAllowed) else why_not(err),))
            return {cls: record(refused, now, 0, 0, 0) for cls in classes}
        by_class = {cls: _site_targets(_target(model, plan, nodes, workloads, pods, cls, golden), model, nodes)
                    for cls in classes}
        targets = [t for groups in by_class.values() for _, t in groups]
        results = iter(self._with_power(targets, asyncio.run(_measure_each(provider, targets)), nodes))
        out: dict[str, AnalysisRecord] = {}
        for cls, groups in by_class.items():
            judged = []
            for group, target in groups:
                result = next(results)
                if isinstance(result, Exception):  # a provider that is down makes no verdict
                    log.warning("analysis of %s class %s failed: %s", where, cls, result)
                    verdict = Verdict(outcome=Outcome.INCONCLUSIVE, reasons=(f"provider {provider.name}: {result}",))
                    deferred = 0
                else:
                    verdict, deferred = judge(result, target.thresholds), len(result.deferred)
                judged.append((group, target, verdict, deferred))
            out[cls] = _class_record(judged, now)
            log.info("analysis %s class %s: %s", where, cls, out[cls].message)
        return out

    def _with_power(self, targets: Sequence[AnalysisTarget], results: Sequence[Measurement | Exception],
                    nodes: Sequence[NodeInfo]) -> list[Measurement | Exception]:
        """Add the canary and stable nodes' power and temperature where a limit asks for them.

        A bounded sample of each side's nodes (as for pods), one call to their agents for all
        classes; nodes the agents could not read keep their reason, for the verdict to name.
        """
        wanted: dict[int, tuple[list[str], list[str]]] = {}
        for i, (target, result) in enumerate(zip(targets, results, strict=True)):
            if isinstance(result, Measurement) and target.thresholds.wants_power:
                wanted[i] = (_node_sample(target, "canary"), _node_sample(target, "stable"))
        if not wanted:
            return list(results)
        names = {n for canary, stable in wanted.values() for n in (*canary, *stable)}
        by_name = {n.name: n for n in nodes}
        readings: Mapping[str, NodeReading] = {}
        if self.telemetry is not None:
            readings = self.telemetry([by_name[n] for n in sorted(names) if n in by_name])
        out = list(results)
        for i, (canary, stable) in wanted.items():
            def read(node: str) -> NodeReading:
                if self.telemetry is None:
                    return NodeReading.unavailable(node, "this operator reads no node telemetry")
                return readings.get(node) or NodeReading.unavailable(node, "node not found")
            power = PowerMeasurement(canary=tuple(read(n) for n in canary), stable=tuple(read(n) for n in stable))
            result = out[i]
            assert isinstance(result, Measurement)
            out[i] = dataclasses.replace(result, power=power)
        return out

    def _provider(self, analysis: Analysis) -> AnalysisProvider:
        key = f"{analysis.provider}:{analysis.prometheus.address if analysis.prometheus else ''}"
        if key not in self.providers:
            self.providers[key] = make_provider(analysis, self.settings.prometheus_addresses)
        return self.providers[key]

    def _golden(self, analysis: Analysis) -> GoldenFile | None:
        if analysis.golden_inputs is None:
            return None
        return fetch_golden(analysis.golden_inputs, self.golden_dir, self.settings.local_source_dirs)


async def _measure_each(provider: AnalysisProvider, targets: Sequence[AnalysisTarget]
                        ) -> list[Measurement | Exception]:
    out: list[Measurement | Exception] = []
    for target in targets:
        with tracing.span("analysis.measure", _span_attributes(provider, target)) as span:
            try:
                got = await provider.measure(target)
            except Exception as err:  # noqa: BLE001 - reported per class as an inconclusive interval
                span.set_attribute("edgewise.error", f"{type(err).__name__}: {err}")
                out.append(err)
                continue
            span.set_attribute("edgewise.deferred_pods", len(got.deferred))
            if got.seconds is not None:
                span.set_attribute("edgewise.window_seconds", got.seconds)
            out.append(got)
    return out


def _span_attributes(provider: AnalysisProvider, target: AnalysisTarget) -> dict[str, str | int]:
    return {"edgewise.namespace": target.namespace, "edgewise.model": target.model,
            "edgewise.class": target.class_name, "edgewise.provider": provider.name,
            "edgewise.canary_revision": target.canary_revision, "edgewise.stable_revision": target.stable_revision,
            "edgewise.canary_pods": len(target.canary), "edgewise.stable_pods": len(target.stable)}


def _site_targets(target: AnalysisTarget, model: EdgeModel, nodes: Sequence[NodeInfo]
                  ) -> list[tuple[SiteGroup[PodEndpoint] | None, AnalysisTarget]]:
    """The class's target as it is, or, for a rollout placed by sites, one target per site group
    (core/site_analysis.py decides the groups)."""
    state = model.status.rollout.class_state(target.class_name) if model.status.rollout else None
    if state is None or not state.site_label:
        return [(None, target)]
    label = state.site_label
    site = {n.name: n.labels.get(label, "") for n in nodes}
    groups = group_by_site(target.canary, target.stable, lambda p: site.get(p.node, ""))
    if not groups:  # no canary pod anywhere yet: measure as one class, which says so
        return [(None, target)]
    return [(g, replace(target, canary=g.canary, stable=g.stable)) for g in groups]


def _class_record(judged: Sequence[tuple[SiteGroup[PodEndpoint] | None, AnalysisTarget, Verdict, int]],
                  now: dt.datetime) -> AnalysisRecord:
    canary = sum(len(t.canary) for _, t, _, _ in judged)
    stable = len({p.uid for _, t, _, _ in judged for p in t.stable})
    deferred = sum(d for _, _, _, d in judged)
    if len(judged) == 1 and judged[0][0] is None:
        return record(judged[0][2], now, canary, stable, deferred)
    verdict, sites = combine([(g, v) for g, _, v, _ in judged if g is not None])
    return record(verdict, now, canary, stable, deferred).model_copy(update={"sites": sites or None})


def _target(model: EdgeModel, plan: ModelPlan, nodes: Sequence[NodeInfo], workloads: Sequence[Workload],
            pods: Sequence[RuntimePod], cls: str, golden: GoldenFile | None) -> AnalysisTarget:
    analysis = model.spec.rollout.analysis
    state = model.status.rollout.class_state(cls) if model.status.rollout else None
    assert state is not None  # only classes with a rollout state are due
    node_ready = {n.name: n.ready for n in nodes}
    # A pod is on the side of the live DaemonSet that controls it: one of a DaemonSet already deleted
    # (a rolled-back canary, a promoted-away stable) can outlive it, unmarked until the garbage
    # collector gets to it, in the slot the next canary takes. Under OnDelete a live DaemonSet's pod
    # may carry an older revision label: on the stable side it still serves that DaemonSet's nodes and
    # counts; on the canary side it is not the canary (a slot re-templated while its old pods ran), so
    # judging the canary by it would blame the new version for the old one's answers.
    side = {w.uid: (w.labels.get(names.CLASS_LABEL), w.labels.get(names.SLOT_LABEL)) for w in workloads}
    live = [p for p in pods if p.ip and not p.terminating]

    def cohort(slot: str, revision: str = "") -> tuple[PodEndpoint, ...]:
        return tuple(_endpoint(p, node_ready) for p in live if side.get(p.owner_uid) == (cls, slot)
                     and (not revision or p.revision == revision))

    hardware = next((hc for hc in plan.profile.spec.classes if hc.name == cls), None) if plan.profile else None
    slo_p95 = hardware.slo.p95_latency_ms if hardware and hardware.slo else None
    slo_watts = hardware.slo.max_power_watts if hardware and hardware.slo else None
    return AnalysisTarget(
        model=model.metadata.name, class_name=cls, canary_revision=state.canary_revision or "",
        stable_revision=state.stable_revision or "", interval_s=seconds(analysis.interval),
        canary=cohort(names.other_slot(state.stable_slot), state.canary_revision or ""),
        stable=cohort(state.stable_slot),
        namespace=model.metadata.namespace, served_model=model.metadata.name, golden=golden,
        thresholds=Thresholds.from_spec(analysis, slo_p95, slo_max_power_watts=slo_watts),
        sample_size=analysis.sample_pods)


def _node_sample(target: AnalysisTarget, side: str) -> list[str]:
    """At most `sample_size` nodes of one side, on reachable nodes (a NotReady node's agent is not asked)."""
    pods = target.canary if side == "canary" else target.stable
    nodes = sorted({p.node for p in pods if p.node and p.node_ready})
    return sample(nodes, target.sample_size, f"{target.key}/{side}/nodes")


def _endpoint(pod: RuntimePod, node_ready: dict[str, bool]) -> PodEndpoint:
    return PodEndpoint(name=pod.name, uid=pod.uid, ip=pod.ip, ready=pod.ready, restarts=pod.restarts, node=pod.node,
                       node_ready=node_ready.get(pod.node, True), reason=pod.reason)
