"""`edgewise serve` over its life: batching under load, metrics, warm-up, graceful drain."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import serve_models_support
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from serve_support import ServeProcess, http_status, in_threads, serving

from edgewise import contract
from wait_support import wait_for

TRITON_COUNTERS = [
    "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
    "nv_inference_exec_count", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
]


def _mlp(tmp_path: Path) -> Path:
    serve_models_support.mlp(tmp_path / "mlp" / "model.onnx")
    return tmp_path / "mlp"


def _infer(server: ServeProcess, proto: str, x: np.ndarray) -> np.ndarray:
    mod: Any = httpclient if proto == "http" else grpcclient
    i = mod.InferInput("x", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    c = server.http() if proto == "http" else server.grpc()
    return c.infer("mlp", [i]).as_numpy("y")


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


def _samples(server: ServeProcess) -> dict[str, list[Sample]]:
    """Sample lines by their exact name on the wire (prometheus-client's parser would add _total)."""
    out: dict[str, list[Sample]] = {}
    for line in server.metrics().splitlines():
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if m:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out.setdefault(m.group(1), []).append(Sample(labels, float(m.group(3))))
    return out


def test_dynamic_batching_merges_concurrent_requests_across_protocols(tmp_path: Path) -> None:
    """Four requests queued while a 60 s delay holds the batch open: one execution of 4."""
    model_dir = _mlp(tmp_path)
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    rows = np.random.default_rng(3).standard_normal((4, 1, 4)).astype(np.float32)
    with serving(model_dir, "mlp", tmp_path / "log", "--max-batch-size", "4",
                 "--max-queue-delay-us", "60000000") as server:
        protos = ["http", "grpc", "http", "grpc"]
        results = in_threads([lambda k=k: _infer(server, protos[k], rows[k]) for k in range(4)])
        for k, got in enumerate(results):
            assert not isinstance(got, BaseException), got
            np.testing.assert_allclose(got, session.run(None, {"x": rows[k]})[0], rtol=1e-6)
        (stats,) = server.http().get_inference_statistics("mlp")["model_stats"]
    assert stats["inference_count"] == 4
    assert stats["execution_count"] < stats["inference_count"]
    assert [b["batch_size"] for b in stats["batch_stats"]] == [4]


def test_metrics_use_triton_names_and_agree_with_statistics(tmp_path: Path) -> None:
    with serving(_mlp(tmp_path), "mlp", tmp_path / "log", "--max-batch-size", "8") as server:
        assert "# TYPE nv_inference_count counter" in server.metrics()  # Triton's family name, no _total
        for proto in ("http", "grpc", "http"):
            _infer(server, proto, np.ones((2, 4), np.float32))
        with pytest.raises(Exception, match="Expected"):
            _infer(server, "http", np.ones((2, 5), np.float32))
        samples = _samples(server)
        (stats,) = server.http().get_inference_statistics("mlp")["model_stats"]
    for name in TRITON_COUNTERS:
        assert name in samples, f"{name} missing from /metrics"  # exact name: no _total suffix
        assert samples[name][0].labels == {"model": "mlp", "version": "1"}
    value = {name: samples[name][0].value for name in TRITON_COUNTERS}
    assert value["nv_inference_request_success"] == stats["inference_stats"]["success"]["count"] == 3
    assert value["nv_inference_request_failure"] == 1
    assert value["nv_inference_count"] == stats["inference_count"] == 6
    assert value["nv_inference_exec_count"] == stats["execution_count"]
    infer_ns = stats["inference_stats"]["compute_infer"]["ns"]
    assert value["nv_inference_compute_infer_duration_us"] == infer_ns // 1000
    histogram_count = samples[contract.LATENCY_HISTOGRAM + "_count"][0]
    assert histogram_count.value == 3 and histogram_count.labels == {"model": "mlp", "version": "1"}
    assert samples["process_resident_memory_bytes"][0].value > 0


def test_sigterm_drains_queued_requests_then_exits_zero(tmp_path: Path) -> None:
    """A request parked in the batch queue (60 s delay) is answered when SIGTERM arrives."""
    model_dir = _mlp(tmp_path)
    server = ServeProcess(model_dir, "mlp", tmp_path / "log", "--max-batch-size", "8",
                          "--max-queue-delay-us", "60000000", "--drain-timeout", "120").wait_ready()
    x = np.full((1, 4), 0.5, np.float32)
    pending = _in_threads_async(lambda: _infer(server, "http", x))

    def queued() -> bool:
        return _samples(server)["nv_inference_pending_request_count"][0].value == 1

    wait_for(queued, 60, "the request to sit in the batch queue", interval=0.05)
    assert server.stop() == 0
    result = pending()
    assert not isinstance(result, BaseException), f"{result}\n{server.log()}"
    expected = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    np.testing.assert_allclose(result, expected, rtol=1e-6)
    assert "draining" in server.log()
    assert http_status(server.http_port, "/v2/health/live") is None  # listeners are gone


def _in_threads_async(call: Callable[[], Any]) -> Callable[[], Any]:
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.extend(in_threads([call])))
    thread.start()

    def join() -> Any:
        thread.join(120)
        return box[0] if box else TimeoutError("request never returned")

    return join


def test_model_that_fails_warm_up_never_reports_ready(tmp_path: Path) -> None:
    serve_models_support.unwarmable(tmp_path / "bad" / "model.onnx")
    server = ServeProcess(tmp_path / "bad", "bad", tmp_path / "log")
    seen: set[int | None] = set()
    while server.proc.poll() is None:
        seen.add(http_status(server.http_port, "/v2/health/ready"))
        time.sleep(0.02)
    assert server.wait_exit() == 1
    assert 200 not in seen
    assert "failed warm-up with golden inputs" in server.log()


def test_fixed_batch_model_serves_with_batching_turned_off(tmp_path: Path) -> None:
    serve_models_support.fixed_batch(tmp_path / "fixed" / "1" / "model.onnx")
    with serving(tmp_path / "fixed", "fixed", tmp_path / "log", "--max-batch-size", "8") as server:
        c = server.http()
        config = c.get_model_config("fixed")
        i = httpclient.InferInput("x", [1, 3], "FP32")
        i.set_data_from_numpy(np.array([[-1, 0, 2]], np.float32))
        y = c.infer("fixed", [i]).as_numpy("y")
    assert config["max_batch_size"] == 0 and "dynamic_batching" not in config
    assert config["input"][0]["dims"] == [1, 3]
    np.testing.assert_array_equal(y, [[0, 0, 2]])
    assert "dynamic batching disabled" in server.log()


def test_missing_model_file_exits_with_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    server = ServeProcess(tmp_path / "empty", "m", tmp_path / "log")
    assert server.wait_exit() == 1
    assert "no model.onnx in" in server.log()
