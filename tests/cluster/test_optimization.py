"""Per-class artifacts through the operator: optimized once per target, gated, stored by digest, fetched.

The operator runs with its built-in artifact store (a directory and an HTTP server on
loopback). Optimization jobs run as worker processes; the pods' real `edgewise fetch`
gets the artifact by digest from the store and a real `edgewise serve` answers with it.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton_http
from operator_support import (
    Operator,
    apply,
    classes,
    condition,
    digests_deployed,
    get,
    wait_artifacts,
    wait_status,
)

from edgewise.devcluster import demo_models, processes
from edgewise.devcluster.cluster import DevCluster
from edgewise.devcluster.podrunner import PodRunner
from edgewise.devcluster.traffic import serving
from wait_support import wait_for

ORIN, ARM, AMD = "jetson-orin", "arm64-cpu", "amd64-cpu"


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


def _fetch_args(cluster: DevCluster, ns: str, ds: str) -> list[str]:
    obj = get(cluster, "daemonset", ds, "-n", ns)
    return list(obj["spec"]["template"]["spec"]["initContainers"][0]["args"])


def test_each_class_gets_a_verified_artifact_made_once_and_served(
        cluster: DevCluster, namespace: str, fleet, store_operator: Operator, tmp_path: Path) -> None:
    fleet({ORIN: 1, ARM: 2, AMD: 1})
    src = demo_models.good(tmp_path / "src" / "model.onnx")
    apply(cluster, [_profile(namespace), _model(namespace, "clf", src)])

    obj = wait_artifacts(cluster, namespace, "clf", 3, 180)
    cs = classes(obj)
    assert condition(obj, "ArtifactsReady")["status"] == "True"
    for c in cs.values():
        assert re.fullmatch(r"[0-9a-f]{64}", c["artifactDigest"]) and c["artifactDigest"] != demo_models.sha256(src)
        assert c["artifactSizeBytes"] > 0 and "min cosine" in c["optimization"], c
    assert cs["jetson"]["precision"] == "fp16"
    # int8 where it passes the accuracy gate; int8 kernels round differently from one CPU to another, and
    # where 1 of the 16 validation samples changes its top-1 class the gate refuses it: fp32 is served
    # instead, and the status says why.
    arm = cs["arm"]
    assert arm["precision"] == "int8" or (arm["precision"] == "fp32" and "int8" in arm["optimization"]
                                          and "rejected" in arm["optimization"]), arm
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
    assert {n: c["artifactDigest"] for n, c in classes(again).items()} == \
        {n: c["artifactDigest"] for n, c in cs.items()}
    assert jobs_before >= 3


def _refused(cluster: DevCluster, ns: str, name: str, reason: str, timeout: float = 120) -> dict[str, Any]:
    obj = wait_status(cluster, ns, name, lambda o: condition(o, "ArtifactsReady").get("reason") == reason,
                      f"ArtifactsReady=False/{reason}", timeout)
    cond = condition(obj, "ArtifactsReady")
    assert cond["status"] == "False" and "what is serving keeps serving" in cond["message"], cond
    assert condition(obj, "Degraded")["status"] == "True"
    return obj


@pytest.mark.parametrize("case", ["not-onnx", "digest-mismatch", "calibration-mismatch"])
def test_bad_sources_get_a_clear_condition_and_deploy_nothing(
        cluster: DevCluster, namespace: str, fleet, store_operator: Operator, tmp_path: Path, case: str) -> None:
    fleet({ARM: 1})
    if case == "not-onnx":
        path = tmp_path / "model.onnx"
        path.write_text("this is not an ONNX model\n")
        model = _model(namespace, "bad", path)
        reason, says = "InvalidModel", "arm"
    elif case == "digest-mismatch":
        path = demo_models.good(tmp_path / "model.onnx")
        model = _model(namespace, "bad", path, sha256="0" * 64)
        reason, says = "DigestMismatch", "arm"
    else:  # calibration arrays named and shaped for another model
        path = demo_models.good(tmp_path / "model.onnx")
        calibration = tmp_path / "calibration.npz"
        np.savez(calibration, pixels=np.zeros((4, 3, 8, 8), np.float32))
        model = _model(namespace, "bad", path)
        model["spec"]["optimization"]["calibration"] = {"uri": calibration.as_uri(),
                                                        "sha256": demo_models.sha256(calibration)}
        reason, says = "CalibrationMismatch", "'x'"  # names the input the model expects
    apply(cluster, [_profile(namespace), model])
    obj = _refused(cluster, namespace, "bad", reason)
    assert "arm" in condition(obj, "ArtifactsReady")["message"] and says in condition(obj, "ArtifactsReady")["message"]
    assert get(cluster, "daemonsets", "-n", namespace)["items"] == []  # nothing deployed


class _Source:
    """A model source over HTTP that can be down (nothing listens on its port) or up."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, processes.free_port()
        self.server: http.server.ThreadingHTTPServer | None = None

    def uri(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def up(self) -> None:
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(self.root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


def test_an_unreachable_source_keeps_what_serves_and_is_retried_until_it_answers(
        cluster: DevCluster, namespace: str, fleet, store_operator: Operator, tmp_path: Path) -> None:
    fleet({ARM: 1})
    v1 = demo_models.good(tmp_path / "v1" / "model.onnx")
    apply(cluster, [_profile(namespace), _model(namespace, "up", v1)])
    obj = wait_status_artifact(cluster, namespace, "up", lambda c: c.get("artifactState") == "Ready")
    serving_digest = classes(obj)["arm"]["artifactDigest"]
    assert digests_deployed(cluster, namespace) == {serving_digest}

    # Version 2 lives on a server that is down.
    root = tmp_path / "site"
    v2 = demo_models.slow(root / "v2.onnx")
    source = _Source(root)
    update = _model(namespace, "up", v2)
    update["spec"]["version"] = "2.0"
    update["spec"]["source"] = {"uri": source.uri("v2.onnx"), "sha256": demo_models.sha256(v2)}
    apply(cluster, update)
    obj = _refused(cluster, namespace, "up", "SourceUnavailable", timeout=120)
    message = condition(obj, "ArtifactsReady")["message"]
    assert source.uri("v2.onnx") in message and "retrying in" in message, message
    assert digests_deployed(cluster, namespace) == {serving_digest}  # nothing serving was replaced

    # The source comes back: a retry (with backoff, no spec change) makes the artifact and rolls it out.
    source.up()
    try:
        obj = wait_status_artifact(cluster, namespace, "up", lambda c: c.get("artifactState") == "Ready"
                                   and c.get("artifactDigest") != serving_digest, timeout=120)
        new_digest = classes(obj)["arm"]["artifactDigest"]
        wait_for(lambda: new_digest in digests_deployed(cluster, namespace), 60, "the v2 artifact deployed")
        retried = [line for line in store_operator.log().splitlines()
                   if f"({namespace}/up), attempt " in line and "started for" in line]
        assert retried, "the optimization was not retried"  # the spec never changed: the backoff did it
    finally:
        source.down()


def wait_status_artifact(cluster: DevCluster, ns: str, name: str, arm_ok: Callable[[dict[str, Any]], bool],
                         timeout: float = 180) -> dict[str, Any]:
    """The EdgeModel once its arm class's status satisfies `arm_ok`."""

    def ok(obj: dict[str, Any]) -> bool:
        arm = classes(obj).get("arm")
        return bool(arm and arm_ok(arm))

    return wait_status(cluster, ns, name, ok, "the arm class's artifact", timeout)


def test_a_model_too_big_for_a_class_does_not_fit_there_and_other_classes_proceed(
        cluster: DevCluster, namespace: str, fleet, store_operator: Operator, tmp_path: Path) -> None:
    arm_node = fleet({ARM: 1, AMD: 1})[0]
    # A board with 48 MiB to give: less than any ONNX Runtime process with a model needs.
    cluster.kubectl("patch", "node", arm_node, "--subresource=status", "--type=merge", "-p",
                    '{"status": {"capacity": {"memory": "48Mi"}, "allocatable": {"memory": "48Mi"}}}')
    src = demo_models.good(tmp_path / "model.onnx")
    apply(cluster, [_profile(namespace), _model(namespace, "big", src)])

    def settled(obj: dict[str, Any]) -> bool:
        cs = classes(obj)
        return {c: cs.get(c, {}).get("artifactState") for c in ("arm", "x86")} == {"arm": "Rejected", "x86": "Ready"}

    obj = wait_status(cluster, namespace, "big", settled, "arm refused as DoesNotFit, x86 ready", 180)
    cond = condition(obj, "ArtifactsReady")
    assert cond["reason"] == "DoesNotFit" and "arm:" in cond["message"] and "x86" not in cond["message"], cond
    assert re.search(r"peak memory \d+ MiB > node allocatable memory 48 MiB", cond["message"]), cond
    workloads = {d["metadata"]["name"] for d in get(cluster, "daemonsets", "-n", namespace)["items"]}
    assert workloads and all("-x86-" in w for w in workloads), workloads  # nothing for arm, x86 deployed


def test_run_in_job_optimizes_in_a_kubernetes_job_whose_pod_uploads_the_artifact(
        cluster: DevCluster, namespace: str, fleet, store_operator: Operator, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    fleet({ARM: 1})
    src = demo_models.good(tmp_path / "site" / "model.onnx")
    model = _model(namespace, "big", src)
    # An optimization Job never reads file:// (a file on the node agent's host): the source is served over HTTP.
    source = _Source(tmp_path / "site")
    source.up()
    request.addfinalizer(source.down)
    model["spec"]["source"]["uri"] = source.uri("model.onnx")
    model["spec"]["optimization"] |= {"runIn": "Job", "jobMemory": "3Gi"}
    ns = store_operator.namespace
    apply(cluster, [_profile(namespace), model])
    job = wait_for(lambda: next(iter(get(cluster, "jobs", "-n", ns, "-l", "edgewise.io/optimization-job")
                                     ["items"]), None), 60, "an optimization Job")
    pod_spec = job["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    assert container["command"] == ["edgewise"] and container["args"][0] == "optimize-job"
    assert container["resources"]["limits"]["memory"] == "3Gi"
    assert container["securityContext"]["runAsNonRoot"] and pod_spec["automountServiceAccountToken"] is False
    # The operator logs once its start() returned, a moment after the Job became visible.
    wait_for(lambda: "as a Kubernetes Job" in store_operator.log(), 30, "the operator's log of the Job")
    # The upload token is not in the Job: it is in a Secret the Job owns.
    token_env = next(e for e in container["env"] if e["name"] == "EDGEWISE_UPLOAD_TOKEN")
    assert "value" not in token_env and token_env["valueFrom"]["secretKeyRef"]["name"] == job["metadata"]["name"]

    def owned_secret() -> dict[str, Any] | None:
        secret = get(cluster, "secret", job["metadata"]["name"], "-n", ns)
        owners = secret["metadata"].get("ownerReferences") or []
        return secret if [o["uid"] for o in owners] == [job["metadata"]["uid"]] else None

    wait_for(owned_secret, 30, "the token Secret owned by the Job")

    # The operator restarts while its Job waits: the new one adopts the Job (and its token) instead of
    # starting another, and takes the upload.
    store_operator.restart()
    wait_for(lambda: "adopted optimization Job" in store_operator.log(), 60, "the Job adopted")
    assert len(get(cluster, "jobs", "-n", ns)["items"]) == 1

    # The Job's pod runs for real, as a local process (the pod runner plays kubelet for it).
    with cluster.api_client() as api, PodRunner(api, tmp_path / "pods", ns,
                                                "app.kubernetes.io/component=optimizer").start() as runner:
        obj = wait_status_artifact(cluster, namespace, "big", lambda c: c.get("artifactState") == "Ready")
        digest = classes(obj)["arm"]["artifactDigest"]
        assert digest in digests_deployed(cluster, namespace)
        # The artifact came from the Job's pod: it ran the optimizer and uploaded what the store now serves.
        pod_logs = list((tmp_path / "pods" / ns).rglob("optimize.log"))
        assert pod_logs and '"outcome": "Optimized"' in pod_logs[0].read_text(), [p.read_text() for p in pod_logs]
        assert not runner.running() or all(p.error == "" for p in runner.running().values())
    # Done: the operator deletes its Job, and the token's Secret.
    wait_for(lambda: not get(cluster, "jobs", "-n", ns)["items"], 60, "the Job deleted")
    wait_for(lambda: not get(cluster, "secrets", "-n", ns, "-l", "edgewise.io/optimization-job")["items"], 60,
             "the token Secret deleted")


def test_uploads_need_the_jobs_token(store_operator: Operator) -> None:
    url = next(a for a in store_operator.extra_args if a.startswith("http://")) + "/uploads/0123abcd/report"
    req = urllib.request.Request(url, data=b"{}", method="PUT", headers={"Authorization": "Bearer guess"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 503  # no such job: nothing lands anywhere
