"""The amd64 ONNX Runtime image, run for real as a Linux container with Debian's runc.

A smoke test of the image itself (its wrapper, its Python, its wheels, non-root with a read-only
root filesystem): the image's layers are unpacked into a bundle and `runc run` starts `edgewise
fetch` and then `edgewise serve`, which must answer Triton's readiness endpoint. The kubelet tests
(the real node) cover the path through containerd and the CRI.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from onnx import TensorProto, helper, numpy_helper

from edgewise.devcluster import images, oci
from edgewise.devcluster.processes import free_ports
from wait_support import wait_for

# The first test to need the images builds what the cache lacks: a cold build takes minutes.
pytestmark = pytest.mark.timeout(2400)

UID = 65532


def _mlp() -> bytes:
    import numpy as np

    w = numpy_helper.from_array(np.eye(4, 3, dtype=np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    (built,) = images.ensure_images(["onnxruntime"], ["amd64"])
    work = tmp_path_factory.mktemp("bundle")
    root = work / "rootfs"
    root.mkdir()
    subprocess.run(["tar", "-x", "-C", str(work), "-f", str(built.archive)], check=True)
    for layer in oci.read_docker_archive(built.archive).layers:
        # GNU tar as root keeps owners and modes as a runtime's unpacker would (the layers have no whiteouts).
        subprocess.run(["tar", "-x", "-C", str(root), "--numeric-owner", "-f", str(work / layer)], check=True)
    return root


class Runc:
    def __init__(self, rootfs: Path, work: Path) -> None:
        self.rootfs, self.work = rootfs, work
        self.state = work / "runc-state"
        self.procs: list[tuple[str, subprocess.Popen[str]]] = []

    def _bundle(self, args: list[str], mounts: dict[str, tuple[Path, bool]], host_network: bool) -> Path:
        bundle = self.work / f"bundle-{uuid.uuid4().hex[:8]}"
        bundle.mkdir()
        subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
        config = json.loads((bundle / "config.json").read_text())
        config["root"] = {"path": str(self.rootfs), "readonly": True}
        proc = config["process"]
        proc["terminal"] = False
        proc["args"] = args
        proc["user"] = {"uid": UID, "gid": UID}
        proc["env"] = ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp"]
        config["mounts"] += [{"destination": dest, "type": "bind", "source": str(src),
                              "options": ["rbind", "ro" if ro else "rw"]} for dest, (src, ro) in mounts.items()]
        if host_network:
            ns = config["linux"]["namespaces"]
            config["linux"]["namespaces"] = [n for n in ns if n["type"] != "network"]
        (bundle / "config.json").write_text(json.dumps(config))
        return bundle

    def run(self, args: list[str], mounts: dict[str, tuple[Path, bool]]) -> subprocess.CompletedProcess[str]:
        bundle = self._bundle(args, mounts, host_network=False)
        return subprocess.run(["runc", "--root", str(self.state), "run", "--bundle", str(bundle),
                               f"ew-{bundle.name}"], capture_output=True, text=True, timeout=300, check=False)

    def start(self, args: list[str], mounts: dict[str, tuple[Path, bool]], log: Path) -> str:
        bundle = self._bundle(args, mounts, host_network=True)
        cid = f"ew-{bundle.name}"
        with open(log, "w") as out:
            proc = subprocess.Popen(["runc", "--root", str(self.state), "run", "--bundle", str(bundle), cid],
                                    stdout=out, stderr=subprocess.STDOUT, text=True)
        self.procs.append((cid, proc))
        return cid

    def stop_all(self) -> None:
        for cid, proc in self.procs:
            subprocess.run(["runc", "--root", str(self.state), "kill", cid, "KILL"], capture_output=True, check=False)
            proc.wait(60)
            subprocess.run(["runc", "--root", str(self.state), "delete", "--force", cid], capture_output=True,
                           check=False)


@pytest.fixture
def runc(rootfs: Path, tmp_path: Path) -> Iterator[Runc]:
    assert shutil.which("runc"), "runc is not installed: apt-get install runc"
    r = Runc(rootfs, tmp_path)
    try:
        yield r
    finally:
        r.stop_all()


def test_serve_and_fetch_answer_help_as_non_root(runc: Runc) -> None:
    for command in ("serve", "fetch"):
        proc = runc.run(["edgewise", command, "--help"], {})
        assert proc.returncode == 0, proc.stderr + proc.stdout
        assert f"usage: edgewise {command}" in proc.stdout


def test_fetch_then_serve_a_model_in_the_container(runc: Runc, tmp_path: Path) -> None:
    model = _mlp()
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.onnx").write_bytes(model)
    models = tmp_path / "models"
    models.mkdir()
    os.chown(models, UID, UID)  # the pod's emptyDir, writable by the image's user
    proc = runc.run(["edgewise", "fetch", "--uri", "file:///src/model.onnx", "--sha256",
                     hashlib.sha256(model).hexdigest(), "--model-name", "mlp", "--dest", "/models"],
                    {"/src": (src, True), "/models": (models, False)})
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert list((models / "mlp").rglob("*.onnx")), list(models.rglob("*"))
    http, grpc, metrics = free_ports(3)
    log = tmp_path / "serve.log"
    runc.start(["edgewise", "serve", "--model-dir", "/models/mlp", "--model-name", "mlp", "--host", "127.0.0.1",
                "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
               {"/models": (models, True)}, log)

    def ready() -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    wait_for(ready, 120, f"the containerized server to be ready (log: {log.read_text() if log.exists() else ''})")
    import urllib.request

    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
    req = urllib.request.Request(f"http://127.0.0.1:{http}/v2/models/mlp/infer", data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        out = json.load(r)
    assert out["outputs"][0]["data"] == [1.0, 2.0, 3.0]
