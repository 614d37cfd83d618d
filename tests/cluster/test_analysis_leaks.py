"""Nothing a server answers reaches a model's status or Events, end to end.

The real operator rolls a canary out (the pod runner serves its pods), with the prometheus
analysis provider pointed at an "internal" service that answers with a secret. An address the
operator's settings do not list is never asked (`…/secret#` once made the operator GET any
URL and write the body into the status); an allowed one is asked, and its answer is not
repeated. Either way the canary's analysis is inconclusive and says why.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_support import Operator, apply, get, rollout_classes, running_operator

from analysis.analysis_models_support import good
from edgewise.devcluster import demo_models
from edgewise.devcluster.cluster import DevCluster
from edgewise.devcluster.podrunner import PodRunner
from leak_server_support import SECRET, InternalService
from wait_support import wait_for

MODEL = "detector"


@pytest.fixture(scope="module")
def internal() -> Iterator[InternalService]:
    service = InternalService()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def prom_operator(cluster: DevCluster, internal: InternalService, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[Operator]:
    allowed = {"EDGEWISE_PROMETHEUS_ADDRESSES": internal.url + "/json-error"}
    with running_operator(cluster, Path(tmp_path_factory.mktemp("prom-operator")), extra_env=allowed) as op:
        yield op


def _manifests(ns: str, version: str, model_dir: Path, analysis: dict[str, Any]) -> list[dict[str, Any]]:
    src = model_dir / "model.onnx"
    profile = {"apiVersion": "edgewise.io/v1alpha1", "kind": "DeploymentProfile",
               "metadata": {"name": "fleet", "namespace": ns},
               "spec": {"classes": [{"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"},
                                     "runtime": "onnxruntime", "precision": "fp32", "threads": 1}]}}
    model = {"apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel", "metadata": {"name": MODEL, "namespace": ns},
             "spec": {"profileRef": "fleet", "version": version,
                      "source": {"uri": src.as_uri(), "sha256": demo_models.sha256(src)},
                      "optimization": {"quantization": "none"},
                      "rollout": {"steps": [{"percent": 50}, {"percent": 100}], "progressDeadline": "10m",
                                  "analysis": {"interval": "2s", "failureLimit": 1, **analysis}}}}
    return [profile, model]


def _last_analysis(cluster: DevCluster, ns: str, says: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get(cluster, "edgemodel", MODEL, "-n", ns)
        last = (rollout_classes(obj).get("arm") or {}).get("lastAnalysis") or {}
        return obj if says in last.get("message", "") else None

    return wait_for(check, 180, f"an analysis that says {says!r}", interval=0.5)  # type: ignore[return-value]


def _everything_a_user_reads(cluster: DevCluster, ns: str) -> str:
    model = get(cluster, "edgemodel", MODEL, "-n", ns)
    events = get(cluster, "events", "-n", ns)["items"]
    return json.dumps(model) + json.dumps([(e.get("reason"), e.get("message")) for e in events])


def test_a_prometheus_address_never_brings_its_answer_into_status(
        cluster: DevCluster, namespace: str, fleet: Any, prom_operator: Operator, internal: InternalService,
        tmp_path: Path) -> None:
    fleet({"arm64-cpu": 2})
    model_dir = good(tmp_path / "good")
    apply(cluster, _manifests(namespace, "1.0", model_dir, {"provider": "none"}))
    with cluster.api_client() as api, PodRunner(api, tmp_path / "pods", namespace,
                                                f"edgewise.io/model={MODEL}").start():
        wait_for(lambda: (rollout_classes(get(cluster, "edgemodel", MODEL, "-n", namespace)).get("arm") or {})
                 .get("stableVersion") == "1.0", 150, "1.0 stable")

        # Not an allowed address: the canary's analysis is inconclusive and nothing is asked.
        leak = {"provider": "prometheus", "prometheus": {"address": internal.url + "/page#"}}
        apply(cluster, _manifests(namespace, "2.0", model_dir, leak)[1])
        obj = _last_analysis(cluster, namespace, "EDGEWISE_PROMETHEUS_ADDRESSES")
        assert rollout_classes(obj)["arm"]["lastAnalysis"]["outcome"] == "inconclusive"
        assert rollout_classes(obj)["arm"]["state"] != "Stable"  # the canary waits, it is not promoted
        assert internal.asked == []

        # An allowed address is asked; what it answers stays out of the status and Events.
        allowed = {"provider": "prometheus", "prometheus": {"address": internal.url + "/json-error"}}
        apply(cluster, _manifests(namespace, "2.0", model_dir, allowed)[1])
        obj = _last_analysis(cluster, namespace, "HTTP 400")
        message = rollout_classes(obj)["arm"]["lastAnalysis"]["message"]
        assert "not a Prometheus API answer" in message, message
        assert internal.asked and set(internal.asked) == {"/json-error/api/v1/query"}
        assert SECRET not in _everything_a_user_reads(cluster, namespace)
