"""The optimizer's attestation of what it derived: built from the report, signed with the key it is given,
written beside the artifact, stored beside it by the operator, and verified as a node verifies it."""

from __future__ import annotations

import hashlib
import json
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
from edgewise.optimize.attestation import attest, attestation_path, statement_for
from edgewise.shared.trust import dsse
from edgewise.shared.trust.keys import Signer, TrustedKeys, generate_ec, private_pem
from edgewise.shared.trust.statement import DerivedModel, SourceSignature, Statement
from edgewise.shared.trust.verify import Expected, NodeTrust, Reason, check

SOURCE_URI = "https://models.example/m.onnx"
SOURCE = b"the fp32 source"
PAYLOAD = b"an int8 model"
SHA = hashlib.sha256(PAYLOAD).hexdigest()
SOURCE_SHA = hashlib.sha256(SOURCE).hexdigest()
REPORT = OptimizationReport.model_validate({
    "outcome": "Optimized", "message": "int8 dynamic: min cosine 0.9990",
    "source": {"path": "m.onnx", "sha256": SOURCE_SHA, "sizeBytes": len(SOURCE)},
    "target": {"runtime": "onnxruntime", "precision": "int8"}, "precision": "int8", "technique": "int8 dynamic",
    "artifact": {"path": "a.onnx", "sha256": SHA, "sizeBytes": len(PAYLOAD)},
    "accuracyGate": {"passed": True, "reason": "LatencyGatePassed", "message": "ok",
                     "numbers": {"minCosine": 0.999, "meanCosine": 0.9995, "latencyRatio": 0.6,
                                 "maxLatencyRatio": 1.0}},
    "memoryGate": {"passed": True, "reason": "Fits", "message": "fits", "numbers": {"peakMiB": 84.2,
                                                                                   "maxMemoryMiB": 512.0}},
    "memory": {"peakMiB": 84.2, "baselineMiB": 47.2, "modelMiB": 37.0},
    "versions": {"onnxruntime": "1.31.1", "onnx": "1.23.2"}})


def test_the_statement_binds_the_source_the_derivation_each_gates_numbers_and_the_toolchain() -> None:
    s = statement_for(REPORT, SOURCE_URI, SourceSignature("key 0123", "b" * 64))
    p = s.predicate
    assert isinstance(p, DerivedModel) and s.subject_sha256 == SHA
    assert (p.source_sha256, p.source_uri, p.technique, p.precision, p.runtime) == (
        SOURCE_SHA, SOURCE_URI, "int8 dynamic", "int8", "onnxruntime")
    assert p.gates["accuracy"].numbers == {"minCosine": 0.999, "meanCosine": 0.9995}
    assert p.gates["speed"].numbers == {"latencyRatio": 0.6, "maxLatencyRatio": 1.0}
    assert p.gates["memory"].numbers == {"peakMiB": 84.2, "maxMemoryMiB": 512.0}
    assert p.versions["onnxruntime"] == "1.31.1" and p.versions["onnx"] == "1.23.2" and p.versions["edgewise"]
    assert p.source_signature == SourceSignature("key 0123", "b" * 64)


def test_only_an_accepted_artifact_is_attested() -> None:
    with pytest.raises(ValueError, match="only an accepted artifact"):
        statement_for(OptimizationReport.failed("SourceUnavailable", "gone"), SOURCE_URI)


def test_with_a_key_path_the_attestation_is_written_beside_the_artifact_and_verifies(tmp_path: Path) -> None:
    signer = generate_ec()
    key = tmp_path / "attestation.key"
    key.write_bytes(private_pem(signer))
    artifact = tmp_path / "artifact.onnx"
    artifact.write_bytes(PAYLOAD)
    done = attest(artifact, REPORT, SOURCE_URI, key)
    assert done.path == attestation_path(artifact) == tmp_path / "artifact.onnx.intoto.json"
    assert done.key_id == signer.key_id
    trust = NodeTrust(TrustedKeys.of([signer.public_key()]))
    verdict = check(SHA, done.path.read_bytes(), trust, Expected(SHA, SOURCE_SHA))
    assert verdict.reason is Reason.VERIFIED
    # PEM bytes do as well as a path (the operator may hold the Secret's bytes).
    assert attest(artifact, REPORT, SOURCE_URI, private_pem(signer)).key_id == signer.key_id


def test_without_a_key_nothing_is_written_and_it_says_so(tmp_path: Path) -> None:
    artifact = tmp_path / "artifact.onnx"
    artifact.write_bytes(PAYLOAD)
    done = attest(artifact, REPORT, SOURCE_URI, None)
    assert done.path is None and "no signing key" in done.message
    assert list(tmp_path.iterdir()) == [artifact]


CPU = {"name": "cpu", "nodeSelector": {"kubernetes.io/arch": "amd64"}, "runtime": "onnxruntime",
       "precision": "int8"}
NODES = [NodeInfo("x86-0", {"kubernetes.io/arch": "amd64"})]
PROFILE = DeploymentProfileSpec.model_validate({"classes": [CPU]})
MODEL = EdgeModel.model_validate({
    "apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel", "metadata": {"name": "m", "namespace": "ns", "uid": "u"},
    "spec": {"version": "1", "source": {"uri": SOURCE_URI, "sha256": SOURCE_SHA}}})


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[ArtifactManager]:
    m = ArtifactManager(OperatorSettings(artifact_dir=str(tmp_path / "operator"),
                                         artifact_url="http://store.example:8090"))
    yield m
    m.close()


def _finish(manager: ArtifactManager, job_dir: Path) -> ClassArtifact:
    key = job_spec(MODEL, PROFILE.classes[0], NODES).key
    (job_dir / "report.json").write_text(REPORT.to_json())
    manager.jobs[key] = _Job(started=time.monotonic(), dir=job_dir, runner=manager.processes)
    got = manager.resolve(MODEL, PROFILE, classify(PROFILE, NODES), Writes(ApiClient()))["cpu"]
    assert got.state is ArtifactState.READY and got.artifact is not None and got.artifact.sha256 == SHA
    return got


def test_the_operator_stores_the_jobs_attestation_beside_the_artifact(manager: ArtifactManager,
                                                                      tmp_path: Path) -> None:
    signer = generate_ec()
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "artifact.onnx").write_bytes(PAYLOAD)
    attest(job_dir / "artifact.onnx", REPORT, SOURCE_URI, private_pem(signer))
    assert _finish(manager, job_dir).attested_by == signer.key_id
    stored = manager.store.get_attestation(SHA)
    assert dsse.verify(dsse.Envelope.parse(stored), TrustedKeys.of([signer.public_key()])) == signer.key_id
    assert Statement.parse(dsse.Envelope.parse(stored).payload).subject_sha256 == SHA
    [record] = [json.loads(p.read_text()) for p in manager.index.glob("*.json")]
    assert record["attested"] is True


def test_an_unattested_job_stores_the_artifact_alone(manager: ArtifactManager, tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "artifact.onnx").write_bytes(PAYLOAD)
    assert _finish(manager, job_dir).attested_by == ""
    assert manager.store.has(SHA)
    with pytest.raises(KeyError):
        manager.store.get_attestation(SHA)


def test_no_job_gets_the_operators_signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgewise import contract
    from edgewise.controller.optimize_runners import _worker_env

    monkeypatch.setenv(contract.ATTESTATION_KEY_ENV, "/var/run/secrets/edgewise.io/attestation/key.pem")
    assert contract.ATTESTATION_KEY_ENV not in _worker_env({})


@pytest.fixture
def keyed_manager(tmp_path: Path) -> Iterator[tuple[ArtifactManager, Signer]]:
    signer = generate_ec()
    key = tmp_path / "attestation.key"
    key.write_bytes(private_pem(signer))
    m = ArtifactManager(OperatorSettings(artifact_dir=str(tmp_path / "operator"), artifact_url="http://store.example:8090",
                                         attestation_key_file=str(key)))
    yield m, signer
    m.close()


def test_the_operator_signs_what_an_unattested_job_reported_with_its_own_key(keyed_manager, tmp_path: Path) -> None:
    """A Job's pod has no key: the operator attests its artifact, binding the source's signer."""
    from edgewise import contract

    manager, signer = keyed_manager
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "artifact.onnx").write_bytes(PAYLOAD)
    (job_dir / contract.SOURCE_SIGNATURE_FILE).write_text(json.dumps({"signer": "key 0123", "bundleSha256": "d" * 64}))
    got = _finish(manager, job_dir)
    envelope = dsse.Envelope.parse(manager.store.get_attestation(SHA))
    assert dsse.verify(envelope, TrustedKeys.of([signer.public_key()])) == signer.key_id
    assert got.attested_by == signer.key_id and f"attested with key {signer.key_id[:16]}" in got.message
    statement = Statement.parse(envelope.payload)
    assert statement.subject_sha256 == SHA and isinstance(statement.predicate, DerivedModel)
    assert statement.predicate.source_sha256 == SOURCE_SHA
    assert statement.predicate.source_signature == SourceSignature("key 0123", "d" * 64)
    assert statement.predicate.gates["accuracy"].numbers["minCosine"] == 0.999


def test_an_attestation_a_job_left_is_replaced_by_the_operators(keyed_manager, tmp_path: Path) -> None:
    manager, signer = keyed_manager
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "artifact.onnx").write_bytes(PAYLOAD)
    attest(job_dir / "artifact.onnx", REPORT, SOURCE_URI, private_pem(generate_ec()))  # someone else's key
    _finish(manager, job_dir)
    envelope = dsse.Envelope.parse(manager.store.get_attestation(SHA))
    assert dsse.verify(envelope, TrustedKeys.of([signer.public_key()])) == signer.key_id


def test_a_signing_key_that_cannot_be_read_fails_the_job_and_stores_nothing(tmp_path: Path) -> None:
    manager = ArtifactManager(OperatorSettings(artifact_dir=str(tmp_path / "operator"),
                                               artifact_url="http://store.example:8090",
                                               attestation_key_file=str(tmp_path / "missing.pem")))
    try:
        job_dir = tmp_path / "job"
        job_dir.mkdir()
        (job_dir / "artifact.onnx").write_bytes(PAYLOAD)
        key = job_spec(MODEL, PROFILE.classes[0], NODES).key
        (job_dir / "report.json").write_text(REPORT.to_json())
        manager.jobs[key] = _Job(started=time.monotonic(), dir=job_dir, runner=manager.processes)
        got = manager.resolve(MODEL, PROFILE, classify(PROFILE, NODES), Writes(ApiClient()))["cpu"]
        assert got.artifact is None and "could not be attested" in got.message, got
        with pytest.raises(KeyError):
            manager.store.get_attestation(SHA)
    finally:
        manager.close()


def test_a_job_started_for_a_signed_source_binds_its_signer_into_the_attestation(manager: ArtifactManager,
                                                                                  tmp_path: Path) -> None:
    from edgewise import contract
    from edgewise.optimize.attestation import source_signature_of

    signed = SourceSignature("key 0123456789abcdef", "c" * 64)
    spec = job_spec(MODEL, PROFILE.classes[0], NODES)
    manager._start(spec, "ns/m", 0, Writes(ApiClient()), signed)
    job_dir = manager.jobs[spec.key].dir
    assert json.loads((job_dir / contract.SOURCE_SIGNATURE_FILE).read_text()) == {
        "signer": "key 0123456789abcdef", "bundleSha256": "c" * 64}
    assert source_signature_of(job_dir) == signed  # what run_and_report hands to attest()
    manager.processes.procs[spec.key].kill()
    unsigned = tmp_path / "unsigned"
    unsigned.mkdir()
    assert source_signature_of(unsigned) is None


def test_an_artifact_made_before_its_source_was_signed_is_attested_again_naming_the_signer_once(
        keyed_manager, tmp_path: Path) -> None:
    manager, signer = keyed_manager
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "artifact.onnx").write_bytes(PAYLOAD)
    _finish(manager, job_dir)  # made for an unsigned source: the attestation names no signer
    first = Statement.parse(dsse.Envelope.parse(manager.store.get_attestation(SHA)).payload)
    assert isinstance(first.predicate, DerivedModel) and first.predicate.source_signature is None

    signed = SourceSignature("key 0123456789abcdef", "e" * 64)
    got = manager.resolve(MODEL, PROFILE, classify(PROFILE, NODES), Writes(ApiClient()), signed)["cpu"]
    assert got.state is ArtifactState.READY and got.attested_by == signer.key_id
    envelope = dsse.Envelope.parse(manager.store.get_attestation(SHA))
    assert dsse.verify(envelope, TrustedKeys.of([signer.public_key()])) == signer.key_id
    again = Statement.parse(envelope.payload)
    assert isinstance(again.predicate, DerivedModel) and again.predicate.source_signature == signed
    assert again.subject_sha256 == SHA and again.predicate.gates == first.predicate.gates  # the same report

    # Once: another valid bundle over the same bytes (another model's) replaces nothing.
    manager.resolve(MODEL, PROFILE, classify(PROFILE, NODES), Writes(ApiClient()),
                    SourceSignature("key fedcba9876543210", "f" * 64))
    kept = Statement.parse(dsse.Envelope.parse(manager.store.get_attestation(SHA)).payload)
    assert isinstance(kept.predicate, DerivedModel) and kept.predicate.source_signature == signed
