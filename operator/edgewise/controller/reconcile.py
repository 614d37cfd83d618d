"""Reconcile one key: read → plan → rollout → apply → status. Blocking; runs in worker threads."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from edgewise.analysis.measure import CanaryAnalysis
from edgewise.api.profile import DeploymentProfileStatus, ProfileClassStatus
from edgewise.api.resources import API_VERSION, DeploymentProfile, EdgeModel
from edgewise.api.settings import OperatorSettings
from edgewise.api.status import EdgeModelStatus
from edgewise.controller.artifacts import ArtifactManager
from edgewise.controller.metrics import OperatorMetrics
from edgewise.controller.series import model_series, new_analyses, new_rollbacks
from edgewise.controller.source_trust import SourceTrust
from edgewise.core import address, status_writes
from edgewise.core.agent import agent_daemonset
from edgewise.core.class_artifact import ArtifactState, ClassArtifact
from edgewise.core.classify import Classification, classify
from edgewise.core.observed import NodeInfo, Workload
from edgewise.core.plan import ModelPlan, ResolvedProfile, plan_model
from edgewise.core.rollout import Observed, RolloutResult, advance, due_analyses, needs_pods
from edgewise.core.rollout.sites import site_label_of
from edgewise.core.status import compute_status
from edgewise.core.trust_gate import Gate, held_classes
from edgewise.kube import node_agents
from edgewise.kube.agent_credentials import AgentCredentials
from edgewise.kube.node_cache import NodeCache
from edgewise.kube.read import Reader
from edgewise.kube.writes import Writes
from edgewise.shared import tracing
from edgewise.shared.trust.statement import SourceSignature

log = logging.getLogger("edgewise.controller")


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Read:
    """What one reconcile of a model read before planning."""

    profile: ResolvedProfile | None
    nodes: list[NodeInfo]
    workloads: list[Workload]
    classification: Classification | None
    artifacts: dict[str, ClassArtifact]
    trust: Gate | None = None  # the source-trust verdict; None without a profile (nothing is planned then)


class Reconciler:
    def __init__(self, api: client.ApiClient, settings: OperatorSettings,
                 clock: Callable[[], datetime] = _utcnow, metrics: OperatorMetrics | None = None,
                 node_cache: NodeCache | None = None) -> None:
        self.api = api
        self.read = Reader(api, node_cache)
        self.settings = settings
        self.clock = clock
        self.totals: Counter[str] = Counter()  # every request that wrote, since start, by verb
        self.metrics = metrics or OperatorMetrics()
        self.agent_credentials = AgentCredentials(api, settings)
        self.analysis = CanaryAnalysis(
            settings, telemetry=lambda nodes: node_agents.telemetry(nodes, self.agent_credentials.token()))
        self.artifacts = (ArtifactManager(settings, api, on_finish=self.metrics.optimization)
                          if settings.artifact_dir else None)
        self.source_trust = SourceTrust(settings, self.read.config_map)
        self._lock = threading.Lock()
        # The status each model's reconciles compute, and since when (monotonic) they have computed it.
        self._computed: dict[tuple[str, str], tuple[dict[str, Any], float]] = {}

    def _account(self, writes: Writes) -> None:
        with self._lock:
            self.totals.update(writes.counts)
        self.metrics.wrote(writes.counts)

    def model(self, namespace: str, name: str) -> float | None:
        """Converge one EdgeModel; returns seconds until it should be looked at again, if ever."""
        with tracing.span("reconcile", {"edgewise.namespace": namespace, "edgewise.model": name}) as span:
            model = self.read.model(namespace, name)
            if model is None:
                span.set_attribute("edgewise.deleted", True)
                self.metrics.model_deleted(namespace, name)
                with self._lock:
                    self._computed.pop((namespace, name), None)
                return None  # deleted: owner references let the garbage collector remove its workloads
            span.set_attribute("edgewise.generation", model.metadata.generation or 0)
            write = Writes(self.api)  # one per reconcile, so concurrent workers count their own writes
            try:
                return self._model(model, write)
            finally:
                span.set_attribute("edgewise.writes", write.total)
                self._account(write)

    def _model(self, model: EdgeModel, write: Writes) -> float | None:
        """read → plan → rollout → apply → status."""
        now = self.clock()
        with tracing.span("read") as span:
            seen = self._read_model(model, write)
            span.set_attribute("edgewise.nodes", len(seen.nodes))
            span.set_attribute("edgewise.workloads", len(seen.workloads))
        if seen.profile is not None and model.spec.rollout.uses_sites():
            # Steps in sites place by a site-ordered rank label: written before the first step needs it,
            # once per node (core/rollout/sites.py).
            write.label_ranks(seen.nodes, site_label_of(model.spec.rollout, seen.profile.spec.site_label))
        ready = {c: a.artifact for c, a in seen.artifacts.items() if a.artifact is not None}
        with tracing.span("plan") as span:
            plan = plan_model(model, seen.profile, seen.nodes, seen.workloads, self.settings, artifacts=ready,
                              classification=seen.classification)
            span.set_attribute("edgewise.classes", len(plan.classes))
        with tracing.span("rollout") as span:
            rollout = self._measure_then_advance(model, plan, seen, now)
            span.set_attribute("edgewise.apply", len(rollout.apply))
            span.set_attribute("edgewise.delete", len(rollout.delete))
        ref = _involved(model)
        with tracing.span("apply") as span:
            self._stage(model, rollout, write, ref)
            observed = self._apply(model, rollout, seen.workloads, write, ref)
            where, taken = self._address(model, write, ref)
            span.set_attribute("edgewise.writes", write.total)
        with tracing.span("status") as span:
            result = compute_status(model, rollout.plan, observed, now, total_nodes=len(seen.nodes),
                                    rollout=rollout.status,
                                    artifacts=seen.artifacts,
                                    address=where, address_problem=taken, trust=seen.trust)
            settle = self._write_status(model, result.status.to_api(), write)
            self._record(model, result.status)
            for event in (*rollout.events, *result.events):
                write.event(ref, event.type, event.reason, event.message)
            span.set_attribute("edgewise.phase", result.status.phase or "")
            span.set_attribute("edgewise.ready", result.status.ready or "")
        log.info("reconciled edgemodel %s/%s: phase=%s ready=%s writes=%d%s", model.metadata.namespace,
                 model.metadata.name, result.status.phase, result.status.ready, write.total, _summary(plan))
        trust_retry = seen.trust.retry_after if seen.trust is not None else None
        return _requeue_after(result.requeue_after, rollout.requeue_after, settle, seen.artifacts, trust_retry)

    def _write_status(self, model: EdgeModel, new: dict[str, Any], write: Writes) -> float | None:
        """Patch the status when the change is worth a write (core/status_writes.py); if a write of moving
        counts was skipped, the seconds after which to look again."""
        key = (model.metadata.namespace, model.metadata.name)
        now = time.monotonic()
        with self._lock:
            seen = self._computed.get(key)
            since = seen[1] if seen is not None and seen[0] == new else now
            self._computed[key] = (new, since)
        current = model.status.to_api()
        if status_writes.worth_writing(current, new, now - since):
            write.patch_status(EdgeModel.PLURAL, *key, current, new)
            return None
        # Look again when these counts will have rested (at least a second on: requeues are coarse).
        return max(1.0, status_writes.SETTLE_SECONDS - (now - since)) if new != current else None

    def _record(self, model: EdgeModel, status: EdgeModelStatus) -> None:
        """The model's metrics, from the status just written (and the one it replaced)."""
        old, new = model.status.rollout, status.rollout
        self.metrics.model(model_series(model.metadata.namespace, model.metadata.name, model.spec.version,
                                        model.spec.rollout.progress_deadline, status),
                           new_analyses(old, new), new_rollbacks(old, new))

    def _read_model(self, model: EdgeModel, write: Writes) -> _Read:
        """Everything planning needs; resolving the artifacts may start an optimization Job (through `write`)."""
        profile = self.read.resolve_profile(model)
        nodes = self.read.nodes()
        classification = classify(profile.spec, nodes) if profile is not None else None
        trust = self.source_trust.verdict(model, profile) if profile is not None else None
        artifacts: dict[str, ClassArtifact] = {}
        # A refused source is not optimized either: no Job reads bytes the policy does not trust.
        if self.artifacts is not None and profile is not None and classification is not None and \
                (trust is None or trust.allowed):
            signed = SourceSignature(trust.signer, trust.bundle_sha256) \
                if trust is not None and trust.reason == "Signed" else None
            artifacts = self.artifacts.resolve(model, profile.spec, classification, write, signed)
        return _Read(profile=profile, nodes=nodes, workloads=self.read.workloads(model),
                     classification=classification, artifacts=artifacts, trust=trust)

    def _measure_then_advance(self, model: EdgeModel, plan: ModelPlan, seen: _Read, now: datetime) -> RolloutResult:
        """Measure the canaries whose analysis is due, then let the rollout decide everything else."""
        due = due_analyses(model, plan, now)
        # Pods are read only when analysis or the per-node rules (abort, nodeTimeout) need them, and once.
        pods = self.read.runtime_pods(model) if due or needs_pods(model) else None
        measurements = self.analysis.measure(model, plan, seen.nodes, seen.workloads, pods or [], due, now) \
            if due else {}
        observed = Observed(pods=pods,
            nodes=seen.nodes, workloads=seen.workloads, gpu_resource=self.settings.gpu_resource,
            # A refused source holds every class as a refused artifact does: what serves keeps serving.
            waiting_for_artifact=frozenset(c for c, a in seen.artifacts.items() if a.state is not ArtifactState.READY)
            | held_classes(seen.trust, (c.name for c in plan.classes)),
            peak_memory_mib={c: a.peak_memory_mib for c, a in seen.artifacts.items() if a.peak_memory_mib},
            bandwidth=self.settings.agent_bandwidth, agent_selector=self.settings.agent_node_selector,
            artifact_bytes={c: a.size_bytes for c, a in seen.artifacts.items() if a.size_bytes})
        return advance(model, plan, observed, measurements, now)

    def _stage(self, model: EdgeModel, rollout: RolloutResult, write: Writes, ref: dict[str, str]) -> None:
        """Ask the agents of the nodes a step moves to prefetch the canary artifact first."""
        if not rollout.stage:
            return
        staged = node_agents.prefetch(model.metadata.namespace, model.metadata.name, rollout.stage,
                                      self.agent_credentials.token())
        for cls, (ok, asked) in staged.items():
            write.event(ref, "Normal", "Staged", f"class {cls}: {ok}/{asked} node agent(s) prefetching the "
                                                 "canary artifact before the step")

    def _apply(self, model: EdgeModel, rollout: RolloutResult, existing: list[Workload], write: Writes,
               ref: dict[str, str]) -> dict[str, Workload]:
        """Apply and delete what the rollout decided; the model's workloads as they now are."""
        observed = {w.name: w for w in existing}
        for wp in rollout.apply:
            verb, obj = write.apply_daemonset(wp.manifest, observed.get(wp.name))
            observed[wp.name] = obj
            if verb != "unchanged":
                write.event(ref, "Normal", f"Workload{verb.capitalize()}",
                            f"{verb} DaemonSet {wp.name} for class {wp.class_name} ({len(wp.nodes)} node(s))")
        for stale in rollout.delete:
            gone = observed.pop(stale)
            if write.delete_daemonset(model.metadata.namespace, stale, gone.uid):
                write.event(ref, "Normal", "WorkloadDeleted", f"deleted DaemonSet {stale}: its class is no "
                            "longer in the profile, or its revision no longer serves any node")
        return observed

    def _address(self, model: EdgeModel, write: Writes, ref: dict[str, str]) -> tuple[str, str]:
        """The model's node-local Service, created once; (its address, or why there is none)."""
        manifest = address.model_service(model)
        current = self.read.service(model.metadata.namespace, manifest["metadata"]["name"])
        if current is not None and (taken := address.conflict(model, current.owner_uids)):
            return "", taken
        if write.apply_service(manifest, current) == "created":
            write.event(ref, "Normal", "AddressCreated", f"created Service {manifest['metadata']['name']}: "
                        f"applications reach the model on their own node at {address.address(model)}")
        return address.address(model), ""

    def buckets(self) -> None:
        """Label every node with its rollout bucket, once (see core/rollout/buckets.py)."""
        write = Writes(self.api)
        try:
            write.label_buckets(self.read.nodes())
        finally:
            self._account(write)

    def profile(self, namespace: str, name: str) -> list[str]:
        """Refresh a profile's node counts; return the models in its namespace that use it."""
        found = self.read.profile(namespace, name)
        users = [m.metadata.name for m in self.read.models(namespace) if m.spec.profile_ref == name]
        if found is None:
            return users
        classification = classify(found.spec, self.read.nodes())
        status = DeploymentProfileStatus(
            observed_generation=found.metadata.generation,
            classes=[ProfileClassStatus(name=c.name, nodes=len(c.nodes) + len(c.untolerated))
                     for c in classification.classes],
            unmatched_nodes=len(classification.unmatched),
            summary=" ".join(f"{c.name}={len(c.nodes) + len(c.untolerated)}" for c in classification.classes),
        )
        write = Writes(self.api)
        try:
            write.patch_status(DeploymentProfile.PLURAL, namespace, name, found.status.to_api(),
                               status.to_api())
        finally:
            self._account(write)
        return users

    def agent(self) -> None:
        """Make sure the node agent DaemonSet exists, as configured, in its namespace."""
        s = self.settings
        write = Writes(self.api)
        try:
            current = self.read.daemonset(s.agent_namespace, s.agent_name)
            verb, _ = write.apply_daemonset(agent_daemonset(s, self.agent_credentials.user()), current)
        except client.ApiException as err:
            if err.status == 404:  # the DaemonSet is applied, so only its namespace can be missing
                raise RuntimeError(
                    f"the node agent's namespace {s.agent_namespace!r} does not exist: create it with the "
                    "label pod-security.kubernetes.io/enforce=privileged (the chart does with "
                    "agent.createNamespace=true), or point EDGEWISE_AGENT_NAMESPACE at one that "
                    "exists") from err
            raise
        finally:
            self._account(write)
        if verb != "unchanged":
            log.info("%s node agent DaemonSet %s/%s", verb, s.agent_namespace, s.agent_name)


def _involved(model: EdgeModel) -> dict[str, str]:
    return {"apiVersion": API_VERSION, "kind": EdgeModel.KIND, "name": model.metadata.name,
            "namespace": model.metadata.namespace, "uid": model.metadata.uid}


def _summary(plan: ModelPlan) -> str:
    if plan.profile is None:
        return f" (profile missing; kept {len(plan.keep)})"
    return "".join(f" {c.name}={len(c.nodes)}" for c in plan.classes)


def _requeue_after(status: float | None, rollout: float | None, settle: float | None,
                   artifacts: dict[str, ClassArtifact], trust_retry: float | None = None) -> float | None:
    requeues = [r for r in (status, rollout, settle, trust_retry) if r is not None]
    if any(a.state is ArtifactState.OPTIMIZING for a in artifacts.values()):
        requeues.append(2.0)  # poll the optimization job
    requeues += [a.retry_in + 0.5 for a in artifacts.values() if a.retry_in is not None]
    return min(requeues) if requeues else None

