"""The amd64 node runtime images (ONNX Runtime, OpenVINO), run for real as Linux containers with Debian's runc.

A smoke test of each image itself (its wrapper, its Python, its wheels, non-root with a read-only
root filesystem): the image's layers are unpacked into a bundle and `runc run` starts `edgewise
fetch` and then `edgewise serve`, which must answer Triton's readiness endpoint. The kubelet tests
(the real node) cover the path through containerd and the CRI.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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
REPO = Path(__file__).resolve().parents[2]


def _pinned(package: str) -> str:
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == package:
            return version.strip()
    raise AssertionError(f"{package} is not pinned in constraints.txt")


def _mlp() -> bytes:
    import numpy as np

    w = numpy_helper.from_array(np.eye(4, 3, dtype=np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _unpack(name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    (built,) = images.ensure_images([name], ["amd64"])
    work = tmp_path_factory.mktemp(f"bundle-{name}")
    root = work / "rootfs"
    root.mkdir()
    subprocess.run(["tar", "-x", "-C", str(work), "-f", str(built.archive)], check=True)
    for layer in oci.read_docker_archive(built.archive).layers:
        # GNU tar as root keeps owners and modes as a runtime's unpacker would (the layers have no whiteouts).
        subprocess.run(["tar", "-x", "-C", str(root), "--numeric-owner", "-f", str(work / layer)], check=True)
    return root


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _unpack("onnxruntime", tmp_path_factory)


@pytest.fixture(scope="module")
def openvino_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _unpack("node-openvino", tmp_path_factory)


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


def _runc(rootfs: Path, tmp_path: Path) -> Iterator[Runc]:
    assert shutil.which("runc"), "runc is not installed: apt-get install runc"
    r = Runc(rootfs, tmp_path)
    try:
        yield r
    finally:
        r.stop_all()


@pytest.fixture
def runc(rootfs: Path, tmp_path: Path) -> Iterator[Runc]:
    yield from _runc(rootfs, tmp_path)


@pytest.fixture
def openvino_runc(openvino_rootfs: Path, tmp_path: Path) -> Iterator[Runc]:
    yield from _runc(openvino_rootfs, tmp_path)


def test_serve_and_fetch_answer_help_as_non_root(runc: Runc) -> None:
    for command in ("serve", "fetch"):
        proc = runc.run(["edgewise", command, "--help"], {})
        assert proc.returncode == 0, proc.stderr + proc.stdout
        assert f"usage: edgewise {command}" in proc.stdout


def _fetch_then_serve(runc: Runc, tmp_path: Path, *serve_args: str) -> None:
    """`edgewise fetch` lays the model out in a volume, `edgewise serve <serve_args>` answers an inference."""
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
                "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics), *serve_args],
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


def test_fetch_then_serve_a_model_in_the_container(runc: Runc, tmp_path: Path) -> None:
    _fetch_then_serve(runc, tmp_path)


# ---- the OpenVINO node image ----------------------------------------------------------------------


OPENVINO_RUN = """
import sys
sys.path.insert(0, "/opt/edgewise/lib")  # what /usr/local/bin/edgewise does
import numpy as np
import openvino as ov
core = ov.Core()
compiled = core.compile_model(core.read_model("/src/model.onnx"), "CPU")
out = compiled(np.array([[1, 2, 3, 4]], dtype=np.float32))[0]
print(ov.get_version(), ",".join(core.available_devices), out.tolist())
"""


def test_openvino_runs_a_model_through_the_image_interpreter(openvino_runc: Runc, tmp_path: Path) -> None:
    # The image's python, its path and its OpenVINO wheel, non-root on a read-only root: read an ONNX
    # file (the openvino runtime's artifact format), compile it for the CPU and run it.
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.onnx").write_bytes(_mlp())
    proc = openvino_runc.run(["/usr/local/bin/python3", "-c", OPENVINO_RUN], {"/src": (src, True)})
    assert proc.returncode == 0, proc.stderr + proc.stdout
    version, devices, out = proc.stdout.strip().splitlines()[-1].split(" ", 2)
    assert version.startswith(_pinned("openvino")), version
    assert "CPU" in devices.split(","), devices
    assert out == "[[1.0, 2.0, 3.0]]"


def test_openvino_image_has_fetch_and_serve_as_non_root(openvino_runc: Runc) -> None:
    for command in ("serve", "fetch"):
        proc = openvino_runc.run(["edgewise", command, "--help"], {})
        assert proc.returncode == 0, proc.stderr + proc.stdout
        assert f"usage: edgewise {command}" in proc.stdout


def test_openvino_image_serve_offers_the_openvino_backend(openvino_runc: Runc) -> None:
    proc = openvino_runc.run(["edgewise", "serve", "--help"], {})
    assert proc.returncode == 0, proc.stderr + proc.stdout
    backend = re.search(r"--backend \{([^}]*)\}", proc.stdout)
    assert backend and "openvino" in backend.group(1).split(","), proc.stdout


def test_fetch_then_serve_with_openvino_in_the_container(openvino_runc: Runc, tmp_path: Path) -> None:
    _fetch_then_serve(openvino_runc, tmp_path, "--backend", "openvino", "--device", "CPU")
