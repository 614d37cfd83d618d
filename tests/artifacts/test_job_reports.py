"""The operator reads a job's report once, as a typed model: a malformed one is a clear OptimizationFailed.

The job's side is a work directory holding what a worker process or a Job's upload leaves there
(report.json, artifact.onnx); the operator's side is the real ArtifactManager with its built-in
store and index on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client import ApiClient

from edgewise.api.optimization_report import OptimizationReport
from edgewise.api.profile import DeploymentProfileSpec
from edgewise.api.resources import EdgeModel
from edgewise.api.settings import OperatorSettings
from edgewise.controller.artifacts import ArtifactManager, _Job
from edgewise.core.class_artifact import ArtifactState, ClassArtifact
from edgewise.core.classify import classify
from edgewise.core.observed import NodeInfo
from edgewise.core.optimization import job_spec
from edgewise.kube.writes import Writes

CPU = {"name": "cpu", "nodeSelector": {"kubernetes.io/arch": "amd64"}, "runtime": "onnxruntime",
       "precision": "int8"}
NODES = [NodeInfo("x86-0", {"kubernetes.io/arch": "amd64"})]
PROFILE = DeploymentProfileSpec.model_validate({"classes": [CPU]})
MODEL = EdgeModel.model_validate({
    "apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel", "metadata": {"name": "m", "namespace": "ns", "uid": "u"},
    "spec": {"version": "1", "source": {"uri": "https://models.example/m.onnx", "sha256": "a" * 64}}})
PAYLOAD = b"an int8 model"
FILE = {"path": "m.int8.onnx", "sha256": hashlib.sha256(PAYLOAD).hexdigest(), "sizeBytes": len(PAYLOAD)}
OPTIMIZED = {
    "outcome": "Optimized", "message": "int8 dynamic: min cosine 0.9990", "source": FILE | {"path": "m.onnx"},
    "sourceKind": "transformer", "sourceOpset": 17, "target": {"runtime": "onnxruntime", "precision": "int8"},
    "precision": "int8", "technique": "int8 dynamic", "artifact": FILE, "sizeRatio": 0.25,
    "memory": {"peakMiB": 84.2, "baselineMiB": 47.2, "modelMiB": 37.0}, "notes": ["a note"],
    "attempts": [{"technique": "int8 static", "precision": "int8", "status": "rejected", "message": "cosine 0.9"},
                 {"technique": "int8 dynamic", "precision": "int8", "status": "accepted"}]}


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[ArtifactManager]:
    m = ArtifactManager(OperatorSettings(artifact_dir=str(tmp_path / "operator"),
                                         artifact_url="http://store.example:8090"))
    yield m
    m.close()


def _finished_job(manager: ArtifactManager, tmp_path: Path, report: bytes) -> str:
    """A job the manager started, whose report (and artifact) have arrived; its key."""
    key = job_spec(MODEL, PROFILE.classes[0], NODES).key
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "artifact.onnx").write_bytes(PAYLOAD)
    (job_dir / "report.json").write_bytes(report)
    manager.jobs[key] = _Job(started=time.monotonic(), dir=job_dir, runner=manager.processes)
    return key


def _resolve(manager: ArtifactManager) -> ClassArtifact:
    return manager.resolve(MODEL, PROFILE, classify(PROFILE, NODES), Writes(ApiClient()))["cpu"]


def test_a_valid_report_is_read_by_attribute(manager: ArtifactManager, tmp_path: Path) -> None:
    _finished_job(manager, tmp_path, json.dumps(OPTIMIZED).encode())
    got = _resolve(manager)
    assert got.state is ArtifactState.READY and got.artifact is not None
    assert got.artifact.sha256 == FILE["sha256"] and got.precision == "int8"
    assert got.peak_memory_mib == 84.2 and got.message == "a note"
    assert got.summary == "Optimized: int8 dynamic, size 0.25x, peak 84 MiB; int8 static rejected: cosine 0.9"


@pytest.mark.parametrize(("report", "names"), [
    (json.dumps(OPTIMIZED | {"artifact": "m.int8.onnx"}).encode(), "artifact"),  # not an object
    (json.dumps(OPTIMIZED | {"memory": {"peakMiB": "a lot"}}).encode(), "memory.peakMiB"),
    (json.dumps({"outcome": "Exploded", "message": "boom"}).encode(), "outcome"),  # no such condition reason
    (json.dumps({k: v for k, v in OPTIMIZED.items() if k != "artifact"}).encode(), "describes its artifact"),
    (json.dumps({"message": "no outcome"}).encode(), "outcome"),
    (b'{"outcome": "Optimi', "Invalid JSON"),  # cut short
    (b"[]", "the document"),
])
def test_a_malformed_report_is_an_optimization_failure_that_says_what_is_wrong(
        manager: ArtifactManager, tmp_path: Path, caplog: pytest.LogCaptureFixture, report: bytes, names: str
) -> None:
    key = _finished_job(manager, tmp_path, report)
    with caplog.at_level(logging.WARNING, logger="edgewise.artifacts"):
        got = _resolve(manager)
    assert got.state is ArtifactState.FAILED and got.reason == "OptimizationFailed"
    assert got.message.startswith("the optimization job's report is malformed") and names in got.message
    assert got.retry_in is not None  # like any OptimizationFailed: it may pass
    assert "is malformed" in caplog.text
    recorded = json.loads((manager.index / f"{key}.json").read_text())
    assert recorded["report"]["outcome"] == "OptimizationFailed" and "artifact" not in recorded
    assert not list((tmp_path / "operator" / "store").glob("sha256/*"))  # nothing was stored


def test_a_failure_keeps_its_words_out_of_the_status_and_the_index(
        manager: ArtifactManager, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    report = {"outcome": "SourceUnavailable", "message": "the source could not be fetched: HTTP 404",
              "detail": "HTTP Error 404: secret page"}
    key = _finished_job(manager, tmp_path, json.dumps(report).encode())
    with caplog.at_level(logging.WARNING, logger="edgewise.artifacts"):
        got = _resolve(manager)
    assert got.state is ArtifactState.FAILED and got.reason == "SourceUnavailable"
    assert "secret page" not in got.message and "secret page" in caplog.text
    recorded = json.loads((manager.index / f"{key}.json").read_text())
    assert set(recorded["report"]) == {"outcome", "message"}  # the wire form failures always had


def test_records_written_before_the_typed_report_are_read_as_they_were(manager: ArtifactManager,
                                                                       tmp_path: Path) -> None:
    key = job_spec(MODEL, PROFILE.classes[0], NODES).key
    record = {"key": key, "spec": {}, "report": {"outcome": "DigestMismatch", "message": "bytes do not match"}}
    (manager.index / f"{key}.json").write_text(json.dumps(record))
    got = _resolve(manager)
    assert got.state is ArtifactState.FAILED and got.reason == "DigestMismatch"
    assert got.message == "bytes do not match" and got.retry_in is None
    assert OptimizationReport.model_validate(record["report"]).to_wire() == record["report"]
