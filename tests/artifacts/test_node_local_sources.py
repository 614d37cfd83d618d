"""file:// names a file on the node agent's host: the operator and its optimization Jobs never read it.

Read by the operator, a file:// source was a file of the operator's pod, and the digest or the
"no such file" that came back told a namespace user about the operator's files. Now the class
serves the source as it is and says why, in words that are the same for every path; only an
admin-listed directory (a single-machine dev cluster) is read. Fetch errors in a job report
name an HTTP status or a kind of error, never what a server or the disk said.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from kubernetes.client import ApiClient

from edgewise import contract
from edgewise.analysis import local_files
from edgewise.api.optimization_job import JobInput, JobOptions, JobTarget, OptimizationJob
from edgewise.api.profile import DeploymentProfileSpec
from edgewise.api.resources import EdgeModel
from edgewise.api.settings import OperatorSettings
from edgewise.controller.artifacts import ArtifactManager
from edgewise.core.classify import classify
from edgewise.core.observed import NodeInfo
from edgewise.kube.writes import Writes
from edgewise.optimize.job import run

SECRET = "s3cr3t-reason-phrase"
CPU = {"name": "cpu", "nodeSelector": {"kubernetes.io/arch": "amd64"}, "runtime": "onnxruntime",
       "precision": "int8"}
NODES = [NodeInfo("x86-0", {"kubernetes.io/arch": "amd64"})]


def _model(source: str, sha: str = "a" * 64, calibration: str | None = None, run_in: str = "Process"
           ) -> EdgeModel:
    optimization: dict[str, object] = {"runIn": run_in}
    if calibration:
        optimization["calibration"] = {"uri": calibration, "sha256": "b" * 64}
    return EdgeModel.model_validate({
        "apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel",
        "metadata": {"name": "m", "namespace": "ns", "uid": "u"},
        "spec": {"version": "1", "source": {"uri": source, "sha256": sha}, "optimization": optimization}})


def _resolve(manager: ArtifactManager, model: EdgeModel):  # noqa: ANN202 - a ClassArtifact
    profile = DeploymentProfileSpec.model_validate({"classes": [CPU]})
    # Worker processes write nothing to Kubernetes: a client that never connects is enough.
    return manager.resolve(model, profile, classify(profile, NODES), Writes(ApiClient()))["cpu"]


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[ArtifactManager]:
    m = ArtifactManager(OperatorSettings(artifact_dir=str(tmp_path / "operator")))
    yield m
    m.close()


def test_a_file_source_is_served_as_it_is_without_the_operator_reading_it(manager: ArtifactManager,
                                                                          tmp_path: Path) -> None:
    existing = tmp_path / "operator-file"
    existing.write_bytes(b"a file of the operator's pod")
    answers = []
    for uri in (existing.as_uri(), (tmp_path / "no-such-file").as_uri(), "file:///etc/passwd",
                "file:///proc/self/environ"):
        a = _resolve(manager, _model(uri))
        assert a.state == "Ready" and a.artifact is not None
        assert (a.artifact.uri, a.artifact.sha256, a.artifact.precision) == (uri, "a" * 64, "fp32")
        answers.append((a.reason, a.message, a.summary))
    assert manager.jobs == {}  # no job was started: nothing read the files
    assert len(set(answers)) == 1  # the same words whether the file exists or not
    assert "file:// URI" in answers[0][2] and "node agent's host" in answers[0][2]
    assert str(tmp_path) not in answers[0][2]


def test_a_file_calibration_set_is_not_read_either(manager: ArtifactManager, tmp_path: Path) -> None:
    a = _resolve(manager, _model("https://models.example/m.onnx", calibration=(tmp_path / "c.npz").as_uri()))
    assert a.state == "Ready" and a.artifact and a.artifact.uri == "https://models.example/m.onnx"
    assert "calibration" in a.summary and manager.jobs == {}


def test_only_an_admin_listed_directory_is_read_and_never_by_a_job(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    settings = OperatorSettings(artifact_dir=str(tmp_path / "operator"), local_source_dirs=(str(shared),))
    m = ArtifactManager(settings)
    try:
        inside = (shared / "m.onnx").as_uri()
        assert _resolve(m, _model(inside)).state == "Optimizing" and len(m.jobs) == 1
        escape = f"file://{shared}/../operator/index"
        assert _resolve(m, _model(escape, sha="c" * 64)).state == "Ready" and len(m.jobs) == 1
        in_job = _resolve(m, _model(inside, sha="d" * 64, run_in="Job"))
        assert in_job.state == "Ready" and "not optimized" in in_job.summary and len(m.jobs) == 1
    finally:
        m.close()


def test_a_symlink_out_of_a_listed_directory_is_not_followed(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (tmp_path / "private").write_text("the operator's")
    (shared / "link").symlink_to(tmp_path / "private")
    assert local_files.operator_may_read((shared / "x.onnx").as_uri(), [str(shared)])
    assert not local_files.operator_may_read((shared / "link").as_uri(), [str(shared)])
    assert not local_files.operator_may_read("file://otherhost" + str(shared / "x.onnx"), [str(shared)])
    assert not local_files.operator_may_read((shared / "x.onnx").as_uri(), [])
    assert local_files.operator_may_read("https://models.example/m.onnx", [])


def _job(tmp_path: Path, uri: str, sha: str) -> Path:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    job = OptimizationJob(source=JobInput(uri=uri, sha256=sha),
                          target=JobTarget(runtime="onnxruntime", precision="int8"),
                          options=JobOptions(quantization="auto", fallback=True, min_cosine=0.99,
                                             max_top1_drop_percent=1.0))
    (job_dir / contract.JOB_FILE).write_text(json.dumps(job.to_wire()))
    return job_dir


def test_a_job_pod_refuses_file_uris_without_opening_them(tmp_path: Path) -> None:
    there = tmp_path / "model.onnx"
    there.write_bytes(b"bytes")
    report = run(_job(tmp_path, there.as_uri(), hashlib.sha256(b"bytes").hexdigest()), read_files=False)
    assert report.outcome == "SourceUnavailable" and "file://" in report.message
    assert not (tmp_path / "job" / "source.onnx").exists()


def test_a_digest_mismatch_does_not_say_what_the_bytes_hash_to(tmp_path: Path) -> None:
    there = tmp_path / "model.onnx"
    there.write_bytes(b"bytes")
    report = run(_job(tmp_path, there.as_uri(), "0" * 64))
    assert report.outcome == "DigestMismatch"
    assert hashlib.sha256(b"bytes").hexdigest() not in report.message


class _Internal(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(404, SECRET)
        self.end_headers()
        self.wfile.write(SECRET.encode())

    def log_message(self, *args: object) -> None:
        pass


def test_an_unreachable_source_is_reported_by_status_code_only(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Internal)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_port}/secret"
        report = run(_job(tmp_path, uri, "0" * 64))
    finally:
        server.shutdown()
        server.server_close()
    assert report.outcome == "SourceUnavailable"
    assert report.message == f"the source {uri} could not be fetched: HTTP 404"  # the user's URI, no more
    assert report.detail is not None and SECRET in report.detail  # for the operator's log; dropped before the status


def test_file_golden_inputs_are_not_read_by_the_operator(tmp_path: Path) -> None:
    from edgewise.analysis.golden_file import why_not as _why_not
    from edgewise.analysis.measure import CanaryAnalysis
    from edgewise.api.model import Analysis

    there = tmp_path / "golden.npz"
    there.write_bytes(b"the operator's file")
    analysis = Analysis.model_validate({"goldenInputs": {"uri": there.as_uri(), "sha256": "0" * 64}})
    rollouts = CanaryAnalysis(OperatorSettings())
    with pytest.raises(local_files.LocalFileRefused) as err:
        rollouts._golden(analysis)
    assert _why_not(err.value) == local_files.REFUSED and str(tmp_path) not in _why_not(err.value)
    assert list(rollouts.golden_dir.iterdir()) == []  # nothing was copied

    allowed = CanaryAnalysis(OperatorSettings(local_source_dirs=(str(tmp_path),)))
    from edgewise.shared.digest import DigestMismatch

    with pytest.raises(DigestMismatch) as mismatch:
        allowed._golden(analysis)
    assert _why_not(mismatch.value) == "analysis: the goldenInputs file does not match its sha256"
    assert hashlib.sha256(b"the operator's file").hexdigest() not in _why_not(mismatch.value)
