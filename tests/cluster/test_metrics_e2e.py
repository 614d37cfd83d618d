"""The operator's metrics, the chart's dashboard and alert rules, against a real Prometheus during real rollouts.

Prometheus is Debian's `prometheus` (as in tests/analysis), scraping:
- the operator's `--metrics` endpoint (what the chart's ServiceMonitor selects through its metrics Service);
- the runtime pods the pod runner serves on their pod IPs, found by file discovery from the pods
  the apiserver lists, written with the labels Kubernetes discovery (role pod) would give them
  (Debian builds prometheus without Kubernetes discovery), and relabelled exactly as
  the chart's runtime PodMonitor says: the pods' model, class and revision labels become the target
  labels `model`, `edgewise_class`, `edgewise_revision`, plus the `namespace` and `pod` the Prometheus
  Operator adds to every PodMonitor target;
- a node agent process (what the chart's node-agent PodMonitor selects), for the node-cache series.
Its rule file is the chart's alerts/rules.yaml, as the PrometheusRule carries it.

One module-scoped fleet: model `detector` (served, under traffic) is deployed, then a slower version
is rolled back by its analysis; model `idle` (optimized per class by the operator's artifact store,
its pods never served) is the rollout that stalls past its progressDeadline (the CRD's least, 1m).
Last, one node goes NotReady (the test reports it, and its pods NotReady as the node controller would:
kwok leaves them alone): the class keeps counting the node, EdgewiseClassNodesUnready's expression
holds and the alert is pending (its `for: 10m` is not waited out here).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml
from operator_support import REPO, Operator, apply, get, rollout_classes, running_operator, set_node_ready
from rollout_support import ARM, MODEL, ORIN, edgemodel, profile

from analysis.analysis_models_support import good, slow, write_golden
from edgewise.devcluster import demo_models, processes
from edgewise.devcluster.cluster import DevCluster
from edgewise.devcluster.podrunner import PodRunner
from edgewise.devcluster.traffic import Traffic, serving
from wait_support import wait_for

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
CHART = REPO / "charts" / "edgewise"
IDLE = "idle"  # the model whose pods nothing serves: its canary never passes an analysis
STUCK_DEADLINE = "1m"


@dataclass(frozen=True)
class Prometheus:
    url: str
    proc: processes.Running

    def get(self, path: str, **params: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}?{urlencode(params)}", timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/query", query=promql)["result"])

    def returns_data(self, promql: str, timeout: float = 60) -> list[dict[str, Any]]:
        """The query's result once it has one (scrapes and rule evaluations run every second)."""
        assert processes.alive(self.proc), processes.log_tail(self.proc)
        return wait_for(lambda: self.query(promql), timeout, f"data from {promql}", interval=1)  # type: ignore[return-value]


def _meta_name(label: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def pod_targets(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pods as Prometheus' Kubernetes discovery (role pod) describes them: one target per container port,
    with the `__meta_kubernetes_*` labels it sets. (Debian's prometheus is built without Kubernetes
    discovery, so the test writes these for file discovery; the relabelings then run unchanged.)"""
    out = []
    for pod in pods:
        meta, ip = pod["metadata"], (pod.get("status") or {}).get("podIP")
        if not ip or meta.get("deletionTimestamp"):
            continue
        labels = {"__meta_kubernetes_namespace": meta["namespace"], "__meta_kubernetes_pod_name": meta["name"],
                  **{f"__meta_kubernetes_pod_label_{_meta_name(k)}": v for k, v in (meta.get("labels") or {}).items()}}
        for container in pod["spec"]["containers"]:
            for port in container.get("ports") or []:
                out.append({"targets": [f"{ip}:{port['containerPort']}"],
                            "labels": {**labels, "__meta_kubernetes_pod_container_port_name": port.get("name", "")}})
    return out


class PodDiscovery:
    """Keeps a file_sd file in step with the namespace's pods, every second, while the block runs."""

    def __init__(self, cluster: DevCluster, namespace: str, path: Path) -> None:
        self.cluster, self.namespace, self.path = cluster, namespace, path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def write(self) -> None:
        pods = get(self.cluster, "pods", "-n", self.namespace)["items"]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(pod_targets(pods)))
        tmp.replace(self.path)  # atomically: Prometheus never reads half a file

    def _run(self) -> None:
        while not self._stop.wait(1):
            try:
                self.write()
            except Exception:  # an apiserver hiccup: the next round writes it
                pass

    def __enter__(self) -> PodDiscovery:
        self.write()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def runtime_scrape_job(targets_file: Path) -> dict[str, Any]:
    """The chart's runtime PodMonitor as a plain scrape config: the same selection and relabelings."""
    pod_label = "__meta_kubernetes_pod_label_"
    return {
        "job_name": "edgewise-runtime",
        "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
        "relabel_configs": [
            # selector.matchLabels and podMetricsEndpoints[].port
            {"source_labels": [f"{pod_label}app_kubernetes_io_managed_by", f"{pod_label}app_kubernetes_io_component",
                               "__meta_kubernetes_pod_container_port_name"],
             "regex": "edgewise;runtime;metrics", "action": "keep"},
            # what the Prometheus Operator adds to every target
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            # the PodMonitor's relabelings
            {"source_labels": [f"{pod_label}edgewise_io_model"], "target_label": "model", "action": "replace"},
            {"source_labels": [f"{pod_label}edgewise_io_class"], "target_label": "edgewise_class", "action": "replace"},
            {"source_labels": [f"{pod_label}edgewise_io_revision"], "target_label": "edgewise_revision",
             "action": "replace"},
        ],
    }


def chart_rules() -> list[dict[str, Any]]:
    return list(yaml.safe_load((CHART / "alerts" / "rules.yaml").read_text()))


def dashboard_queries(namespace: str) -> dict[str, str]:
    """Every panel's PromQL with the dashboard's variables filled: this namespace, every model and class
    (the dashboard's "All", its allValue)."""
    board = json.loads((CHART / "dashboards" / "edgewise.json").read_text())
    values = {"namespace": namespace, "model": ".*", "class": ".*"}
    out = {}
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = re.sub(r"\$(\w+)", lambda m: values[m.group(1)], target["expr"])
            out[f"{panel['title']} [{target.get('refId', '')}]"] = expr
    return out


def variable_queries() -> dict[str, tuple[str, str]]:
    """The dashboard's label_values(metric, label) variables as (selector, label), variables filled with All."""
    board = json.loads((CHART / "dashboards" / "edgewise.json").read_text())
    out = {}
    for var in board["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.*), (\w+)\)", var["definition"])
        assert m, var["definition"]
        out[var["name"]] = (re.sub(r"\$\w+", ".*", m.group(1)), m.group(2))
    return out


def _agent_token(cluster: DevCluster, namespace: str) -> str:
    return cluster.kubectl("create", "token", "default", "-n", namespace, "--duration=1h").stdout.strip()


@dataclass(frozen=True)
class Setup:
    cluster: DevCluster
    namespace: str
    nodes: list[str]
    operator: Operator
    prometheus: Prometheus
    models: dict[str, Path]


def idle_profile(ns: str) -> dict[str, Any]:
    return {"apiVersion": "edgewise.io/v1alpha1", "kind": "DeploymentProfile",
            "metadata": {"name": "idle", "namespace": ns},
            "spec": {"classes": [{"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"},
                                  "runtime": "onnxruntime", "precision": "int8", "threads": 1}]}}


def idle_model(ns: str, version: str, src: Path, deadline: str = "10m") -> dict[str, Any]:
    return {"apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel", "metadata": {"name": IDLE, "namespace": ns},
            "spec": {"profileRef": "idle", "version": version,
                     "source": {"uri": src.as_uri(), "sha256": demo_models.sha256(src)},
                     "optimization": {"quantization": "auto", "accuracyGate": {"minCosine": 0.9}},
                     "rollout": {"steps": [{"percent": 50}, {"percent": 100}], "progressDeadline": deadline,
                                 "analysis": {"interval": "2s"}}}}


@pytest.fixture(scope="module")
def setup(cluster: DevCluster, module_namespace: str, module_fleet,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    if not Path(PROMETHEUS).exists():
        pytest.fail(f"{PROMETHEUS} not found: install Debian's prometheus package (make test does)")
    ns = module_namespace
    root = tmp_path_factory.mktemp("metrics")
    models = {"good": good(root / "good"), "slow": slow(root / "slow")}
    models["golden"] = write_golden(root / "golden.npz", model_dir=models["good"])
    models["idle"] = demo_models.good(root / "idle.onnx")
    nodes = module_fleet({ORIN: 2, ARM: 2})
    metrics_port, store_port, agent_port, prom_port = (processes.free_port() for _ in range(4))
    args = ["--metrics", f"127.0.0.1:{metrics_port}", "--artifact-dir", str(root / "artifacts"),
            "--artifact-listen", f"127.0.0.1:{store_port}", "--artifact-url", f"http://127.0.0.1:{store_port}"]
    state = cluster.state()
    assert state is not None
    token = root / "agent.token"
    token.write_text(_agent_token(cluster, ns))
    agent = processes.start("agent", [
        sys.executable, "-m", "edgewise", "agent", "--host", "127.0.0.1", "--port", str(agent_port),
        "--cache-dir", str(root / "cache"), "--node-name", nodes[0], "--apiserver", state.server,
        "--apiserver-token-file", str(token), "--apiserver-ca", str(cluster.pki / "ca.crt")], root)
    (root / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "edgewise", "rules": chart_rules()}]}))
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(root / "rules.yml")],
        "scrape_configs": [
            {"job_name": "edgewise-operator", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]},
            {"job_name": "edgewise-node-agent", "static_configs": [{"targets": [f"127.0.0.1:{agent_port}"],
                                                                    "labels": {"pod": f"agent-{nodes[0]}"}}]},
            runtime_scrape_job(root / "pods.json"),
        ],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    prom_proc = processes.start("prometheus", [
        PROMETHEUS, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
        f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"], root)
    prom = Prometheus(f"http://127.0.0.1:{prom_port}", prom_proc)
    (root / "operator").mkdir()
    try:
        with PodDiscovery(cluster, ns, root / "pods.json"), \
                running_operator(cluster, root / "operator", args) as op, cluster.api_client() as api, \
                PodRunner(api, root / "pods", ns, f"edgewise.io/model={MODEL}").start() as runner, \
                Traffic(runner, MODEL):
            apply(cluster, [profile(ns), edgemodel(ns, "1.0", models["good"], models["golden"]),
                            idle_profile(ns), idle_model(ns, "1.0", models["idle"])])
            wait_for(lambda: serving(runner, 4), 150, "four pods serving 1.0")
            wait_for(lambda: rollout_classes(get(cluster, "edgemodel", IDLE, "-n", ns)).get("arm", {}).get(
                "stableVersion") == "1.0", 120, "idle 1.0 everywhere")
            # progressDeadline can be no shorter than a minute (the CRD): the stalling rollout starts now,
            # and its minute passes while the other tests run.
            apply(cluster, idle_model(ns, "2.0", models["idle"], deadline=STUCK_DEADLINE))
            yield Setup(cluster, ns, nodes, op, prom, models)
    finally:
        processes.stop(prom_proc, grace=20)
        processes.stop(agent)


def _classes(s: Setup, model: str) -> dict[str, dict[str, Any]]:
    return rollout_classes(get(s.cluster, "edgemodel", model, "-n", s.namespace))


def test_prometheus_scrapes_the_operator_the_runtime_pods_and_the_agent_and_loads_the_rules(setup: Setup) -> None:
    prom = setup.prometheus
    for job in ("edgewise-operator", "edgewise-node-agent", "edgewise-runtime"):
        prom.returns_data(f'up{{job="{job}"}} == 1')
    per_class = (f'count by (model, edgewise_class, edgewise_revision, namespace) '
                 f'(up{{job="edgewise-runtime", namespace="{setup.namespace}", model="{MODEL}"}} == 1)')
    # Each class's pods are first scraped when their own targets are found: on a busy machine one class's
    # series may come seconds after the other's (seen once in a full run), so wait for both, then check them.
    runtime = wait_for(lambda: (r := prom.query(per_class)) and {x["metric"]["edgewise_class"] for x in r} == {
        "jetson", "arm"} and r, 60, "both classes' runtime pods scraped", interval=1)
    assert {r["metric"]["edgewise_class"] for r in runtime} == {"jetson", "arm"}, runtime
    assert all(r["metric"]["edgewise_revision"] for r in runtime), runtime
    groups = prom.get("/api/v1/rules")["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(rules) == {r["alert"] for r in chart_rules()}, rules
    assert all(r["health"] == "ok" for r in rules.values()), rules


def test_a_rollout_and_its_rollback_show_in_every_dashboard_panel_and_the_rollback_alert(setup: Setup) -> None:
    s, prom = setup, setup.prometheus
    apply(s.cluster, edgemodel(s.namespace, "2.0-slow", s.models["slow"], s.models["golden"]))
    # While the canary is out: its percent, the running status and a step start are series.
    where = f'namespace="{s.namespace}", model="{MODEL}"'
    prom.returns_data(f"edgewise_rollout_canary_percent{{{where}}} > 0", timeout=90)
    prom.returns_data(f"edgewise_rollout_status{{{where}}} == 0")
    prom.returns_data(f"edgewise_rollout_step_started_timestamp_seconds{{{where}}}")
    # The dashboard's latency panel tells the canary's pods from the stable ones, with their versions.
    p95 = next(e for t, e in dashboard_queries(s.namespace).items() if t.startswith("p95 latency"))
    roles = lambda: {(r["metric"]["role"], r["metric"]["version"]) for r in prom.query(p95)  # noqa: E731
                     if r["metric"]["model"] == MODEL}
    wait_for(lambda: {("stable", "1.0"), ("canary", "2.0-slow")} <= roles(), 60, "p95 of stable 1.0 and canary "
             "2.0-slow", interval=1)
    wait_for(lambda: all(c["state"] == "RolledBack" for c in _classes(s, MODEL).values()) or None, 150,
             "2.0-slow rolled back")
    # The rollback: status 2, the counter and the analysis failures, the alert's expression and the alert itself.
    assert prom.returns_data(f"edgewise_rollout_status{{{where}}} == 2")
    rollback = next(r["expr"] for r in chart_rules() if r["alert"] == "EdgewiseRollback")
    classes = lambda: {r["metric"]["class"] for r in prom.query(rollback) if r["metric"]["model"] == MODEL}  # noqa: E731
    wait_for(lambda: classes() == {"jetson", "arm"}, 30, f"both classes from {rollback}", interval=1)
    wait_for(lambda: any(a["labels"].get("alertname") == "EdgewiseRollback" and a["state"] == "firing"
                         for a in prom.get("/api/v1/alerts")["alerts"]), 30, "EdgewiseRollback firing")
    prom.returns_data(f'edgewise_analysis_total{{{where}, outcome="fail"}} > 0')
    prom.returns_data('edgewise_kube_writes_total{verb="create", kind="DaemonSet"} > 0')
    prom.returns_data("edgewise_reconcile_duration_seconds_count > 0")
    prom.returns_data("edgewise_workqueue_depth")
    prom.returns_data("edgewise_workqueue_oldest_item_age_seconds")
    prom.returns_data('edgewise_optimization_runs_total{result="Optimized"} > 0', timeout=120)
    # Every panel of the dashboard, and every variable, has data.
    for name, (selector, label) in variable_queries().items():
        found = prom.returns_data(selector)
        assert all(label in r["metric"] for r in found), (name, found)
    empty = {}
    for title, expr in dashboard_queries(s.namespace).items():
        try:
            prom.returns_data(expr, timeout=30)
        except pytest.fail.Exception:
            empty[title] = expr
    assert not empty, f"dashboard panels without data: {json.dumps(empty, indent=1)}"


def test_a_rollout_stalled_past_its_progress_deadline_raises_the_stuck_alert(setup: Setup) -> None:
    s, prom = setup, setup.prometheus
    # Nothing serves the idle model's pods: the canary's analysis cannot pass (its pods are deferred), and
    # the step outlives its deadline (the fixture started it). The class is Degraded, the canary still out.
    obj = wait_for(lambda: _classes(s, IDLE).get("arm", {}).get("state") == "Degraded" and _classes(s, IDLE), 120,
                   "idle 2.0 Degraded past its progressDeadline")
    assert obj["arm"]["canaryVersion"] == "2.0", obj  # type: ignore[index]
    stuck = next(r["expr"] for r in chart_rules() if r["alert"] == "EdgewiseRolloutStuck")
    fired = prom.returns_data(stuck)
    assert {(r["metric"]["model"], r["metric"]["class"]) for r in fired} == {(IDLE, "arm")}, fired
    wait_for(lambda: any(a["labels"].get("alertname") == "EdgewiseRolloutStuck" and a["state"] == "firing"
                         for a in prom.get("/api/v1/alerts")["alerts"]), 30, "EdgewiseRolloutStuck firing")


def _pods_not_ready(s: Setup, node: str) -> None:
    """What the node controller does to the pods of a node that went NotReady (kwok leaves a Running pod's
    status alone, so the test reports it as the controller would)."""
    pods = get(s.cluster, "pods", "-n", s.namespace, "--field-selector", f"spec.nodeName={node}")["items"]
    for pod in pods:
        conditions = [{**c, "status": "False"} if c["type"] in ("Ready", "ContainersReady") else c
                      for c in pod["status"].get("conditions") or []]
        s.cluster.kubectl("patch", "pod", pod["metadata"]["name"], "-n", s.namespace, "--subresource=status",
                          "--type=merge", "-p", json.dumps({"status": {"conditions": conditions}}))


def test_a_node_gone_not_ready_makes_the_unready_nodes_alert_pending(setup: Setup) -> None:
    s, prom = setup, setup.prometheus
    away = next(n for n in reversed(s.nodes) if ARM in n)
    unready = next(r for r in chart_rules() if r["alert"] == "EdgewiseClassNodesUnready")
    set_node_ready(s.cluster, away, False)  # the node controller then taints it not-ready
    _pods_not_ready(s, away)

    def held() -> set[tuple[str, str]]:
        return {(r["metric"]["model"], r["metric"]["class"]) for r in prom.query(unready["expr"])
                if r["metric"]["namespace"] == s.namespace}
    wait_for(lambda: (MODEL, "arm") in held(), 180, f"{unready['expr']} for {MODEL}/arm", interval=2)
    wait_for(lambda: any(a["labels"].get("alertname") == "EdgewiseClassNodesUnready" and a["state"] == "pending"
                         and (a["labels"].get("model"), a["labels"].get("class")) == (MODEL, "arm")
                         for a in prom.get("/api/v1/alerts")["alerts"]), 30, "EdgewiseClassNodesUnready pending")
    arm = next(c for c in get(s.cluster, "edgemodel", MODEL, "-n", s.namespace)["status"]["classes"]
               if c["name"] == "arm")
    assert arm["matchedNodes"] == 2 and arm["readyPods"] < 2, arm  # the NotReady node is counted, not forgotten
