"""The chart's monitoring objects: the metrics Service, monitors, the dashboard and the alerts."""

from __future__ import annotations

import json
from typing import Any

import yaml
from chart_support import ALL_OPTIONS, CHART, Helm, one, operator_pod

MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def _named(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_by_default_metrics_are_served_behind_a_service_and_nothing_needs_the_prometheus_operator(
        helm: Helm) -> None:
    docs = helm.template()
    assert not MONITORING_KINDS & {d["kind"] for d in docs}
    assert not [d for d in docs if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"]["labels"]]
    container = operator_pod(docs)["spec"]["containers"][0]
    assert "--metrics=0.0.0.0:8081" in container["args"]
    assert {"name": "metrics", "containerPort": 8081} in container["ports"]
    service = next(s for name, s in _named(docs, "Service").items() if name.endswith("-metrics"))
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8081, "targetPort": "metrics"}]


def test_the_runtime_pod_monitor_relabels_to_what_the_prometheus_provider_selects_by(helm: Helm) -> None:
    docs = helm.template(ALL_OPTIONS)
    monitors = _named(docs, "PodMonitor")
    runtime = next(m for name, m in monitors.items() if name.endswith("-runtime"))
    (endpoint,) = runtime["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["interval"] == "30s"
    targets = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    assert targets == {"model": ["__meta_kubernetes_pod_label_edgewise_io_model"],
                       "edgewise_class": ["__meta_kubernetes_pod_label_edgewise_io_class"],
                       "edgewise_revision": ["__meta_kubernetes_pod_label_edgewise_io_revision"]}
    assert runtime["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "runtime"
    assert runtime["spec"]["namespaceSelector"] == {"matchNames": ALL_OPTIONS["operator"]["watchNamespaces"]}
    agent = next(m for name, m in monitors.items() if name.endswith("-node-agent"))
    assert agent["spec"]["namespaceSelector"] == {"matchNames": [ALL_OPTIONS["agent"]["namespace"]]}
    service_monitor = one(docs, "ServiceMonitor")
    assert service_monitor["metadata"]["labels"]["release"] == "kps"
    assert service_monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_the_dashboard_configmap_carries_the_sidecar_label_and_the_dashboard_json(helm: Helm) -> None:
    docs = helm.template(ALL_OPTIONS)
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "yes"
    assert json.loads(cm["data"]["edgewise.json"]) == json.loads((CHART / "dashboards" / "edgewise.json").read_text())
    default = helm.template({"monitoring": {"dashboard": {"enabled": True}}})
    (cm,) = [d for d in default if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_the_prometheus_rule_holds_the_three_alerts_verbatim(helm: Helm) -> None:
    rule = one(helm.template(ALL_OPTIONS), "PrometheusRule")
    (group,) = rule["spec"]["groups"]
    assert group["rules"] == yaml.safe_load((CHART / "alerts" / "rules.yaml").read_text())
    assert {r["alert"] for r in group["rules"]} == {"EdgewiseRollback", "EdgewiseRolloutStuck",
                                                   "EdgewiseClassNodesUnready"}
    # Prometheus's own templates survive Helm untouched.
    assert "{{ $labels.class }}" in group["rules"][0]["annotations"]["summary"]
