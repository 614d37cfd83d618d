"""Per-class artifacts: optimization jobs, their results in the artifact store.

A job runs in a worker process of its own (address-space limit, deadline) or, with
`runIn: Job`, in a Kubernetes Job (controller/optimize_runners.py) — never in the operator's
event loop. Results are recorded in the store's index by job key (see core/optimization.py),
on the store's volume: a restarted operator finds them and recomputes nothing. Failures that
may pass (an unreachable source, a limit hit) are recorded with a time to try again, with
exponential backoff; the rest stay until the spec changes.
"""

from __future__ import annotations

import hmac
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from pydantic import ValidationError

from edgewise import contract
from edgewise.analysis import local_files
from edgewise.api.optimization_report import OptimizationReport
from edgewise.api.profile import DeploymentProfileSpec
from edgewise.api.resources import EdgeModel
from edgewise.api.settings import OperatorSettings
from edgewise.artifacts.builtin import BuiltinStore
from edgewise.artifacts.factory import ArtifactStores
from edgewise.controller.optimize_runners import KubeJobRunner, ProcessRunner
from edgewise.core.class_artifact import ArtifactState, ClassArtifact
from edgewise.core.classify import Classification
from edgewise.core.optimization import JobSpec, job_spec
from edgewise.core.runtimes import Artifact
from edgewise.kube.writes import Writes
from edgewise.optimize.attestation import attest, attestation_path, source_signature_of, statement_for
from edgewise.shared.trust import dsse
from edgewise.shared.trust.keys import KeyLoadError, Signer
from edgewise.shared.trust.statement import SourceSignature, sign_statement

log = logging.getLogger("edgewise.artifacts")


# Failures that may pass by themselves: tried again after a backoff. The others (a file that is
# not ONNX, a digest or calibration mismatch, a rejected artifact) wait for the spec to change.
RETRYABLE = frozenset({"SourceUnavailable", "OptimizationFailed"})
MAX_RETRY_SECONDS = 3600.0


@dataclass
class _Job:
    started: float
    dir: Path
    runner: ProcessRunner | KubeJobRunner
    failures: int = 0  # earlier failed attempts of the same key, for the backoff


@dataclass
class ArtifactManager:
    settings: OperatorSettings
    api: client.ApiClient | None = None  # needed for runIn: Job
    jobs: dict[str, _Job] = field(default_factory=dict)
    on_finish: Callable[[str, float], None] | None = None  # (outcome, seconds) of each run: the metrics

    def __post_init__(self) -> None:
        root = Path(self.settings.artifact_dir)
        self.store = BuiltinStore(root / "store", self.settings.artifact_url.rstrip("/"))  # served by builtin_http
        self.stores = ArtifactStores(self.store)
        self.index = root / "index"
        self.work = root / "jobs"
        self.index.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.processes = ProcessRunner(self.settings)
        self.kube_jobs = KubeJobRunner(self.settings, self.api) if self.api is not None else None

    def resolve(self, model: EdgeModel, profile: DeploymentProfileSpec, classification: Classification,
                write: Writes, source_signature: SourceSignature | None = None) -> dict[str, ClassArtifact]:
        """Each class's artifact: ready, being made (a job started if needed), or refused.

        `write` creates and deletes the Kubernetes Jobs of `runIn: Job` (and their token Secrets).
        `source_signature`: the source's signer as the operator checked it; a job started now binds it into
        the artifact's attestation (an artifact already made keeps the attestation it has)."""
        out: dict[str, ClassArtifact] = {}
        who = f"{model.metadata.namespace}/{model.metadata.name}"
        for hc in profile.classes:
            members = classification.members(hc.name).nodes
            spec = job_spec(model, hc, members)
            if spec is None:
                continue
            if not members:  # nothing to make, and nothing to deploy, until a node joins the class
                out[hc.name] = ClassArtifact(ArtifactState.IDLE, message="no node in the class yet")
                continue
            unread = self._node_local(spec)
            if unread:
                out[hc.name] = _served_as_is(spec, unread)
                continue
            out[hc.name] = self._resolve(spec, who, write, source_signature)
        return out

    def _node_local(self, spec: JobSpec) -> list[str]:
        """What the job would have to read that the operator may not: file:// inputs (see local_files).

        An optimization Job never reads file:// (its pod is not the node agent's host either).
        """
        dirs = () if spec.run_in == "Job" else self.settings.local_source_dirs
        inputs = {"source": spec.job.source.uri,
                  "calibration": spec.job.calibration.uri if spec.job.calibration else ""}
        return [what for what, uri in inputs.items()
                if uri and local_files.node_local(uri) and not local_files.operator_may_read(uri, dirs)]

    def _resolve(self, spec: JobSpec, who: str, write: Writes,
                 source_signature: SourceSignature | None = None) -> ClassArtifact:
        done = self.index / f"{spec.key}.json"
        failures = 0
        if done.exists():
            record = json.loads(done.read_text())
            retry_at = record.get("retryAt")
            if retry_at is None or time.time() < retry_at:
                if source_signature is not None and "artifact" in record and not record.get("attestedSignature"):
                    record = self._reattest(spec, record, source_signature, done)
                return _from_record(record, self.stores)
            failures = int(record.get("failures", 1))
            done.unlink()  # its time has come: try again
        job = self.jobs.get(spec.key)
        if job is None:
            self._start(spec, who, failures, write, source_signature)
            return ClassArtifact(ArtifactState.OPTIMIZING, reason="Optimizing",
                                 message=f"optimizing for {_target(spec)}"
                                         + (f" (attempt {failures + 1})" if failures else ""))
        report_path = job.dir / "report.json"
        if report_path.exists():
            return self._finish(spec, _job_report(report_path.read_bytes(), spec.key), write)
        if time.monotonic() - job.started > self.settings.optimize_timeout_seconds:
            return self._finish(spec, OptimizationReport.failed(
                "OptimizationFailed", f"gave up after {self.settings.optimize_timeout_seconds}s"), write)
        ended = job.runner.poll(spec.key, job.dir)
        if ended is not None:
            if report_path.exists():  # it reported between the two looks
                return self._finish(spec, _job_report(report_path.read_bytes(), spec.key), write)
            return self._finish(spec, OptimizationReport.failed("OptimizationFailed", ended.problem), write)
        return ClassArtifact(ArtifactState.OPTIMIZING, reason="Optimizing",
                             message=f"optimizing for {_target(spec)} ({time.monotonic() - job.started:.0f}s"
                                     + (", in a Kubernetes Job" if job.runner is self.kube_jobs else "") + ")")

    def _start(self, spec: JobSpec, who: str, failures: int, write: Writes,
               source_signature: SourceSignature | None = None) -> None:
        job_dir = self.work / spec.key
        shutil.rmtree(job_dir, ignore_errors=True)
        job_dir.mkdir(parents=True)
        if source_signature is not None:
            (job_dir / contract.SOURCE_SIGNATURE_FILE).write_text(json.dumps(
                {"signer": source_signature.signer, "bundleSha256": source_signature.bundle_sha256}))
        runner: ProcessRunner | KubeJobRunner = self.processes
        if spec.run_in == "Job":
            if self.kube_jobs is None:
                raise RuntimeError("runIn: Job needs the operator's Kubernetes client")
            runner = self.kube_jobs
        runner.start(spec, job_dir, who, write)
        self.jobs[spec.key] = _Job(started=time.monotonic(), dir=job_dir, runner=runner, failures=failures)
        log.info("optimization job %s started for %s (%s)%s%s", spec.key, _target(spec), who,
                 " as a Kubernetes Job" if runner is self.kube_jobs else "",
                 f", attempt {failures + 1}" if failures else "")

    def expects(self, key: str) -> bool:
        """For the store's upload endpoint: is a Job `key` running (else its pod should retry later)?"""
        job = self.jobs.get(key)
        return job is not None and bool(job.runner.upload_token(key))

    def upload_dir(self, key: str, token: str) -> Path | None:
        """For the store's upload endpoint: the work directory of Job `key` if `token` is its token."""
        job = self.jobs.get(key)
        expected = job.runner.upload_token(key) if job else ""
        if job is None or not expected or not hmac.compare_digest(expected, token):
            return None
        return job.dir

    def _finish(self, spec: JobSpec, report: OptimizationReport, write: Writes) -> ClassArtifact:
        job = self.jobs.pop(spec.key, None)
        if report.detail is not None:  # the fetch error's own words: for the operator's log, never the status
            log.warning("optimization job %s: %s", spec.key, report.detail)
            report = report.without_detail()
        record: dict[str, Any] = {"key": spec.key, "spec": spec.job.to_wire()}
        artifact = job.dir / "artifact.onnx" if job else None
        if report.outcome == "Optimized" and report.artifact and artifact and artifact.exists():
            where, claimed = spec.store or "the built-in store", report.artifact.sha256
            try:
                ref = self.stores.get(spec.store).put(artifact, {
                    "edgewise.io/source-sha256": spec.job.source.sha256,
                    "edgewise.io/target": _target(spec), "edgewise.io/precision": report.precision,
                    "edgewise.io/report": _summary(report)})
            except Exception as err:  # noqa: BLE001 - a registry fails in many ways; all of them may pass
                log.warning("optimization job %s: storing the artifact in %s failed: %s", spec.key, where, err)
                report = OptimizationReport.failed("OptimizationFailed",
                                                   f"the artifact could not be stored in {where}")
            else:
                if claimed != ref.digest.removeprefix("sha256:"):
                    report = OptimizationReport.failed(
                        "OptimizationFailed", f"the artifact that arrived hashes to {ref.digest}, its report says "
                                              f"{claimed}")
                else:
                    record["artifact"] = {"sha256": ref.digest.removeprefix("sha256:"), "size": ref.size}
                    if spec.store:
                        record["store"] = spec.store
                    report = self._store_attestation(spec, artifact, ref.digest, where, report, record)
        if report.outcome in RETRYABLE:
            failures = (job.failures if job else 0) + 1
            delay = min(MAX_RETRY_SECONDS, self.settings.optimize_retry_seconds * 2 ** (failures - 1))
            record |= {"failures": failures, "retryAt": time.time() + delay}
            report = report.model_copy(update={"message": f"{report.message}; retrying in {delay:.0f}s "
                                                          f"(failure {failures})"})
        record["report"] = report.to_wire()
        if self.on_finish is not None and job is not None:
            self.on_finish(str(report.outcome), time.monotonic() - job.started)
        tmp = self.index / f"{spec.key}.json.tmp"
        tmp.write_text(json.dumps(record, indent=2))
        tmp.rename(self.index / f"{spec.key}.json")
        if job:
            job.runner.stop(spec.key, write)
            shutil.rmtree(job.dir, ignore_errors=True)
        log.info("optimization job %s: %s", spec.key, _summary(report))
        return _from_record(record, self.stores)

    def _reattest(self, spec: JobSpec, record: dict[str, Any], signed: SourceSignature, path: Path
                  ) -> dict[str, Any]:
        """Attest a cached artifact again, binding the source's signer the operator found since it was made.

        Artifacts are cached per (source digest, target), not per signature: one made while the source
        carried no signature would keep an attestation that names no signer. The operator rebuilds the
        statement from the recorded report and signs it; the record says which bundle it names, so this
        happens once (a second valid bundle over the same bytes, from another model, replaces nothing).
        Without a key, or when it fails, the record is kept."""
        key = self.settings.attestation_key_file
        report = _job_report(record.get("report", {}), spec.key, "the recorded report")
        if not key or report.outcome != "Optimized":
            return record
        digest = record["artifact"]["sha256"]
        try:
            signer = Signer.load(Path(key))
            envelope = sign_statement(statement_for(report, spec.job.source.uri, signed), signer)
            self.stores.get(record.get("store", "")).put_attestation(digest, envelope)
        except Exception as err:  # noqa: BLE001 - a key, a registry: the old attestation stays, tried again later
            log.warning("optimization job %s: attesting its artifact again with the source's signer failed: %s",
                        spec.key, err)
            return record
        record = {**record, "attested": True, "attestedBy": signer.key_id, "attestedSignature": signed.bundle_sha256}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        tmp.rename(path)
        log.info("optimization job %s: artifact sha256:%s attested again, naming the source's signer %s",
                 spec.key, digest, signed.signer)
        return record

    def _store_attestation(self, spec: JobSpec, artifact: Path, digest: str, where: str,
                           report: OptimizationReport, record: dict[str, Any]) -> OptimizationReport:
        """Sign the artifact's attestation with the operator's key and store it beside the artifact.

        The operator signs what the job reported, once the artifact that arrived hashes to what the
        report says: the key stays in this process, so neither a worker process nor a Job's pod (which
        parse untrusted models) ever holds it, and Jobs' artifacts are attested like the others.
        Without a key, an attestation the job left is stored as it is (nodes judge its signer).
        A node that trusts only attested artifacts would refuse this one without it: a failure to
        sign or store it is a failure of the job, tried again like a failure to store the artifact."""
        attested = attestation_path(artifact)
        if self.settings.attestation_key_file:
            try:
                done = attest(artifact, report, spec.job.source.uri, Path(self.settings.attestation_key_file),
                              source_signature_of(artifact.parent))
            except (OSError, KeyLoadError) as err:
                log.warning("optimization job %s: signing its attestation failed: %s", spec.key, err)
                record.pop("artifact", None)
                return OptimizationReport.failed("OptimizationFailed", "the artifact could not be attested: "
                                                                       "the operator's signing key cannot be used")
            report = report.model_copy(update={"notes": [*report.notes, done.message]})
        if not attested.exists():
            return report
        envelope = attested.read_bytes()
        try:
            self.stores.get(spec.store).put_attestation(digest, envelope)
        except Exception as err:  # noqa: BLE001 - as for the artifact: a registry fails in many ways
            log.warning("optimization job %s: storing the attestation in %s failed: %s", spec.key, where, err)
            record.pop("artifact", None)
            return OptimizationReport.failed("OptimizationFailed", f"the artifact's attestation could not be "
                                                                   f"stored in {where}")
        record["attested"] = True
        record["attestedBy"] = _signed_by(envelope)
        signed = source_signature_of(artifact.parent)
        if signed is not None:
            record["attestedSignature"] = signed.bundle_sha256
        return report

    def close(self) -> None:
        self.processes.close()
        if self.kube_jobs is not None:
            self.kube_jobs.close()


def _signed_by(envelope: bytes) -> str:
    """The key id an attestation names (not verified here: nodes verify it against the keys they trust)."""
    try:
        return next((s.keyid for s in dsse.Envelope.parse(envelope).signatures), "")
    except dsse.Malformed:
        return ""


def _target(spec: JobSpec) -> str:
    t = spec.job.target
    feats = ",".join(t.cpu_features)
    device = f" on {t.device}" if t.device else ""
    return f"{t.runtime}{device} {t.precision}" + (f" [{feats}]" if feats else "")


def _summary(report: OptimizationReport) -> str:
    """The report's line; an accepted artifact's also says what was tried first and why it was not taken."""
    line = report.summary()
    return line + "".join(f"; {p}" for p in report.passed_over()) if report.outcome == "Optimized" else line


def _job_report(raw: bytes | dict[str, Any], key: str, what: str = "the optimization job's report"
                ) -> OptimizationReport:
    """A report validated once, here; a malformed one is an OptimizationFailed that says so.

    Its problem is named by field and rule only (pydantic's messages, never the input's values);
    the full error goes to the operator's log.
    """
    try:
        if isinstance(raw, dict):
            return OptimizationReport.model_validate(raw)
        return OptimizationReport.model_validate_json(raw)
    except ValidationError as err:
        log.warning("optimization job %s: %s is malformed: %s", key, what, err)
        first = err.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "the document"
        return OptimizationReport.failed("OptimizationFailed", f"{what} is malformed ({where}: {first['msg']})"[:500])


def _served_as_is(spec: JobSpec, unread: list[str]) -> ClassArtifact:
    """The class serves the source, unoptimized: its optimizer inputs are files on the nodes' hosts."""
    source = spec.job.source
    why = (f"not optimized: the {' and '.join(unread)} {'is a' if len(unread) == 1 else 'are'} file:// "
           "URI(s), files on the node agent's host that the operator does not read; the class serves the "
           "source model as it is (an http(s):// or oci:// URI lets the operator optimize it)")
    return ClassArtifact(ArtifactState.READY, artifact=Artifact(uri=source.uri, sha256=source.sha256,
                                                                precision="fp32"),
                         reason="NodeLocalSource", summary=why)


def _from_record(record: dict[str, Any], stores: ArtifactStores) -> ClassArtifact:
    report = _job_report(record.get("report", {}), str(record.get("key", "")), "the recorded report")
    art = record.get("artifact")
    if report.outcome == "Optimized" and art:
        return ClassArtifact(ArtifactState.READY,
                             artifact=Artifact(uri=stores.get(record.get("store", "")).uri_for(art["sha256"]),
                                               sha256=art["sha256"], precision=report.precision or "fp32"),
                             size_bytes=int(art["size"]), summary=_summary(report), message="; ".join(report.notes),
                             peak_memory_mib=report.memory.peak_mib if report.memory else None,
                             attested_by=str(record.get("attestedBy", "")))
    state = ArtifactState.REJECTED if report.outcome in ("OptimizationRejected", "DoesNotFit") \
        else ArtifactState.FAILED
    retry_in = max(0.0, record["retryAt"] - time.time()) if "retryAt" in record else None
    return ClassArtifact(state, reason=report.outcome, message=report.message[:1000], summary=_summary(report),
                         retry_in=retry_in)

