"""Where optimization jobs run: a worker process of the operator, or a Kubernetes Job.

Both runners leave the same two files in the job's work directory — report.json and, when
accepted, artifact.onnx — and the artifact manager takes it from there. A worker process
writes them itself; a Job's pod uploads them to the operator's store (artifacts/builtin_http.py).
`poll` says whether the job is still running and, when it ended without a report, why.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import resource
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from edgewise import contract
from edgewise.api.settings import OperatorSettings
from edgewise.core.optimization import JobSpec, job_manifest, job_name, token_secret_manifest
from edgewise.kube.writes import Writes

log = logging.getLogger("edgewise.artifacts")


@dataclass
class Ended:
    """The job is over; `problem` says why when it left no report."""

    problem: str = ""


class ProcessRunner:
    """`python -m edgewise.optimize.job DIR` under an address-space limit (RLIMIT_AS)."""

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, spec: JobSpec, job_dir: Path, who: str, write: Writes) -> None:
        (job_dir / contract.JOB_FILE).write_text(json.dumps(spec.job.to_wire(), indent=2))
        limit = self.settings.optimize_memory_mib * 2 ** 20

        def limits() -> None:  # in the child, before exec
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        with open(job_dir / "job.log", "wb") as log_file:
            # cwd: onnxruntime's quantization tools write scratch files into the working directory.
            self.procs[spec.key] = subprocess.Popen(
                [sys.executable, "-m", "edgewise.optimize.job", str(job_dir)],
                stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=limits, cwd=job_dir,
                env=_worker_env(self.settings.trace_env))

    def poll(self, key: str, job_dir: Path) -> Ended | None:
        proc = self.procs.get(key)
        if proc is None:
            return Ended("the worker process is gone (operator restarted?)")
        if proc.poll() is None:
            return None
        del self.procs[key]
        tail = (job_dir / "job.log").read_text(errors="replace")[-2000:] if (job_dir / "job.log").exists() else ""
        # Its output (a traceback, paths of the operator's pod) is for the operator's log, not the model's status.
        log.warning("optimization process %s exited %s without a report; its output ends: %s", key,
                    proc.returncode, tail)
        return Ended(f"the optimization process exited {proc.returncode} without a report (memory limit "
                     f"{self.settings.optimize_memory_mib} MiB?); its output is in the operator's log")

    def stop(self, key: str, write: Writes) -> None:
        self._kill(key)

    def _kill(self, key: str) -> None:
        proc = self.procs.pop(key, None)
        if proc is not None:
            proc.kill()
            proc.wait()

    def upload_token(self, key: str) -> str:
        return ""  # a worker process writes its results itself

    def close(self) -> None:
        for key in list(self.procs):
            self._kill(key)


def _worker_env(trace_env: dict[str, str]) -> dict[str, str]:
    """The operator's environment with the OTEL_* variables a Job would get (no OTEL_SERVICE_NAME: the
    worker's spans are edgewise-optimize's), without the attestation key's path: the operator signs
    what a job reports (controller/artifacts.py), a job never does."""
    return {**{k: v for k, v in os.environ.items()
               if not k.startswith("OTEL_") and k != contract.ATTESTATION_KEY_ENV}, **trace_env}


SIGNING_KEY_FILE = "upload-token.key"


def upload_token(signing_key: bytes, job_key: str) -> str:
    """The upload token of job `job_key`: the same for the same key, unguessable without it."""
    return hmac.new(signing_key, job_key.encode(), hashlib.sha256).hexdigest()


class KubeJobRunner:
    """A Kubernetes Job in the operator's namespace; its pod uploads the results with a per-job token.

    The token lives in a Secret of the Job's name, owned by the Job (so it goes when the Job
    goes); the Job's spec only refers to it. The operator never reads a Secret (its Role cannot:
    charts/edgewise/templates/rbac.yaml): a token is an HMAC of the job key under a key kept on
    the artifact volume, so a restarted operator knows the token of a Job it adopts.
    """

    def __init__(self, settings: OperatorSettings, api: client.ApiClient) -> None:
        self.settings = settings
        self.batch = client.BatchV1Api(api)
        self.tokens: dict[str, str] = {}

    def start(self, spec: JobSpec, job_dir: Path, who: str, write: Writes) -> None:
        ns, name = self.settings.namespace, job_name(spec.key)
        # A Secret a previous operator created holds the same token: the token is derived, not drawn.
        token = upload_token(self._signing_key(), spec.key)
        write.create_secret(token_secret_manifest(spec, self.settings, token))
        uid = write.create_job(job_manifest(spec, self.settings, who))
        if uid is None:
            # A Job from before an operator restart: adopt it (its token is in the Secret), don't start another.
            uid = self.batch.read_namespaced_job(name, ns).metadata.uid
            log.info("adopted optimization Job %s", name)
        write.own_secret(ns, name, {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid})
        self.tokens[spec.key] = token

    def _signing_key(self) -> bytes:
        """The key of upload tokens, made once and kept on the artifact volume (readable by the operator only)."""
        path = Path(self.settings.artifact_dir) / SIGNING_KEY_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")  # mode 0600
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(secrets.token_bytes(32))
                os.link(tmp, path)  # atomic and never replaces: whoever links first wins
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        return path.read_bytes()

    def poll(self, key: str, job_dir: Path) -> Ended | None:
        try:
            job = self.batch.read_namespaced_job_status(job_name(key), self.settings.namespace)
        except ApiException as err:
            if err.status == 404:
                return Ended(f"the optimization Job {job_name(key)} disappeared before it reported")
            raise
        for cond in (job.status.conditions if job.status else None) or []:
            if cond.status != "True":
                continue
            if cond.type == "Failed":
                return Ended(f"the optimization Job {job_name(key)} failed: {cond.reason}: {cond.message or ''}")
            if cond.type == "Complete":
                return Ended(f"the optimization Job {job_name(key)} completed without uploading a report")
        return None

    def stop(self, key: str, write: Writes) -> None:
        self.tokens.pop(key, None)
        # The Secret would go with the Job (its owner); deleting it too does not wait for that.
        write.delete_job(self.settings.namespace, job_name(key))
        write.delete_secret(self.settings.namespace, job_name(key))

    def upload_token(self, key: str) -> str:
        return self.tokens.get(key, "")

    def close(self) -> None:
        """Jobs outlive the operator: a restarted operator adopts them."""
