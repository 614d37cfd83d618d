"""Reconcile one key: read → plan → apply → status. Blocking; runs in worker threads."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from kubernetes import client

from edgewise.api.profile import DeploymentProfileStatus, ProfileClassStatus
from edgewise.api.resources import API_VERSION, DeploymentProfile, EdgeModel
from edgewise.api.settings import OperatorSettings
from edgewise.core.agent import agent_daemonset
from edgewise.core.classify import classify
from edgewise.core.plan import ModelPlan, plan_model
from edgewise.core.status import compute_status
from edgewise.kube.read import Reader
from edgewise.kube.writes import Writes

log = logging.getLogger("edgewise.controller")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Reconciler:
    def __init__(self, api: client.ApiClient, settings: OperatorSettings,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self.api = api
        self.read = Reader(api)
        self.settings = settings
        self.clock = clock
        self.totals: Counter[str] = Counter()  # every request that wrote, since start, by verb
        self._lock = threading.Lock()

    def _account(self, writes: Writes) -> None:
        with self._lock:
            self.totals.update(writes.counts)

    def model(self, namespace: str, name: str) -> float | None:
        """Converge one EdgeModel; returns seconds until it should be looked at again, if ever."""
        model = self.read.model(namespace, name)
        if model is None:
            return None  # deleted: owner references let the garbage collector remove its workloads
        write = Writes(self.api)  # one per reconcile, so concurrent workers count their own writes
        try:
            return self._model(model, write)
        finally:
            self._account(write)

    def _model(self, model: EdgeModel, write: Writes) -> float | None:
        namespace, name = model.metadata.namespace, model.metadata.name
        profile = self.read.resolve_profile(model)
        nodes = self.read.nodes()
        existing = self.read.workloads(model)
        plan = plan_model(model, profile, nodes, existing, self.settings)
        observed = {w.name: w for w in existing}
        ref = _involved(model)
        for wp in plan.workloads:
            verb, obj = write.apply_daemonset(wp.manifest, observed.get(wp.name))
            observed[wp.name] = obj
            if verb != "unchanged":
                write.event(ref, "Normal", f"Workload{verb.capitalize()}",
                            f"{verb} DaemonSet {wp.name} for class {wp.class_name} ({len(wp.nodes)} node(s))")
        for stale in plan.delete:
            gone = observed.pop(stale)
            if write.delete_daemonset(namespace, stale, gone.uid):
                write.event(ref, "Normal", "WorkloadDeleted", f"deleted DaemonSet {stale}: its class is no "
                            "longer in the profile or can no longer match a node")
        result = compute_status(model, plan, observed, self.clock(), total_nodes=len(nodes))
        write.patch_status(EdgeModel.PLURAL, namespace, name, model.status.to_api(), result.status.to_api())
        for event in result.events:
            write.event(ref, event.type, event.reason, event.message)
        log.info("reconciled edgemodel %s/%s: phase=%s ready=%s writes=%d%s", namespace, name,
                 result.status.phase, result.status.ready, write.total, _summary(plan))
        return result.requeue_after

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
        """Make sure the node agent DaemonSet exists, as configured, in the operator's namespace."""
        s = self.settings
        write = Writes(self.api)
        try:
            current = self.read.daemonset(s.namespace, s.agent_name)
            verb, _ = write.apply_daemonset(agent_daemonset(s), current)
        finally:
            self._account(write)
        if verb != "unchanged":
            log.info("%s node agent DaemonSet %s/%s", verb, s.namespace, s.agent_name)


def _involved(model: EdgeModel) -> dict[str, str]:
    return {"apiVersion": API_VERSION, "kind": EdgeModel.KIND, "name": model.metadata.name,
            "namespace": model.metadata.namespace, "uid": model.metadata.uid}


def _summary(plan: ModelPlan) -> str:
    if plan.profile is None:
        return f" (profile missing; kept {len(plan.keep)})"
    return "".join(f" {c.name}={len(c.nodes)}" for c in plan.classes)
