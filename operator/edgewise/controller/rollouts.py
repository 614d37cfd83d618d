"""The imperative side of rollouts: bucket labels, analysis measurements, artifact staging.

The decisions are in `edgewise.core.rollout_model`; this module only does the
I/O they need, bounded so its cost does not grow with the fleet: buckets are
labelled once per node, analysis reads a bounded sample of pods, staging
calls only the agents of the nodes a step is about to move.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client

from edgewise import contract
from edgewise.analysis.provider import (
    AnalysisProvider,
    AnalysisTarget,
    GoldenInputs,
    PodEndpoint,
    ProviderNotAllowed,
    make_provider,
    thresholds_from_spec,
)
from edgewise.api.model import Analysis
from edgewise.api.resources import EdgeModel
from edgewise.api.rollout_status import AnalysisRecord
from edgewise.api.settings import OperatorSettings
from edgewise.controller import local_files
from edgewise.controller.agent_credentials import AgentCredentials
from edgewise.controller.local_files import LocalFileRefused
from edgewise.core import names
from edgewise.core.analysis import Outcome, Verdict, judge
from edgewise.core.buckets import BUCKET_LABEL, bucket_of
from edgewise.core.durations import seconds
from edgewise.core.observed import NodeInfo, Workload
from edgewise.core.plan import ModelPlan
from edgewise.core.rollout import record
from edgewise.core.rollout_model import StageRequest
from edgewise.kube.convert import condition_true
from edgewise.shared.digest import DigestMismatch
from edgewise.shared.download import DownloadError, download_file

log = logging.getLogger("edgewise.rollouts")

STAGE_TIMEOUT = 3.0  # seconds per agent call; staging is best effort, a step never waits on a dead agent
STAGE_WORKERS = 16


def unlabelled(nodes: Sequence[NodeInfo]) -> list[NodeInfo]:
    return [n for n in nodes if n.labels.get(BUCKET_LABEL) != str(bucket_of(n.name))]


def label_buckets(api: client.ApiClient, nodes: Sequence[NodeInfo]) -> int:
    """Give every node its bucket label once; returns the number of writes."""
    core = client.CoreV1Api(api)
    writes = 0
    for node in unlabelled(nodes):
        try:
            core.patch_node(node.name, {"metadata": {"labels": {BUCKET_LABEL: str(bucket_of(node.name))}}})
            writes += 1
        except client.ApiException as err:
            if err.status != 404:
                raise
    return writes


class Rollouts:
    """Per-operator state for rollouts: analysis providers (they remember the last reading of each pod)."""

    def __init__(self, api: client.ApiClient, *, credentials: AgentCredentials | None = None,
                 settings: OperatorSettings | None = None) -> None:
        self.core = client.CoreV1Api(api)
        self.credentials = credentials
        self.settings = settings or OperatorSettings()
        self.providers: dict[str, AnalysisProvider] = {}
        self.golden_dir = Path(tempfile.mkdtemp(prefix="edgewise-golden-"))

    # -- analysis ----------------------------------------------------------------------------------

    def measure(self, model: EdgeModel, plan: ModelPlan, nodes: Sequence[NodeInfo], existing: Sequence[Workload],
                classes: Sequence[str], now: dt.datetime) -> dict[str, AnalysisRecord]:
        analysis = model.spec.rollout.analysis
        ns, name = model.metadata.namespace, model.metadata.name
        pods = self.core.list_namespaced_pod(
            ns, label_selector=f"{names.MODEL_LABEL}={name},{names.COMPONENT}={names.RUNTIME_COMPONENT}",
            _preload_content=False)
        items = json.loads(pods.data)["items"]
        node_ready = {n.name: n.ready for n in nodes}
        # A pod is on the side of the live DaemonSet that controls it: one of a DaemonSet already deleted
        # (a rolled-back canary, a promoted-away stable) can outlive it, unmarked until the garbage
        # collector gets to it, in the slot the next canary takes. Under OnDelete a live DaemonSet's pod
        # may carry an older revision label; it still serves that DaemonSet's nodes and counts.
        side = {w.uid: (w.labels.get(names.CLASS_LABEL), w.labels.get(names.SLOT_LABEL)) for w in existing}
        live = [p for p in items if _ip(p) and not p["metadata"].get("deletionTimestamp")]
        states = {c.name: c for c in (model.status.rollout.classes if model.status.rollout else None) or []}
        slo = {c.name: c for c in plan.profile.spec.classes} if plan.profile else {}
        out: dict[str, AnalysisRecord] = {}
        try:
            provider = self._provider(analysis)
            golden = self._golden(analysis)
        except (ProviderNotAllowed, LocalFileRefused, DownloadError, DigestMismatch, OSError) as err:
            # Nothing to measure with: every class waits, and says why in words that repeat nothing
            # a server or the disk said (the error itself goes to the operator's log).
            log.warning("analysis of %s/%s cannot start: %s", ns, name, err)
            refused = Verdict(outcome=Outcome.INCONCLUSIVE, reasons=(_why_not(err),))
            return {cls: record(refused, now, 0, 0, 0) for cls in classes}
        for cls in classes:
            state = states[cls]
            canary_slot = names.other_slot(state.stable_slot)
            canary = tuple(_endpoint(p, node_ready) for p in live if side.get(_owner(p)) == (cls, canary_slot))
            stable = tuple(_endpoint(p, node_ready) for p in live if side.get(_owner(p)) == (cls, state.stable_slot))
            hc = slo.get(cls)
            target = AnalysisTarget(
                model=name, class_name=cls, canary_revision=state.canary_revision or "",
                stable_revision=state.stable_revision or "", interval_s=seconds(analysis.interval),
                canary=canary, stable=stable, namespace=ns, served_model=name, golden=golden,
                thresholds=thresholds_from_spec(analysis, hc.slo.p95_latency_ms if hc and hc.slo else None),
                sample_size=analysis.sample_pods)
            try:
                measurement = asyncio.run(provider.measure(target))
                verdict = judge(measurement, target.thresholds)
                deferred = len(measurement.deferred)
            except Exception as err:  # noqa: BLE001 - a provider that is down makes no verdict
                log.warning("analysis of %s/%s class %s failed: %s", ns, name, cls, err)
                verdict = Verdict(outcome=Outcome.INCONCLUSIVE, reasons=(f"provider {provider.name}: {err}",))
                deferred = 0
            out[cls] = record(verdict, now, len(canary), len(stable), deferred)
            log.info("analysis %s/%s class %s: %s", ns, name, cls, out[cls].message)
        return out

    def _provider(self, analysis: Analysis) -> AnalysisProvider:
        key = f"{analysis.provider}:{analysis.prometheus.address if analysis.prometheus else ''}"
        if key not in self.providers:
            self.providers[key] = make_provider(analysis, self.settings.prometheus_addresses)
        return self.providers[key]

    def _golden(self, analysis: Analysis) -> GoldenInputs | None:
        spec = analysis.golden_inputs
        if spec is None:
            return None
        digest = spec.sha256 or ""
        path = self.golden_dir / f"{digest or hashlib.sha256(spec.uri.encode()).hexdigest()}.npz"
        local_files.check(spec.uri, self.settings.local_source_dirs)
        if not path.exists():
            download_file(spec.uri, path, digest)
        return GoldenInputs(path=str(path), min_cosine=spec.min_cosine)

    # -- staging -----------------------------------------------------------------------------------

    def stage(self, model: EdgeModel, requests: Sequence[StageRequest]) -> dict[str, tuple[int, int]]:
        """Ask the agents of the nodes a step will move to prefetch the canary artifact.

        Returns per class (staged, asked). Best effort and bounded in time: an agent that
        doesn't answer (a disconnected node) does not hold the step; the node's fetch
        init container gets the artifact itself when its pod starts.
        """
        out: dict[str, tuple[int, int]] = {}
        token = self.credentials.token() if self.credentials is not None and requests else None
        for req in requests:
            body = json.dumps({"uri": req.uri, "sha256": req.sha256, "model": model.metadata.name,
                               "namespace": model.metadata.namespace}).encode()
            with ThreadPoolExecutor(max_workers=min(STAGE_WORKERS, len(req.nodes) or 1)) as pool:
                results = list(pool.map(_prefetch, req.nodes, [body] * len(req.nodes), [token] * len(req.nodes)))
            out[req.class_name] = (sum(results), len(req.nodes))
        return out


def _why_not(err: Exception) -> str:
    if isinstance(err, ProviderNotAllowed | LocalFileRefused):
        return str(err)  # fixed words
    if isinstance(err, DigestMismatch):
        return "analysis: the goldenInputs file does not match its sha256"
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, urllib.error.HTTPError):
            return f"analysis: the goldenInputs file could not be fetched: HTTP {cause.code}"
        cause = cause.__cause__
    return "analysis: the goldenInputs file could not be fetched"


def _prefetch(node: NodeInfo, body: bytes, token: str | None) -> bool:
    if not node.address:
        return False
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"  # the agents stage only for the operator's user
    request = urllib.request.Request(contract.agent_url(node.address) + contract.AGENT_PREFETCH_PATH, data=body,
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=STAGE_TIMEOUT) as resp:  # noqa: S310 - node agent URL
            return 200 <= resp.status < 300
    except OSError:
        return False


def _owner(pod: dict[str, Any]) -> str:
    """The uid of the object controlling the pod (its DaemonSet), or ""."""
    refs = pod["metadata"].get("ownerReferences") or []
    return next((str(r.get("uid", "")) for r in refs if r.get("controller")), "")


def _ip(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("podIP") or "")


def _endpoint(pod: dict[str, Any], node_ready: dict[str, bool]) -> PodEndpoint:
    meta, status = pod["metadata"], pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    restarts = sum(int(c.get("restartCount") or 0) for c in containers)
    ready = condition_true(status, "Ready")
    reason = ""
    for c in containers:
        waiting = (c.get("state") or {}).get("waiting") or {}
        last = (c.get("lastState") or {}).get("terminated") or {}
        reason = waiting.get("reason") or last.get("reason") or reason
    node = (pod.get("spec") or {}).get("nodeName", "")
    return PodEndpoint(name=meta["name"], uid=meta["uid"], ip=_ip(pod), ready=ready, restarts=restarts, node=node,
                       node_ready=node_ready.get(node, True), reason=reason)
