"""Per-class artifacts through the operator: optimized once per target, gated, stored by digest, fetched.

The operator runs with its built-in artifact store (a directory and an HTTP server on
loopback). Optimization jobs run as worker processes; the pods' real `edgewise fetch`
gets the artifact by digest from the store and a real `edgewise serve` answers with it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton_http
from operator_support import Operator, apply, condition, get, running_operator

from edgewise.devcluster import demo_models, processes
from edgewise.devcluster.cluster import DevCluster
from edgewise.devcluster.podrunner import PodRunner
from edgewise.devcluster.traffic import serving
from helpers import wait_for

ORIN, ARM, AMD = "jetson-orin", "arm64-cpu", "amd64-cpu"


@pytest.fixture(scope="module")
def store_operator(cluster: DevCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    work = Path(tmp_path_factory.mktemp("opt-operator"))
    port = processes.free_port()
    args = ["--artifact-dir", str(work / "artifacts"), "--artifact-listen", f"127.0.0.1:{port}",
            "--artifact-url", f"http://127.0.0.1:{port}"]
    with running_operator(cluster, work, args) as op:
        yield op


def _profile(ns: str) -> dict[str, Any]:
    return {"apiVersion": "edgewise.io/v1alpha1", "kind": "DeploymentProfile",
            "metadata": {"name": "fleet", "namespace": ns},
            "spec": {"classes": [
                {"name": "jetson", "nodeSelector": {"nvidia.com/gpu.family": "ampere"},
                 "runtime": "triton-tensorrt", "precision": "fp16"},
                {"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"}, "runtime": "onnxruntime",
                 "precision": "int8", "threads": 1},
                {"name": "x86", "nodeSelector": {"kubernetes.io/arch": "amd64"}, "runtime": "onnxruntime",
                 "precision": "int8", "threads": 1}]}}


def _model(ns: str, name: str, path: Path, sha256: str | None = None) -> dict[str, Any]:
    return {"apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel", "metadata": {"name": name, "namespace": ns},
            "spec": {"profileRef": "fleet", "version": "1.0",
                     "source": {"uri": path.as_uri(), "sha256": sha256 or demo_models.sha256(path)},
                     "optimization": {"quantization": "auto", "accuracyGate": {"minCosine": 0.98}},
                     "rollout": {"analysis": {"provider": "none"}}}}


def _classes(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in obj.get("status", {}).get("classes") or []}


def _fetch_args(cluster: DevCluster, ns: str, ds: str) -> list[str]:
    obj = get(cluster, "daemonset", ds, "-n", ns)
    return list(obj["spec"]["template"]["spec"]["initContainers"][0]["args"])


def test_each_class_gets_a_verified_artifact_made_once_and_served(
        cluster: DevCluster, namespace: str, fleet, store_operator: Operator, tmp_path: Path) -> None:
    fleet({ORIN: 1, ARM: 2, AMD: 1})
    src = demo_models.good(tmp_path / "src" / "model.onnx")
    apply(cluster, [_profile(namespace), _model(namespace, "clf", src)])

    def ready() -> dict[str, Any] | None:
        obj = get(cluster, "edgemodel", "clf", "-n", namespace)
        cs = _classes(obj)
        return obj if len(cs) == 3 and all(c.get("artifactState") == "Ready" for c in cs.values()) else None

    obj = wait_for(ready, 180, "an artifact for every class")
    cs = _classes(obj)
    assert condition(obj, "ArtifactsReady")["status"] == "True"
    for c in cs.values():
        assert re.fullmatch(r"[0-9a-f]{64}", c["artifactDigest"]) and c["artifactDigest"] != demo_models.sha256(src)
        assert c["artifactSizeBytes"] > 0 and "min cosine" in c["optimization"], c
    assert cs["jetson"]["precision"] == "fp16" and cs["arm"]["precision"] == "int8"
    assert cs["jetson"]["artifactDigest"] != cs["arm"]["artifactDigest"]  # one artifact per target
    assert "int8" in cs["arm"]["optimization"] or "dynamic" in cs["arm"]["optimization"]

    # The DaemonSets fetch exactly that artifact, by digest, from the operator's store.
    args = _fetch_args(cluster, namespace, "clf-arm-a")
    digest = cs["arm"]["artifactDigest"]
    assert args[args.index("--sha256") + 1] == digest
    assert args[args.index("--uri") + 1].endswith(f"/artifacts/sha256/{digest}")

    # A real fetch gets it and a real server answers with it on every ARM board.
    with cluster.api_client() as api, PodRunner(api, tmp_path / "pods", namespace,
                                                "edgewise.io/model=clf,edgewise.io/class=arm").start() as runner:
        wait_for(lambda: serving(runner, 2), 120, "two ARM pods serving the int8 artifact")
        pod = next(iter(runner.running().values()))
        served = next((pod.workdir / "volumes" / "models").rglob("model.onnx"))
        assert hashlib.sha256(served.read_bytes()).hexdigest() == digest
        client = triton_http.InferenceServerClient(f"{pod.pod_ip}:8000")
        x = triton_http.InferInput("x", [1, 64], "FP32")
        x.set_data_from_numpy(np.ones((1, 64), dtype=np.float32))
        assert client.infer("clf", [x]).as_numpy("y").shape == (1, 10)

    # Computed once: a restarted operator starts no job and keeps the same digests.
    jobs_before = store_operator.log().count("optimization job")
    store_operator.restart()
    store_operator.settle()
    started = [line for line in store_operator.log().splitlines() if "started for" in line]
    assert not [line for line in started if f"({namespace}/clf)" in line], started
    again = get(cluster, "edgemodel", "clf", "-n", namespace)
    assert {n: c["artifactDigest"] for n, c in _classes(again).items()} == \
        {n: c["artifactDigest"] for n, c in cs.items()}
    assert jobs_before >= 3


@pytest.mark.parametrize("case", ["not-onnx", "digest-mismatch"])
def test_bad_sources_get_a_clear_condition_and_deploy_nothing(
        cluster: DevCluster, namespace: str, fleet, store_operator: Operator, tmp_path: Path, case: str) -> None:
    fleet({ARM: 1})
    if case == "not-onnx":
        path = tmp_path / "model.onnx"
        path.write_text("this is not an ONNX model\n")
        model = _model(namespace, "bad", path)
        reason = "InvalidModel"
    else:
        path = demo_models.good(tmp_path / "model.onnx")
        model = _model(namespace, "bad", path, sha256="0" * 64)
        reason = "DigestMismatch"
    apply(cluster, [_profile(namespace), model])

    def refused() -> dict[str, Any] | None:
        obj = get(cluster, "edgemodel", "bad", "-n", namespace)
        cond = condition(obj, "ArtifactsReady")
        return obj if cond.get("reason") == reason and "arm" in cond.get("message", "") else None

    obj = wait_for(refused, 120, f"ArtifactsReady=False/{reason}")
    cond = condition(obj, "ArtifactsReady")
    assert cond["status"] == "False" and "what is serving keeps serving" in cond["message"], cond
    assert condition(obj, "Degraded")["status"] == "True"
    assert get(cluster, "daemonsets", "-n", namespace)["items"] == []  # nothing deployed
