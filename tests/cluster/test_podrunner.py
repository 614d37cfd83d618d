"""The pod runner turns a simulated pod into real processes: its fetch init container and its server."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import tritonclient.http as triton_http
from kubernetes import client as k8s
from onnx import TensorProto, helper

from edgewise import contract
from edgewise.devcluster.cluster import DevCluster
from edgewise.devcluster.podrunner import PodRunner, local_argv, map_paths
from wait_support import wait_for

SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
            "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}, "readOnlyRootFilesystem": True}


def _add_one_model(path: Path) -> str:
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])], "add_one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[helper.make_tensor("one", TensorProto.FLOAT, [3], [1.0, 1.0, 1.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_argv_and_paths_are_translated_like_a_kubelet_would() -> None:
    container = {"name": "s", "command": ["edgewise", "serve"], "args": ["--model-dir", "/models/m", "--x=$(A)"]}
    argv = local_argv(container, {"A": "1"}, python="py")
    assert argv == ["py", "-m", "edgewise", "serve", "--model-dir", "/models/m", "--x=1"]
    assert map_paths(argv, {"/models": Path("/tmp/v")})[5] == "/tmp/v/m"
    assert map_paths(["/tmp/x", "/tmpfoo", "/tmp"], {"/tmp": Path("/v")}) == ["/v/x", "/tmpfoo", "/v"]


def test_a_pod_of_fetch_and_serve_answers_inference_on_its_pod_ip(
        cluster: DevCluster, namespace: str, fleet, tmp_path: Path) -> None:
    node = fleet({"arm64-cpu": 1})[0]
    model_file = tmp_path / "source" / "model.onnx"
    model_file.parent.mkdir()
    digest = _add_one_model(model_file)
    request = contract.FetchRequest(uri=model_file.as_uri(), sha256=digest, model_name="addone")
    mount = {"name": contract.MODEL_VOLUME, "mountPath": contract.MODEL_ROOT}
    pod = {
        "metadata": {"name": "runner-probe", "labels": {"app": "runner-probe"}},
        "spec": {
            "nodeName": node,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [{"name": "fetch", "image": "edgewise/onnxruntime:dev", "command": ["edgewise", "fetch"],
                                "args": request.to_args(), "volumeMounts": [mount], "securityContext": SECURITY}],
            "containers": [{"name": "server", "image": "edgewise/onnxruntime:dev", "command": ["edgewise", "serve"],
                            "args": ["--model-dir", contract.model_dir("addone"), "--model-name", "addone"],
                            "volumeMounts": [{**mount, "readOnly": True}], "securityContext": SECURITY}],
            "volumes": [{"name": contract.MODEL_VOLUME, "emptyDir": {}}],
        },
    }
    with cluster.api_client() as api:
        k8s.CoreV1Api(api).create_namespaced_pod(namespace, pod)  # admitted under `restricted`
        with PodRunner(api, tmp_path / "pods", namespace, "app=runner-probe").start() as runner:
            procs = wait_for(lambda: next(iter(runner.running().values()), None), 60, "the pod's processes")
            assert not procs.error, procs.error
            assert (procs.workdir / "volumes" / contract.MODEL_VOLUME / "addone").is_dir()
            client = triton_http.InferenceServerClient(f"{procs.pod_ip}:{contract.HTTP_PORT}")
            wait_for(lambda: _ready(client), 120, "edgewise serve ready on the pod IP")
            x = triton_http.InferInput("x", [1, 3], "FP32")
            x.set_data_from_numpy(np.array([[1, 2, 3]], dtype=np.float32))
            y = client.infer("addone", [x]).as_numpy("y")
            np.testing.assert_allclose(y, [[2, 3, 4]])
            # Deleting the pod stops its processes.
            k8s.CoreV1Api(api).delete_namespaced_pod("runner-probe", namespace, grace_period_seconds=0)
            wait_for(lambda: not runner.running(), 60, "the runner to stop the deleted pod")
            assert not _ready(client)


def _ready(client: triton_http.InferenceServerClient) -> bool:
    try:
        return bool(client.is_server_ready())
    except Exception:
        return False
