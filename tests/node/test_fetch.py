"""`edgewise fetch` against a real agent and source on loopback: layouts, fallbacks, TensorRT plans.

NVIDIA's trtexec cannot run here (no GPU, no TensorRT): the plan tests use a
small fake trtexec written by the test, which records its invocations and
writes a stand-in plan. What they prove is Edgewise's side: the command, the
cache key, one build per key per node, the upload and the reuse.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cache_support import POD, REPO, AgentProcess, SourceServer, free_port, sha256
from fetch_models_support import dynamic_sequence, mixed_types, mlp

from edgewise import contract
from edgewise.node import fetch as fetch_mod
from edgewise.node import triton_config as tc
from edgewise.node import trtexec as trt
from edgewise.shared.digest import DigestMismatch
from edgewise.shared.tensors import TensorSpec

FP32 = 1  # onnx.TensorProto.FLOAT
MODEL = mlp()
DIGEST = sha256(MODEL)



@pytest.fixture
def agent(agents) -> AgentProcess:
    return agents()


def run_fetch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgewise", "fetch", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=REPO, timeout=120, check=False)


def request(uri: str, dest: Path, agent: str = "", token: str = POD, **kw: object) -> contract.FetchRequest:
    """The init container's request; its projected token (here: the test agent's pod token) in a file."""
    token_file = dest.parent / f"token-{dest.name}"
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text(token)
    return contract.FetchRequest(uri=uri, sha256=DIGEST, model_name="detector", dest=str(dest), agent=agent,
                                 agent_token_file=str(token_file), **kw)  # type: ignore[arg-type]


def leftovers(dest: Path) -> list[str]:
    return [p.name for p in dest.iterdir() if p.name.startswith(".")]


# ---- layouts, as real processes -----------------------------------------------------------------

def test_onnxruntime_layout_through_the_agent(source, agent, tmp_path) -> None:
    dest = tmp_path / "models"
    req = request(source.add("/m.onnx", MODEL), dest, agent.url)
    proc = run_fetch(*req.to_args())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(dest / "detector")
    assert (dest / "detector" / "1" / "model.onnx").read_bytes() == MODEL
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == ["detector", "detector/1",
                                                                          "detector/1/model.onnx"]
    assert [(e["sha256"], e["models"]) for e in agent.artifacts()] == [(DIGEST, ["vision/detector"])]
    assert "from the agent" in proc.stderr


def test_without_a_valid_token_the_agent_refuses_and_the_fetch_goes_to_the_source(source, agent, tmp_path):
    dest = tmp_path / "models"
    req = request(source.add("/m.onnx", MODEL), dest, agent.url, token="not a token")
    proc = run_fetch(*req.to_args())
    assert proc.returncode == 0, proc.stderr
    assert "HTTP 401" in proc.stderr and "fetching from the source" in proc.stderr
    assert (dest / "detector" / "1" / "model.onnx").read_bytes() == MODEL
    assert agent.artifacts() == []  # nothing was filled for a caller the agent could not identify


def test_triton_onnx_layout_with_the_tensorrt_accelerator(source, agent, tmp_path) -> None:
    dest = tmp_path / "models"
    req = request(source.add("/m.onnx", MODEL), dest, agent.url, layout=contract.Layout.TRITON_ONNX,
                  precision="fp16", max_batch_size=8, max_queue_delay_us=500)
    proc = run_fetch(*req.to_args(), "--instance-count", "2")
    assert proc.returncode == 0, proc.stderr
    model_dir = dest / "detector"
    assert (model_dir / "1" / "model.onnx").read_bytes() == MODEL
    cfg = tc.parse((model_dir / "config.pbtxt").read_text())
    assert (cfg.name, cfg.platform, cfg.max_batch_size) == ("detector", "onnxruntime_onnx", 8)
    assert [(i.name, list(i.dims)) for i in cfg.input] == [("x", [4])]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert cfg.instance_group[0].count == 2
    [accelerator] = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"


def test_triton_openvino_layout_for_tritons_openvino_backend(source, agent, tmp_path) -> None:
    dest = tmp_path / "models"
    req = request(source.add("/m.onnx", MODEL), dest, agent.url, layout=contract.Layout.TRITON_OPENVINO,
                  precision="int8", max_batch_size=8, max_queue_delay_us=500, device="GPU")
    assert req.to_args()[-2:] == ["--device", "GPU"]
    proc = run_fetch(*req.to_args())
    assert proc.returncode == 0, proc.stderr
    model_dir = dest / "detector"
    assert (model_dir / "1" / "model.onnx").read_bytes() == MODEL
    cfg = tc.parse((model_dir / "config.pbtxt").read_text())
    assert (cfg.name, cfg.backend, cfg.default_model_filename, cfg.max_batch_size) == (
        "detector", "openvino", "model.onnx", 8)
    assert cfg.parameters["TARGET_DEVICE"].string_value == "GPU"
    assert [(i.name, list(i.dims)) for i in cfg.input] == [("x", [4])]


def test_triton_tensorrt_builds_the_plan_once_per_node_and_reuses_it(source, agent, tmp_path, fake_trtexec):
    exe, builds = fake_trtexec
    uri = source.add("/m.onnx", MODEL)
    env = {trt.TRTEXEC_ENV: str(exe), contract.GPU_COMPUTE_CAPABILITY_ENV: "8.7"}
    plans = []
    for pod in ("pod-a", "pod-b"):
        dest = tmp_path / pod
        req = request(uri, dest, agent.url, layout=contract.Layout.TRITON_TENSORRT, precision="fp16",
                      max_batch_size=8, max_queue_delay_us=100)
        proc = run_fetch(*req.to_args(), env=env)
        assert proc.returncode == 0, proc.stderr
        model_dir = dest / "detector"
        assert sorted(p.name for p in (model_dir / "1").iterdir()) == ["model.plan"]
        plans.append((model_dir / "1" / "model.plan").read_bytes())
        cfg = tc.parse((model_dir / "config.pbtxt").read_text())
        assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 8
    build_lines = builds.read_text().splitlines()
    assert len(build_lines) == 1, build_lines  # the second pod got the plan from the agent
    assert "--fp16" in build_lines[0].split() and "--maxShapes=x:8x4" in build_lines[0].split()
    assert plans[0] == plans[1] and plans[0].startswith(b"FAKE-PLAN")
    key = contract.plan_cache_key(DIGEST, "8.7", "8.6.1", "fp16")  # version read from trtexec's banner
    listing = {e["sha256"]: e for e in agent.artifacts()}
    assert listing[sha256(plans[0])]["plan_keys"] == [f"{key}-ns.vision"]


def test_fetch_falls_back_to_the_source_when_no_agent_answers(source, tmp_path) -> None:
    dest = tmp_path / "models"
    req = request(source.add("/m.onnx", MODEL), dest, f"http://127.0.0.1:{free_port()}")
    proc = run_fetch(*req.to_args())
    assert proc.returncode == 0, proc.stderr
    assert "fetching from the source" in proc.stderr
    assert (dest / "detector" / "1" / "model.onnx").read_bytes() == MODEL


def test_a_digest_mismatch_fails_the_fetch_and_lays_out_nothing(source, tmp_path) -> None:
    dest = tmp_path / "models"
    req = request(source.add("/m.onnx", b"a different model"), dest)
    proc = run_fetch(*req.to_args())
    assert proc.returncode == 1
    assert "digest mismatch" in proc.stderr
    assert list(dest.iterdir()) == []


# ---- failure paths, in process (same code, faster) ----------------------------------------------

def test_bytes_from_a_broken_agent_are_checked_and_replaced_from_the_source(source, tmp_path) -> None:
    liar = SourceServer().start()  # answers the agent's API with the wrong bytes
    try:
        liar.add(f"/v1/artifacts/{DIGEST}", b"corrupted by the agent")
        liar.post_ready.add(contract.AGENT_PREFETCH_PATH)
        result = fetch_mod.fetch(request(source.add("/m.onnx", MODEL), tmp_path / "models", liar.url("")))
    finally:
        liar.stop()
    assert liar.count(f"/v1/artifacts/{DIGEST}") >= 1
    assert result.artifact_from == "source"
    assert (result.model_dir / "1" / "model.onnx").read_bytes() == MODEL


def test_a_rerun_replaces_the_layout_of_an_earlier_try(source, tmp_path) -> None:
    dest = tmp_path / "models"
    stale = dest / "detector" / "1"
    stale.mkdir(parents=True)
    (stale / "model.onnx").write_bytes(b"from an earlier, interrupted try")
    fetch_mod.fetch(request(source.add("/m.onnx", MODEL), dest))
    assert (stale / "model.onnx").read_bytes() == MODEL
    assert leftovers(dest) == []


def test_a_failed_plan_build_fails_the_fetch_with_trtexec_output(source, tmp_path, fake_trtexec, monkeypatch):
    exe, _ = fake_trtexec
    monkeypatch.setenv("FAKE_TRTEXEC_FAIL", "1")
    dest = tmp_path / "models"
    req = request(source.add("/m.onnx", MODEL), dest, layout=contract.Layout.TRITON_TENSORRT)
    options = fetch_mod.TensorRTOptions(compute_capability="8.7", trtexec=str(exe))
    with pytest.raises(RuntimeError, match="failed to parse onnx"):
        fetch_mod.fetch(req, options=options)
    assert list(dest.iterdir()) == []


def test_a_model_triton_cannot_batch_fails_before_any_build(source, tmp_path, fake_trtexec) -> None:
    exe, builds = fake_trtexec
    static = mlp(batch=1)
    req = contract.FetchRequest(uri=source.add("/static.onnx", static), sha256=sha256(static), model_name="m",
                                dest=str(tmp_path / "models"), layout=contract.Layout.TRITON_TENSORRT,
                                max_batch_size=8)
    options = fetch_mod.TensorRTOptions(compute_capability="8.7", trtexec=str(exe))
    with pytest.raises(ValueError, match="dynamic first"):
        fetch_mod.fetch(req, options=options)
    assert not builds.exists()


def test_a_plan_needs_the_compute_capability(source, tmp_path, fake_trtexec) -> None:
    exe, _ = fake_trtexec
    req = request(source.add("/m.onnx", MODEL), tmp_path / "models", layout=contract.Layout.TRITON_TENSORRT)
    with pytest.raises(ValueError, match=contract.GPU_COMPUTE_CAPABILITY_ENV):
        fetch_mod.fetch(req, options=fetch_mod.TensorRTOptions(trtexec=str(exe)), env={})


def test_wrong_digest_from_source_raises_digest_mismatch(source, tmp_path) -> None:
    req = request(source.add("/m.onnx", b"other"), tmp_path / "models")
    with pytest.raises(DigestMismatch):
        fetch_mod.fetch(req, attempts=1)
    with pytest.raises(ValueError, match="plain directory name"):
        fetch_mod.fetch(contract.FetchRequest(uri="file:///x", sha256=DIGEST, model_name="../etc",
                                              dest=str(tmp_path)))


# ---- the trtexec command and version (pure) -----------------------------------------------------

def test_trtexec_command_per_precision_and_batching() -> None:
    x = TensorSpec("x", FP32, ("N", 3, 224, 224))
    cmd = trt.trtexec_command("trtexec", "/m/model.onnx", "/m/model.plan", precision="int8",
                              inputs=[x], max_batch_size=8)
    assert cmd == ["trtexec", "--onnx=/m/model.onnx", "--saveEngine=/m/model.plan", "--int8",
                   "--minShapes=x:1x3x224x224", "--optShapes=x:8x3x224x224", "--maxShapes=x:8x3x224x224"]
    static = TensorSpec("input:0", FP32, (1, 4))
    assert trt.trtexec_command("t", "a", "b", precision="fp32", inputs=[static]) == [
        "t", "--onnx=a", "--saveEngine=b"]
    colon = TensorSpec("input:0", FP32, ("N", 4))
    cmd = trt.trtexec_command("t", "a", "b", precision="fp16", inputs=[colon])
    assert cmd[-1] == "--maxShapes='input:0':1x4"


def test_a_dynamic_dimension_beyond_the_batch_is_refused_for_plans(tmp_path) -> None:
    path = tmp_path / "seq.onnx"
    path.write_bytes(dynamic_sequence())
    inputs, _ = tc.load_onnx_io(path)
    with pytest.raises(ValueError, match="tokens"):
        trt.optimization_shapes(inputs, 8)


@pytest.mark.parametrize(("banner", "version"), [
    ("&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # trtexec", "8.6.1"),
    ("&&&& RUNNING TensorRT.trtexec [TensorRT v8503] # trtexec --help", "8.5.3"),
    ("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec", "10.3.0"),
    ("TensorRT version: 10.7.0", "10.7.0"),
    ("no banner here", None),
])
def test_tensorrt_version_from_the_trtexec_banner(banner: str, version: str | None) -> None:
    assert trt.parse_tensorrt_version(banner) == version


def test_version_and_capability_resolution(fake_trtexec) -> None:
    exe, _ = fake_trtexec
    assert trt.detect_tensorrt_version(str(exe), None, {}) == "8.6.1"
    assert trt.detect_tensorrt_version(str(exe), None, {contract.TENSORRT_VERSION_ENV: "10.3.0"}) == "10.3.0"
    assert trt.compute_capability(None, {contract.GPU_COMPUTE_CAPABILITY_ENV: "8.7"}) == "8.7"
    assert trt.compute_capability("7.2", {}) == "7.2"
    assert trt.find_trtexec(None, {trt.TRTEXEC_ENV: str(exe)}) == str(exe)


def test_mixed_types_survive_into_the_plan_config_with_int64_as_int32_before_trt10(tmp_path) -> None:
    path = tmp_path / "mixed.onnx"
    path.write_bytes(mixed_types())
    inputs, outputs = tc.load_onnx_io(path)
    old = tc.tensorrt_plan_config("m", inputs, outputs, tensorrt_major=8)
    new = tc.tensorrt_plan_config("m", inputs, outputs, tensorrt_major=10)
    names = tc.parse(tc.render(old)).input
    assert [tc_type(i.data_type) for i in names] == ["TYPE_INT32", "TYPE_BOOL", "TYPE_FP16"]
    assert [tc_type(i.data_type) for i in new.input] == ["TYPE_INT64", "TYPE_BOOL", "TYPE_FP16"]


def tc_type(value: int) -> str:
    from tritonclient.grpc import model_config_pb2 as mc

    return str(mc.DataType.Name(value))

