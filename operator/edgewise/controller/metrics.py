"""The operator's Prometheus metrics: recorded from what each reconcile computed, served on /metrics.

Per-model series are replaced as a whole on every reconcile of that model (a class that left the
profile, or a state the class is no longer in, disappears). docs/observability.md lists them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from edgewise.api.rollout_status import Outcome
from edgewise.controller.series import ModelSeries, write_labels

# Outcomes written down in advance (at 0), so a dashboard shows "none yet" rather than "no data".
OPTIMIZATION_RESULTS = ("Optimized", "OptimizationRejected", "DoesNotFit", "OptimizationFailed", "SourceUnavailable")
MODEL = ("namespace", "model")
CLASS = ("namespace", "model", "class")


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str], list[tuple[Gauge, tuple[str, ...]]]] = {}
        self.model_info = Gauge("edgewise_edgemodel_info", "1 per EdgeModel, with its phase, profile and version",
                                ["namespace", "name", "phase", "profile", "version"], registry=r)
        self.class_info = Gauge("edgewise_rollout_class_info", "1 per class of a model, with its rollout state",
                                [*CLASS, "state"], registry=r)
        self.canary_percent = Gauge("edgewise_rollout_canary_percent",
                                    "Percent of the class's nodes on the canary (0 without one)", CLASS, registry=r)
        self.status = Gauge("edgewise_rollout_status", "0 running, 1 succeeded, 2 failed or rolled back",
                            CLASS, registry=r)
        self.step_started = Gauge("edgewise_rollout_step_started_timestamp_seconds",
                                  "When the class's current canary step began (only while a canary is out)",
                                  CLASS, registry=r)
        self.deadline = Gauge("edgewise_rollout_progress_deadline_seconds", "spec.rollout.progressDeadline",
                              MODEL, registry=r)
        self.matched_nodes = Gauge("edgewise_class_matched_nodes", "Nodes of the class the model runs on",
                                   CLASS, registry=r)
        self.ready_pods = Gauge("edgewise_class_ready_pods", "Ready runtime pods of the class", CLASS, registry=r)
        # Labelled as the runtime pods' series are (the chart's PodMonitor relabelling), so a dashboard
        # joins their latency and errors to stable/canary: `* on (namespace, model, edgewise_class,
        # edgewise_revision) group_left (role, version) edgewise_rollout_revision_info`.
        self.revision_info = Gauge("edgewise_rollout_revision_info", "1 per revision a class runs, with its role "
                                   "(stable, canary) and version",
                                   ["namespace", "model", "edgewise_class", "edgewise_revision", "role", "version"],
                                   registry=r)
        self.site_nodes = Gauge("edgewise_rollout_site_nodes", "Nodes of the class at a site, while a canary placed "
                                "by sites is out", [*CLASS, "site"], registry=r)
        self.site_canary_nodes = Gauge("edgewise_rollout_site_canary_nodes", "Of those, nodes in the canary cohort",
                                       [*CLASS, "site"], registry=r)
        self.site_ready_nodes = Gauge("edgewise_rollout_site_ready_nodes", "Of those, nodes whose Ready condition "
                                      "is true", [*CLASS, "site"], registry=r)
        self.artifact_info = Gauge("edgewise_class_artifact_info", "1 per class with an optimized artifact, "
                                   "with its state", [*CLASS, "state"], registry=r)
        self.analyses = Counter("edgewise_analysis", "Canary measurements, by outcome",
                                [*CLASS, "outcome"], registry=r)
        self.rollbacks = Counter("edgewise_rollbacks", "Classes rolled back", CLASS, registry=r)
        self.reconcile_seconds = Histogram("edgewise_reconcile_duration_seconds", "Time to handle one queued key",
                                           ["kind"], registry=r)
        self.reconcile_errors = Counter("edgewise_reconcile_errors", "Reconciles that raised (retried later)",
                                        ["kind"], registry=r)
        self.writes = Counter("edgewise_kube_writes", "Requests that wrote to the Kubernetes API",
                              ["verb", "kind"], registry=r)
        self.requests = Counter("edgewise_kube_requests", "Every request the operator's Kubernetes client made, "
                                "reads included (kopf's own watches are not counted)", ["verb", "resource"],
                                registry=r)
        self.optimizations = Counter("edgewise_optimization_runs", "Optimization runs, by result", ["result"],
                                     registry=r)
        self.optimization_seconds = Histogram("edgewise_optimization_duration_seconds", "Time an optimization took",
                                              ["result"], buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
                                              registry=r)
        for result in OPTIMIZATION_RESULTS:
            self.optimizations.labels(result)
        self.queue_depth = Gauge("edgewise_workqueue_depth", "Keys waiting in the work queue", registry=r)
        self.queue_oldest = Gauge("edgewise_workqueue_oldest_item_age_seconds",
                                  "How long the oldest waiting key has waited", registry=r)

    # -- from the reconcile -----------------------------------------------------------------------

    def model(self, series: ModelSeries, analyses: list[tuple[str, str]], rollbacks: list[str]) -> None:
        ns, name = series.namespace, series.name
        with self._lock:
            self._forget(ns, name)
            known = self._known.setdefault((ns, name), [])

            def put(gauge: Gauge, labels: tuple[str, ...], value: float) -> None:
                gauge.labels(*labels).set(value)
                known.append((gauge, labels))

            put(self.model_info, (ns, name, series.phase, series.profile, series.version), 1)
            put(self.deadline, (ns, name), series.progress_deadline)
            for c in series.classes:
                where = (ns, name, c.name)
                put(self.class_info, (*where, c.state), 1)
                put(self.canary_percent, where, c.canary_percent)
                put(self.status, where, c.status)
                put(self.matched_nodes, where, c.matched_nodes)
                put(self.ready_pods, where, c.ready_pods)
                if c.step_started is not None:
                    put(self.step_started, where, c.step_started)
                if c.artifact_state:
                    put(self.artifact_info, (*where, c.artifact_state), 1)
                for role, revision, version in c.revisions:
                    put(self.revision_info, (*where, revision, role, version), 1)
                for site in c.sites:
                    put(self.site_nodes, (*where, site.site), site.nodes)
                    put(self.site_canary_nodes, (*where, site.site), site.canary_nodes)
                    put(self.site_ready_nodes, (*where, site.site), site.ready_nodes)
                self.rollbacks.labels(*where)  # exists at 0, so increase() sees the first rollback
                for verdict in Outcome:
                    self.analyses.labels(*where, verdict.value)
        for cls, outcome in analyses:
            self.analyses.labels(ns, name, cls, outcome).inc()
        for cls in rollbacks:
            self.rollbacks.labels(ns, name, cls).inc()

    def model_deleted(self, namespace: str, name: str) -> None:
        with self._lock:
            self._forget(namespace, name)

    def _forget(self, namespace: str, name: str) -> None:
        for gauge, labels in self._known.pop((namespace, name), []):
            try:
                gauge.remove(*labels)
            except KeyError:
                pass

    def wrote(self, counts: Mapping[str, int]) -> None:
        for key, n in counts.items():
            if n:
                self.writes.labels(*write_labels(key)).inc(n)

    def requested(self, verb: str, resource: str) -> None:
        self.requests.labels(verb, resource).inc()

    def optimization(self, result: str, seconds: float) -> None:
        self.optimizations.labels(result).inc()
        self.optimization_seconds.labels(result).observe(seconds)

    def watch_queue(self, depth: Callable[[], float], oldest_age: Callable[[], float]) -> None:
        """Read at scrape time: the queue itself stays free of metrics."""
        self.queue_depth.set_function(depth)
        self.queue_oldest.set_function(oldest_age)


def serve(metrics: OperatorMetrics, listen: str) -> Any:
    """Serve /metrics on host:port in a thread; the server (call .shutdown() to stop)."""
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "0.0.0.0", registry=metrics.registry)
    return server
