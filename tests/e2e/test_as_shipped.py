"""Edgewise as a K3s user runs it: the packaged chart, installed with helm, with the images `make images`
built, on a real kubelet beside simulated nodes.

One cluster for the module (its setup is the expensive part); each test checks one thing of the story,
in the order a user lives it: install → serve → roll out → operator restart → upgrade → uninstall.
The real node (`edgewise-real-1`) and two simulated nodes form one amd64 CPU class; the pod runner
plays the simulated nodes' kubelets (their agents and runtime pods run as local processes on
addresses the real node's pods reach), the real kubelet runs the real images.
"""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton_http

from edgewise.devcluster import demo_models, images, processes
from edgewise.devcluster.cluster import DevCluster
from edgewise.devcluster.fleet import apply_fleet, wait_ready
from edgewise.devcluster.podrunner import PodRunner
from edgewise.devcluster.realnode import NODE_IP, NODE_NAME
from wait_support import wait_for

REPO = Path(__file__).resolve().parents[2]
RELEASE, OPERATOR_NS, AGENT_NS, MODEL_NS = "edgewise", "edgewise-system", "edgewise-node", "vision"
MODEL = "classifier"
SIM_NODES = 2


@dataclass
class Shipped:
    cluster: DevCluster
    chart: Path
    source_url: str
    models: dict[str, Path]
    runners: list[PodRunner] = field(default_factory=list)
    # DaemonSet spec changes (generation increments) each undisturbed rollout made, by target version.
    generation_increments: dict[str, int] = field(default_factory=dict)

    def kubectl_json(self, *args: str) -> dict:
        return json.loads(self.cluster.kubectl(*args, "-o", "json").stdout)

    def model(self) -> dict:
        return self.kubectl_json("get", "edgemodel", MODEL, "-n", MODEL_NS)

    def service_ip(self) -> str:
        svc = self.model().get("status", {}).get("address", "")
        name = svc.split(".")[0] if svc else f"edgewise-{MODEL}"
        return self.cluster.kubectl("get", "svc", name, "-n", MODEL_NS, "-o", "jsonpath={.spec.clusterIP}").stdout


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shipped]:
    work = Path(tmp_path_factory.mktemp("shipped"))
    built = images.ensure_images(arches=[images.host_arch()])
    cluster = DevCluster(REPO / ".cache" / "e2e-shipped", real_node=True, images=tuple(b.archive for b in built))
    cluster.down()
    cluster.up()
    server = None
    runners: list[PodRunner] = []
    try:
        with cluster.api_client() as api:
            sims = apply_fleet(api, {"amd64-cpu": SIM_NODES}, prefix="sim-", node_cidr=cluster.node_cidr)
            assert wait_ready(api, sims)
        # The model source, served over HTTP from this machine on the bridge (what the operator's pod
        # and the node agents reach).
        models = {v: f(work / "models" / f"{v}.onnx") for v, f in (("v1", demo_models.good), ("v2", demo_models.wrong))}
        port = processes.free_port(NODE_IP)
        server = http.server.ThreadingHTTPServer((NODE_IP, port),
                                                 functools.partial(_Quiet, directory=str(work / "models")))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        chart_dir = work / "chart"
        cluster.helm("package", str(REPO / "charts" / "edgewise"), "-d", str(chart_dir))
        chart = next(chart_dir.glob("edgewise-*.tgz"))
        for ns, level in ((OPERATOR_NS, "restricted"), (MODEL_NS, "restricted")):
            cluster.kubectl("create", "namespace", ns)
            cluster.kubectl("label", "namespace", ns, f"pod-security.kubernetes.io/enforce={level}")
        with cluster.api_client() as api:
            # The simulated nodes' kubelets: their agents and runtime pods run as local processes.
            sim_only = {*sims}
            runners = [PodRunner(api, work / "runner-agent", AGENT_NS, nodes=sim_only).start(),
                       PodRunner(api, work / "runner-models", MODEL_NS, nodes=sim_only).start()]
            yield Shipped(cluster, chart, f"http://{NODE_IP}:{port}", models, runners)
    finally:
        for r in runners:
            r.close()
        if server:
            server.shutdown()
        cluster.down()


def _install(s: Shipped, *extra: str) -> None:
    s.cluster.helm("install", RELEASE, str(s.chart), "-n", OPERATOR_NS, "--wait", "--timeout", "5m",
                   "--set", "operator.logLevel=DEBUG",
                   # The simulated nodes would take any pod and run nothing: the operator goes to the real one.
                   "--set-string", f"operator.nodeSelector.kubernetes\\.io/hostname={NODE_NAME}", *extra, timeout=420)


def _edgemodel(s: Shipped, version: str) -> dict:
    key = {"1.0.0": "v1", "2.0.0": "v2", "3.0.0": "v1"}[version]
    return {
        "apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel",
        "metadata": {"name": MODEL, "namespace": MODEL_NS},
        "spec": {
            "version": version,
            "source": {"uri": f"{s.source_url}/{key}.onnx", "sha256": demo_models.sha256(s.models[key])},
            "optimization": {"quantization": "none"},
            "rollout": {
                "steps": [{"percent": 34}, {"pause": {"duration": "5s"}}, {"percent": 100}],
                "analysis": {"provider": "none"},
            },
        },
    }


def _wait_rolled_out(s: Shipped, version: str, timeout: float = 300) -> None:
    """Wait for `version` to be rolled out; on timeout, fail with what the model and its pods say."""
    deadline = time.monotonic() + timeout
    while not _rolled_out(s, version):
        if time.monotonic() > deadline:
            status = s.model().get("status", {})
            pods = s.cluster.kubectl("get", "pods", "-n", MODEL_NS, "-o", "wide").stdout
            ds = s.cluster.kubectl("get", "daemonsets", "-n", MODEL_NS, "-o", "wide").stdout
            log = s.cluster.kubectl("logs", "-n", OPERATOR_NS, "deploy/edgewise-operator", "--tail=40",
                                    check=False).stdout
            pytest.fail(f"version {version} not rolled out after {timeout:.0f}s\nrollout: "
                        f"{json.dumps(status.get('rollout'), indent=1)}\nconditions: {status.get('conditions')}\n"
                        f"{pods}\n{ds}\noperator log:\n{log}")
        time.sleep(1)


def _apply(s: Shipped, manifest: dict) -> None:
    s.cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def _infer(url: str, x: np.ndarray) -> np.ndarray:
    client = triton_http.InferenceServerClient(url, network_timeout=10)
    inp = triton_http.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return client.infer(MODEL, [inp]).as_numpy("y")


def _expected(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]


class Load:
    """A steady client on the real node's host calling the model's node-local address; counts failures."""

    def __init__(self, url: str) -> None:
        self.url, self.ok, self.errors, self.last_error = url, 0, 0, ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        x = np.ones((1, demo_models.FEATURES), dtype=np.float32)
        while not self._stop.is_set():
            try:
                _infer(self.url, x)
                self.ok += 1
            except Exception as err:  # noqa: BLE001 - every failure is what the test counts
                self.errors += 1
                self.last_error = repr(err)[:300]
            self._stop.wait(0.02)


# -- the story ---------------------------------------------------------------------------------------

def test_helm_installs_the_operator_in_a_restricted_namespace(shipped: Shipped) -> None:
    _install(shipped)
    pods = shipped.kubectl_json("get", "pods", "-n", OPERATOR_NS, "-l", "app.kubernetes.io/name=edgewise")["items"]
    assert len(pods) == 1
    pod = pods[0]
    assert pod["spec"]["nodeName"] == NODE_NAME  # the only node that runs containers
    assert pod["spec"]["serviceAccountName"] == f"{RELEASE}-operator"  # the chart's, with its RBAC
    assert all(c["ready"] for c in pod["status"]["containerStatuses"])
    ns = shipped.kubectl_json("get", "namespace", OPERATOR_NS)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_node_agent_runs_on_the_real_node_with_its_cache(shipped: Shipped) -> None:
    def agent_pod() -> dict | None:
        pods = shipped.kubectl_json("get", "pods", "-n", AGENT_NS, "--field-selector",
                                    f"spec.nodeName={NODE_NAME}")["items"]
        ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                        for c in p["status"].get("conditions", []))]
        return ready[0] if ready else None
    pod = wait_for(agent_pod, 180, "the node agent Ready on the real node")
    assert isinstance(pod, dict)
    assert any("hostPath" in v for v in pod["spec"]["volumes"])


def test_a_model_serves_on_the_real_node_from_the_real_images(shipped: Shipped) -> None:
    _apply(shipped, _edgemodel(shipped, "1.0.0"))

    def ready() -> bool:
        status = shipped.model().get("status", {})
        return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
    wait_for(ready, 300, "EdgeModel classifier Ready")
    pods = shipped.kubectl_json("get", "pods", "-n", MODEL_NS, "--field-selector",
                                f"spec.nodeName={NODE_NAME}")["items"]
    assert len(pods) == 1
    pod = pods[0]
    assert pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    server = next(c for c in pod["spec"]["containers"] if c["name"] == "server")
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    x = np.random.default_rng(3).standard_normal((4, demo_models.FEATURES)).astype(np.float32)
    want = _expected(shipped.models["v1"], x)
    ip = shipped.service_ip()
    (got,) = wait_for(lambda: _try(lambda: _infer(f"{ip}:8000", x)), 60, "an answer through the model's Service")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    port = processes.free_port()
    forward = subprocess.Popen([str(shipped.cluster.tool("kubectl")), f"--kubeconfig={shipped.cluster.kubeconfig}",
                                "port-forward", "-n", MODEL_NS, f"pod/{pod['metadata']['name']}", f"{port}:8000"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        (got,) = wait_for(lambda: _try(lambda: _infer(f"127.0.0.1:{port}", x)), 60, "an answer through port-forward")
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    finally:
        processes.terminate(forward)  # type: ignore[arg-type]


def _try(call):
    """(call(),), or None while it fails: for wait_for, whatever the answer's truth value."""
    try:
        return (call(),)
    except Exception:  # noqa: BLE001 - not yet
        return None


def _daemonset_generations(s: Shipped) -> dict[str, int]:
    items = s.kubectl_json("get", "daemonsets", "-n", MODEL_NS)["items"]
    return {d["metadata"]["name"]: d["metadata"]["generation"] for d in items}


def _rolled_out(s: Shipped, version: str) -> bool:
    """The newest revision of the history is `version`, Succeeded, and the model is Ready for that spec."""
    model = s.model()
    status = model.get("status", {})
    history = (status.get("rollout") or {}).get("history") or [{}]
    return status.get("observedGeneration") == model["metadata"]["generation"] and \
        history[-1].get("version") == version and history[-1].get("outcome") == "Succeeded" and \
        any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))


def test_a_canary_rollout_across_real_and_simulated_nodes_drops_no_request(shipped: Shipped) -> None:
    ip = shipped.service_ip()
    before = _daemonset_generations(shipped)
    with Load(f"{ip}:8000") as load:
        _apply(shipped, _edgemodel(shipped, "2.0.0"))
        _wait_rolled_out(shipped, "2.0.0")
        time.sleep(2)  # a little load on the new version too
    print(f"[e2e] rollout 1.0.0 -> 2.0.0 under load: {load.ok} answered, {load.errors} refused")
    assert load.ok > 50
    assert load.errors == 0, load.last_error
    x = np.random.default_rng(4).standard_normal((2, demo_models.FEATURES)).astype(np.float32)
    np.testing.assert_allclose(_infer(f"{ip}:8000", x), _expected(shipped.models["v2"], x), rtol=1e-4, atol=1e-4)
    shipped.generation_increments["2.0.0"] = _increments(before, _daemonset_generations(shipped))
    assert shipped.generation_increments["2.0.0"] > 0


def test_a_deleted_operator_pod_comes_back_and_finishes_the_rollout_without_extra_writes(shipped: Shipped) -> None:
    # The rollout 2.0.0 → 3.0.0 (the first weights again) with the operator's pod deleted after its
    # first step must make exactly the DaemonSet changes the undisturbed 1.0.0 → 2.0.0 rollout made.
    undisturbed = shipped.generation_increments["2.0.0"]
    before = _daemonset_generations(shipped)
    old = _operator_pod(shipped)
    _apply(shipped, _edgemodel(shipped, "3.0.0"))
    wait_for(lambda: _canary_started(shipped), 120, "the 3.0.0 canary to start")
    shipped.cluster.kubectl("delete", "pod", "-n", OPERATOR_NS, old["metadata"]["name"], "--wait=false")
    new = wait_for(lambda: _operator_pod(shipped, not_uid=old["metadata"]["uid"]), 180,
                   "the Deployment to start a new operator pod")
    assert isinstance(new, dict)
    _wait_rolled_out(shipped, "3.0.0")
    after = _daemonset_generations(shipped)
    assert _increments(before, after) == undisturbed


def _operator_pod(s: Shipped, not_uid: str = "") -> dict | None:
    pods = s.kubectl_json("get", "pods", "-n", OPERATOR_NS, "-l", "app.kubernetes.io/name=edgewise")["items"]
    ready = [p for p in pods if p["metadata"]["uid"] != not_uid and not p["metadata"].get("deletionTimestamp")
             and all(c.get("ready") for c in p["status"].get("containerStatuses", [{}]))]
    return ready[0] if ready else None


def _canary_started(s: Shipped) -> bool:
    classes = s.model().get("status", {}).get("rollout", {}).get("classes", [])
    return any(c.get("canaryVersion") == "3.0.0" and c.get("percent", 0) > 0 for c in classes)


def _increments(before: dict[str, int], after: dict[str, int]) -> int:
    return sum(gen - before.get(name, 0) for name, gen in after.items())


def test_helm_upgrade_with_changed_values_keeps_serving(shipped: Shipped) -> None:
    ip = shipped.service_ip()
    pods_before = _serving_pods(shipped)
    old = _operator_pod(shipped)
    assert old is not None
    with Load(f"{ip}:8000") as load:
        shipped.cluster.helm("upgrade", RELEASE, str(shipped.chart), "-n", OPERATOR_NS, "--reuse-values",
                             "--set", "operator.resyncSeconds=120", "--wait", "--timeout", "5m", timeout=420)
        new = wait_for(lambda: _operator_pod(shipped, not_uid=old["metadata"]["uid"]), 180, "the upgraded operator")
        time.sleep(3)
    assert isinstance(new, dict)
    env = {e["name"]: e.get("value") for e in new["spec"]["containers"][0]["env"]}
    assert env["EDGEWISE_RESYNC_SECONDS"] == "120"
    assert load.ok > 20 and load.errors == 0, load.last_error
    pods_after = _serving_pods(shipped)
    assert pods_after == pods_before  # the model's pods were not touched


def _serving_pods(s: Shipped) -> set[str]:
    """The model's pods that are not on their way out (the last rollout's old pods may still be)."""
    return {p["metadata"]["uid"] for p in s.kubectl_json("get", "pods", "-n", MODEL_NS)["items"]
            if not p["metadata"].get("deletionTimestamp")}


def test_helm_uninstall_removes_the_operator_and_keeps_crds_and_models(shipped: Shipped) -> None:
    shipped.cluster.helm("uninstall", RELEASE, "-n", OPERATOR_NS, "--wait", "--timeout", "3m", timeout=240)
    wait_for(lambda: not shipped.kubectl_json("get", "pods", "-n", OPERATOR_NS)["items"], 120,
             "the operator pod to go")
    assert not shipped.kubectl_json("get", "deployments", "-n", OPERATOR_NS)["items"]
    crds = {c["metadata"]["name"] for c in shipped.kubectl_json("get", "crds")["items"]}
    assert {"edgemodels.edgewise.io", "deploymentprofiles.edgewise.io"} <= crds
    assert shipped.model()["spec"]["version"] == "3.0.0"
    x = np.ones((1, demo_models.FEATURES), dtype=np.float32)
    assert _infer(f"{shipped.service_ip()}:8000", x).shape == (1, demo_models.CLASSES)  # still serving
