"""What the operator's metrics say about one EdgeModel, computed from its status. Pure.

The reconcile already computes everything a dashboard needs (the status it writes, the
Writes it counted); these functions turn that into label sets and values, and nothing else.
Naming follows what users know from Argo Rollouts (`*_info` gauges of value 1 carrying the
state as a label) and Flagger (a 0/1/2 status, a canary weight).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgewise.api.rollout_status import ClassRollout, RolloutStatus
from edgewise.api.status import EdgeModelStatus
from edgewise.core.durations import parse_time, seconds

RUNNING, SUCCEEDED, FAILED = 0, 1, 2  # edgewise_rollout_status, as flagger_canary_status


@dataclass(frozen=True)
class SiteSeries:
    site: str
    nodes: int
    canary_nodes: int
    ready_nodes: int


@dataclass(frozen=True)
class ClassSeries:
    name: str
    state: str
    canary_percent: int
    status: int
    step_started: float | None  # epoch seconds, while a canary is in progress
    matched_nodes: int
    ready_pods: int
    artifact_state: str
    revisions: tuple[tuple[str, str, str], ...] = ()  # (role, revision, version): what runs, stable and canary
    sites: tuple[SiteSeries, ...] = ()  # while a canary placed by sites is out (status.rollout.classes[].sites)


@dataclass(frozen=True)
class ModelSeries:
    namespace: str
    name: str
    phase: str
    profile: str
    version: str
    progress_deadline: float
    classes: tuple[ClassSeries, ...]


def rollout_status(c: ClassRollout) -> int:
    """0 while a canary is out (or the class waits on one), 1 when stable, 2 failed or rolled back."""
    if c.state in ("RolledBack", "Degraded"):
        return FAILED
    if c.state == "Stable" and not c.canary_revision:
        return SUCCEEDED
    return RUNNING


def model_series(namespace: str, name: str, version: str, progress_deadline: str,
                 status: EdgeModelStatus) -> ModelSeries:
    rollout = {c.name: c for c in (status.rollout.classes if status.rollout else None) or []}
    summaries = {c.name: c for c in status.classes or []}
    classes = []
    for cls in sorted(set(rollout) | set(summaries)):
        r, s = rollout.get(cls), summaries.get(cls)
        started = parse_time(r.step_started_at) if r and r.canary_revision and r.step_started_at else None
        classes.append(ClassSeries(
            name=cls, state=r.state if r else "Stable",
            canary_percent=r.percent if r and r.canary_revision else 0,
            status=rollout_status(r) if r else SUCCEEDED,
            step_started=started.timestamp() if started else None,
            matched_nodes=s.matched_nodes if s else 0, ready_pods=s.ready_pods if s else 0,
            artifact_state=(s.artifact_state or "") if s else "", revisions=_revisions(r) if r else (),
            sites=tuple(SiteSeries(p.site, p.nodes, p.canary_nodes, p.ready_nodes)
                        for p in (r.sites if r and r.canary_revision and r.sites else []))))
    return ModelSeries(namespace=namespace, name=name, phase=status.phase or "Pending",
                       profile=status.profile or "", version=version,
                       progress_deadline=seconds(progress_deadline), classes=tuple(classes))


def _revisions(c: ClassRollout) -> tuple[tuple[str, str, str], ...]:
    """The stable and (while one is out) the canary revision, as the pods' edgewise.io/revision labels say."""
    out = []
    if c.stable_revision:
        out.append(("stable", c.stable_revision, c.stable_version or ""))
    if c.canary_revision:
        out.append(("canary", c.canary_revision, c.canary_version or ""))
    return tuple(out)


def new_analyses(old: RolloutStatus | None, new: RolloutStatus | None) -> list[tuple[str, str]]:
    """(class, outcome) of each measurement `new` records that `old` did not have."""
    before = {c.name: c.last_analysis_at for c in (old.classes if old else None) or []}
    return [(c.name, c.last_analysis.outcome.value) for c in (new.classes if new else None) or []
            if c.last_analysis is not None and c.last_analysis_at and c.last_analysis_at != before.get(c.name)]


def new_rollbacks(old: RolloutStatus | None, new: RolloutStatus | None) -> list[str]:
    """Classes that `new` shows rolled back and `old` did not."""
    before = {c.name: c.state for c in (old.classes if old else None) or []}
    return [c.name for c in (new.classes if new else None) or []
            if c.state == "RolledBack" and before.get(c.name) != "RolledBack"]


# Writes counts its requests under one key each (kube/writes.py); as (verb, kind) for the metric.
_WRITE_KEYS = {
    "created": ("create", "DaemonSet"), "updated": ("update", "DaemonSet"), "deleted": ("delete", "DaemonSet"),
    "secret-owned": ("patch", "Secret"), "bucket-label": ("patch", "Node"), "rank-label": ("patch", "Node"),
    "status": ("patch", "status"),
    "event": ("create", "Event"),
}
_VERBS = {"created": "create", "updated": "update", "deleted": "delete"}


def write_labels(key: str) -> tuple[str, str]:
    """A Writes count key as (verb, kind): "service-created" → ("create", "Service")."""
    if key in _WRITE_KEYS:
        return _WRITE_KEYS[key]
    kind, _, verbed = key.partition("-")
    if verbed in _VERBS:
        return _VERBS[verbed], kind.capitalize()
    return key, "unknown"
