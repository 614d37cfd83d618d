"""One optimization job, in a worker process of the operator or in a Kubernetes Job's pod.

    python -m edgewise.optimize.job JOB_DIR              (worker process, started by the operator)
    edgewise optimize-job --work DIR --upload URL        (Job pod; the spec comes from the environment)

JOB_DIR/job.json says what to do (source and calibration by URI and sha256, the target and
the options). The job downloads them — verifying each digest, retrying with backoff — runs
the optimizer and writes JOB_DIR/report.json and, when accepted, JOB_DIR/artifact.onnx. A
failure before the optimizer (unreachable source, digest mismatch) is a report too, so the
operator always learns why. In a Job's pod the two files are then uploaded to the operator's
artifact store (`upload`), which is how the operator gets them.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from edgewise import contract
from edgewise.api.optimization_job import OptimizationJob
from edgewise.api.optimization_report import OptimizationReport
from edgewise.optimize import attestation
from edgewise.optimize.errors import OptimizeError
from edgewise.optimize.pipeline import Options, optimize
from edgewise.optimize.target import Target
from edgewise.shared import tracing
from edgewise.shared.digest import DigestMismatch
from edgewise.shared.download import DownloadError, TransientError, download_file, scheme_of


def _fetch_failure(what: str, uri: str, err: Exception) -> str:
    """Why `what` could not be fetched, in words that repeat nothing the server or the disk said.

    The report ends up in the model's status: a reason phrase, an error page or a local path
    there would let a namespace user read what the operator can reach.
    """
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, urllib.error.HTTPError):
            return f"the {what} {uri} could not be fetched: HTTP {cause.code}"
        cause = cause.__cause__
    kind = "a transient error (network, timeout, cut transfer)" if isinstance(err, TransientError) \
        else "a permanent error (refused, not found, unsupported)"
    return f"the {what} {uri} could not be fetched: {kind}"


def run(job_dir: Path, read_files: bool = True) -> OptimizationReport:
    """One job. `read_files=False` (a Job's pod): file:// inputs are refused, never opened."""
    job = OptimizationJob.model_validate_json((job_dir / contract.JOB_FILE).read_text())
    src = job_dir / "source.onnx"
    calibration = job_dir / "calibration.npz" if job.calibration else None
    inputs = [("source", job.source, src)] + ([("calibration data", job.calibration, calibration)]
                                             if job.calibration and calibration else [])
    what, uri = "source", job.source.uri
    try:
        for what, ref, dest in inputs:
            uri = ref.uri
            if not read_files and scheme_of(uri) == "file":
                return OptimizationReport.failed(
                    "SourceUnavailable", f"the {what} is a file:// URI, a file on the node agent's host, which "
                                         "an optimization Job does not read")
            download_file(uri, dest, ref.sha256)
    except DigestMismatch as err:
        return OptimizationReport.failed("DigestMismatch", f"the {what}'s bytes do not match its sha256; "
                                                           "nothing was optimized or deployed", detail=str(err))
    except (DownloadError, OSError) as err:
        return OptimizationReport.failed("SourceUnavailable", _fetch_failure(what, uri, err), detail=str(err))
    t, o = job.target, job.options
    target = Target(runtime=t.runtime, precision=t.precision, cpu_features=frozenset(t.cpu_features),
                    device=t.device)
    options = Options(quantization=o.quantization, keep_float=tuple(o.keep_float), fallback=o.fallback,
                      gate=o.gate, max_memory_mib=o.max_memory_mib, node_allocatable_mib=o.node_allocatable_mib,
                      max_samples=o.max_samples)
    try:
        return optimize(src, job_dir / "artifact.onnx", target, calibration=calibration, options=options,
                        work_dir=job_dir)
    except OptimizeError as err:
        return OptimizationReport.failed(err.reason, str(err))


def run_and_report(job_dir: Path, read_files: bool = True,
                   signing_key: bytes | Path | None = None) -> OptimizationReport:
    """Run the job; an accepted artifact is attested beside it with `signing_key` (none without one)."""
    report = run(job_dir, read_files)
    if report.outcome == "Optimized":
        job = OptimizationJob.model_validate_json((job_dir / contract.JOB_FILE).read_text())
        attested = attestation.attest(job_dir / "artifact.onnx", report, job.source.uri, signing_key,
                                      attestation.source_signature_of(job_dir))
        if attested.path is not None:  # without a key the operator signs it, and says so (controller/artifacts.py)
            report = report.model_copy(update={"notes": [*report.notes, attested.message]})
    tmp = job_dir / "report.json.tmp"
    report.write(tmp)
    tmp.rename(job_dir / "report.json")  # the operator reads a whole report or none
    return report


def _put(url: str, body: Path | bytes, headers: dict[str, str], attempts: int = 4) -> None:
    data = body.read_bytes() if isinstance(body, Path) else body
    for attempt in range(attempts):
        req = urllib.request.Request(url, data=data, method="PUT", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=300) as resp:
                resp.read()
            return
        except urllib.error.HTTPError as err:
            if err.code < 500 or attempt == attempts - 1:  # refused (token, digest): retrying won't help
                raise RuntimeError(f"PUT {url}: {err.code} {err.read().decode(errors='replace')[:300]}") from err
        except OSError:
            if attempt == attempts - 1:
                raise
        time.sleep(2 ** attempt)


def upload(job_dir: Path, report: OptimizationReport, base_url: str, token: str) -> None:
    """Send the artifact (when accepted) and then the report to the operator's store.

    The report goes last: its arrival tells the operator the job is done.
    """
    auth = {"Authorization": f"Bearer {token}"}
    artifact = job_dir / "artifact.onnx"
    if report.outcome == "Optimized" and report.artifact and artifact.exists():
        _put(f"{base_url}/artifact", artifact, auth | {"Content-Type": "application/octet-stream",
                                                        contract.AGENT_SHA256_HEADER: report.artifact.sha256})
        attested = attestation.attestation_path(artifact)
        if attested.exists():
            _put(f"{base_url}/attestation", attested, auth | {"Content-Type": "application/json"})
    _put(f"{base_url}/report", report.to_json().encode(), auth | {"Content-Type": "application/json"})


def run_in_pod(work: Path, upload_url: str, env: dict[str, str]) -> int:
    """The Job pod's entry point: spec from the environment, results uploaded."""
    work.mkdir(parents=True, exist_ok=True)
    (work / contract.JOB_FILE).write_text(env[contract.JOB_SPEC_ENV])
    report = run_and_report(work, read_files=False, signing_key=attestation.key_from_env(env))
    upload(work, report, upload_url.rstrip("/"), env[contract.JOB_TOKEN_ENV])
    print(json.dumps({"outcome": report.outcome, "message": report.message[:500]}))
    return 0


def main() -> None:
    """The operator's worker process (runIn: Process)."""
    tracing.configure("edgewise-optimize")  # only when the OTEL_* variables it inherited ask for traces
    try:
        run_and_report(Path(sys.argv[1]), signing_key=attestation.key_from_env(os.environ))
    finally:
        tracing.flush()  # the process ends right after: send its attempts' spans first


if __name__ == "__main__":
    main()
