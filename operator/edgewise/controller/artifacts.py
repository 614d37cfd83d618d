"""Per-class artifacts: optimization jobs in worker processes, results in the artifact store.

A job runs `python -m edgewise.optimize.job` in its own process, with an address-space
limit and a deadline, never in the operator's event loop. Results are recorded in the
store's index by job key (see core/optimization.py), on the store's volume: a restarted
operator finds them and recomputes nothing.
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgewise.api.profile import DeploymentProfileSpec
from edgewise.api.resources import EdgeModel
from edgewise.api.settings import OperatorSettings
from edgewise.artifacts.builtin import BuiltinStore
from edgewise.core.classify import Classification
from edgewise.core.optimization import JobSpec, job_spec
from edgewise.core.runtimes import Artifact

log = logging.getLogger("edgewise.artifacts")


@dataclass(frozen=True)
class ClassArtifact:
    """Where a class's artifact stands."""

    state: str  # Ready | Optimizing | Rejected | Failed | Idle (no node in the class)
    artifact: Artifact | None = None
    reason: str = ""  # condition reason when not Ready (OptimizationRejected, DoesNotFit, InvalidModel, …)
    message: str = ""
    size_bytes: int = 0
    summary: str = ""  # the report in one line: technique, size and latency ratios, cosine, peak memory


@dataclass
class _Job:
    proc: subprocess.Popen[bytes]
    started: float
    dir: Path


@dataclass
class ArtifactManager:
    settings: OperatorSettings
    jobs: dict[str, _Job] = field(default_factory=dict)

    def __post_init__(self) -> None:
        root = Path(self.settings.artifact_dir)
        self.store = BuiltinStore(root / "store", self.settings.artifact_url.rstrip("/"))
        self.index = root / "index"
        self.work = root / "jobs"
        self.index.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)

    def resolve(self, model: EdgeModel, profile: DeploymentProfileSpec, classification: Classification
                ) -> dict[str, ClassArtifact]:
        """Each class's artifact: ready, being made (a job started if needed), or refused."""
        out: dict[str, ClassArtifact] = {}
        who = f"{model.metadata.namespace}/{model.metadata.name}"
        for hc in profile.classes:
            members = classification.members(hc.name).nodes
            spec = job_spec(model, hc, members)
            if spec is None:
                continue
            if not members:  # nothing to make, and nothing to deploy, until a node joins the class
                out[hc.name] = ClassArtifact(state="Idle", message="no node in the class yet")
                continue
            out[hc.name] = self._resolve(spec, who)
        return out

    def _resolve(self, spec: JobSpec, who: str) -> ClassArtifact:
        done = self.index / f"{spec.key}.json"
        if done.exists():
            return _from_record(json.loads(done.read_text()), self.store)
        job = self.jobs.get(spec.key)
        if job is None:
            self._start(spec, who)
            return ClassArtifact(state="Optimizing", reason="Optimizing",
                                 message=f"optimizing for {_target(spec)}")
        if job.proc.poll() is None:
            if time.monotonic() - job.started > self.settings.optimize_timeout_seconds:
                job.proc.kill()
                job.proc.wait()
                return self._finish(spec, {"outcome": "OptimizationFailed",
                                           "message": f"gave up after {self.settings.optimize_timeout_seconds}s"})
            return ClassArtifact(state="Optimizing", reason="Optimizing",
                                 message=f"optimizing for {_target(spec)} ({time.monotonic() - job.started:.0f}s)")
        report_path = job.dir / "report.json"
        if report_path.exists():
            report = json.loads(report_path.read_text())
        else:  # killed by its memory limit, or crashed
            tail = (job.dir / "job.log").read_text(errors="replace")[-400:] if (job.dir / "job.log").exists() else ""
            report = {"outcome": "OptimizationFailed",
                      "message": f"the optimization process exited {job.proc.returncode} without a report "
                                 f"(memory limit {self.settings.optimize_memory_mib} MiB?): {tail}"}
        return self._finish(spec, report)

    def _start(self, spec: JobSpec, who: str) -> None:
        job_dir = self.work / spec.key
        shutil.rmtree(job_dir, ignore_errors=True)
        job_dir.mkdir(parents=True)
        (job_dir / "job.json").write_text(json.dumps(spec.body, indent=2))
        limit = self.settings.optimize_memory_mib * 2 ** 20

        def limits() -> None:  # in the child, before exec
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        with open(job_dir / "job.log", "wb") as log_file:
            # cwd: onnxruntime's quantization tools write scratch files into the working directory.
            proc = subprocess.Popen([sys.executable, "-m", "edgewise.optimize.job", str(job_dir)],
                                    stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=limits, cwd=job_dir)
        self.jobs[spec.key] = _Job(proc=proc, started=time.monotonic(), dir=job_dir)
        log.info("optimization job %s started for %s (%s)", spec.key, _target(spec), who)

    def _finish(self, spec: JobSpec, report: dict[str, Any]) -> ClassArtifact:
        job = self.jobs.pop(spec.key, None)
        record: dict[str, Any] = {"key": spec.key, "spec": spec.body, "report": report}
        if report.get("outcome") == "Optimized" and job and (job.dir / "artifact.onnx").exists():
            ref = self.store.put(job.dir / "artifact.onnx", {
                "edgewise.io/source-sha256": spec.body["source"]["sha256"],
                "edgewise.io/target": _target(spec), "edgewise.io/precision": str(report.get("precision", "")),
                "edgewise.io/report": _summary(report)})
            record["artifact"] = {"sha256": ref.digest.removeprefix("sha256:"), "size": ref.size}
        tmp = self.index / f"{spec.key}.json.tmp"
        tmp.write_text(json.dumps(record, indent=2))
        tmp.rename(self.index / f"{spec.key}.json")
        if job:
            shutil.rmtree(job.dir, ignore_errors=True)
        log.info("optimization job %s: %s", spec.key, _summary(report))
        return _from_record(record, self.store)

    def close(self) -> None:
        for job in self.jobs.values():
            job.proc.kill()


def _target(spec: JobSpec) -> str:
    t = spec.body["target"]
    feats = ",".join(t["cpuFeatures"])
    return f"{t['runtime']} {t['precision']}" + (f" [{feats}]" if feats else "")


def _summary(report: dict[str, Any]) -> str:
    parts = [f"{report.get('outcome')}: {report.get('technique', '')}".rstrip(": ")]
    if report.get("sizeRatio") is not None:
        parts.append(f"size {report['sizeRatio']:.2f}x")
    if (report.get("latency") or {}).get("ratio") is not None:
        parts.append(f"latency {report['latency']['ratio']:.2f}x")
    if (report.get("agreement") or {}).get("minCosine") is not None:
        parts.append(f"min cosine {report['agreement']['minCosine']:.4f}")
    if (report.get("memory") or {}).get("peakMiB") is not None:
        parts.append(f"peak {report['memory']['peakMiB']:.0f} MiB")
    return ", ".join(parts)


def _from_record(record: dict[str, Any], store: BuiltinStore) -> ClassArtifact:
    report = record["report"]
    outcome = str(report.get("outcome", "OptimizationFailed"))
    art = record.get("artifact")
    if outcome == "Optimized" and art:
        return ClassArtifact(state="Ready", artifact=Artifact(uri=store.uri_for(art["sha256"]), sha256=art["sha256"],
                                                              precision=str(report.get("precision", "fp32"))),
                             size_bytes=int(art["size"]), summary=_summary(report),
                             message="; ".join(report.get("notes") or []))
    state = "Rejected" if outcome in ("OptimizationRejected", "DoesNotFit") else "Failed"
    return ClassArtifact(state=state, reason=outcome, message=str(report.get("message", ""))[:1000],
                         summary=_summary(report))

