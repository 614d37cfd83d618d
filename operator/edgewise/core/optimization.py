"""What each class's artifact must be: the optimization job spec and its cache key (pure).

One artifact per unique (source digest, target, options): classes with the same target share
it, and the key names a file in the operator's artifact store, so nothing is computed twice —
not for another class, not after an operator restart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgewise import contract
from edgewise.api.base import memory_mib
from edgewise.api.optimization_job import JobInput, JobOptions, JobTarget, OptimizationJob
from edgewise.api.profile import HardwareClass
from edgewise.api.resources import EdgeModel
from edgewise.api.settings import OperatorSettings
from edgewise.contract import DEFAULT_MAX_SAMPLES
from edgewise.core import names
from edgewise.core.observed import NodeInfo
from edgewise.core.pods import container_security, pod_security, pull_secrets, trace_env

NFD_CPUID = "feature.node.kubernetes.io/cpu-cpuid."


@dataclass(frozen=True)
class JobSpec:
    """What to make (`job`, hashed into `key`) and where to run it (not part of the key: same artifact)."""

    key: str
    job: OptimizationJob
    run_in: str = "Process"  # Process | Job
    memory_mib: int | None = None  # the Job's memory; None: the operator's default
    store: str = ""  # where the artifact goes (spec.optimization.artifactStore); "": the built-in store


def cpu_features(nodes: Sequence[NodeInfo]) -> list[str]:
    """Features every node of the class has (so the artifact runs on all of them): NFD cpuid flags, arch."""
    sets = []
    for n in nodes:
        feats = {k[len(NFD_CPUID):].lower() for k, v in n.labels.items() if k.startswith(NFD_CPUID) and v == "true"}
        if n.labels.get("kubernetes.io/arch") == "arm64":
            feats.add("arm64")
        sets.append(feats)
    return sorted(set.intersection(*sets)) if sets else []


def job_spec(model: EdgeModel, hc: HardwareClass, nodes: Sequence[NodeInfo]) -> JobSpec | None:
    """The optimization job of one class, or None when the class serves the source as it is."""
    opt = model.spec.optimization
    if opt.quantization == "none":
        return None
    allocatable = [n.memory_mib for n in nodes if n.memory_mib]
    calibration = opt.calibration
    job = OptimizationJob(
        source=JobInput(uri=model.spec.source.uri, sha256=model.spec.source.digest()),
        calibration=JobInput(uri=calibration.uri, sha256=calibration.sha256 or "") if calibration else None,
        target=JobTarget(runtime=hc.runtime, precision=hc.effective_precision(),
                         cpu_features=cpu_features(nodes) if hc.runtime in ("onnxruntime", "openvino") else [],
                         device=hc.effective_device() if hc.runtime == "openvino" else None),
        options=JobOptions(quantization=opt.quantization, fallback=opt.fallback,
                           min_cosine=opt.accuracy_gate.min_cosine,
                           max_top1_drop_percent=opt.accuracy_gate.max_top1_drop_percent,
                           keep_float=list(opt.keep_float or []),
                           max_memory_mib=hc.slo.max_memory_mib if hc.slo else None,
                           node_allocatable_mib=min(allocatable) if allocatable else None,
                           max_samples=calibration.max_samples if calibration else DEFAULT_MAX_SAMPLES))
    store = opt.artifact_store or ""
    return JobSpec(key=job_key(job, store), job=job, run_in=opt.run_in, store=store,
                   memory_mib=memory_mib(opt.job_memory) if opt.job_memory else None)


def job_key(job: OptimizationJob, store: str = "") -> str:
    """The job's cache key. The store is not part of the job (the artifact is the same) but of the
    key: a model whose artifacts go to a registry must not be handed one kept elsewhere."""
    if not store:
        return job.key()
    return hashlib.sha256(f"{job.key()}\n{store}".encode()).hexdigest()[:24]


JOB_LABEL = "edgewise.io/optimization-job"
JOB_TTL_SECONDS = 3600


def job_name(key: str) -> str:
    return f"edgewise-optimize-{key}"


TOKEN_KEY = "token"  # the key of the upload token in the Job's Secret


def token_secret_manifest(spec: JobSpec, settings: OperatorSettings, token: str) -> dict[str, Any]:
    """The Secret holding a Job's upload token: the Job's spec (readable by more people than
    Secrets usually are) only names it. Once the Job exists, it owns the Secret."""
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": job_name(spec.key), "namespace": settings.namespace,
                     "labels": {JOB_LABEL: spec.key, names.PART_OF: "edgewise", names.COMPONENT: "optimizer"}},
        "stringData": {TOKEN_KEY: token},
    }


def job_manifest(spec: JobSpec, settings: OperatorSettings, who: str) -> dict[str, Any]:
    """The Kubernetes Job that runs `spec` in the operator's namespace (runIn: Job).

    Its pod needs no API access and no volume but scratch space: it downloads the source,
    optimizes, and uploads the artifact and the report to the operator's store, which is
    where the operator learns the outcome; the upload token comes from the Secret of the
    same name. The Job does not retry by itself (the operator retries passing failures with
    its own backoff) and is deleted an hour after it finished.
    """
    memory = f"{spec.memory_mib or settings.optimize_memory_mib}Mi"
    upload = settings.artifact_url.rstrip("/") + contract.JOB_UPLOAD_PATH.format(key=spec.key, part="").rstrip("/")
    uid = settings.run_as_user
    job_json = json.dumps(spec.job.to_wire(), sort_keys=True)
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job_name(spec.key), "namespace": settings.namespace,
                     "labels": {JOB_LABEL: spec.key, names.PART_OF: "edgewise", names.COMPONENT: "optimizer"},
                     "annotations": {"edgewise.io/for": who}},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": settings.optimize_timeout_seconds,
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "template": {
                "metadata": {"labels": {JOB_LABEL: spec.key, names.COMPONENT: "optimizer"}},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security(uid),
                    **pull_secrets(settings.image_pull_secrets),
                    "containers": [{
                        "name": "optimize",
                        "image": settings.image(settings.operator_image),
                        "imagePullPolicy": settings.image_pull_policy,
                        "command": ["edgewise"],
                        "args": ["optimize-job", "--work", contract.JOB_WORK_DIR, "--upload", upload],
                        "env": [{"name": contract.JOB_SPEC_ENV, "value": job_json},
                                {"name": contract.JOB_TOKEN_ENV, "valueFrom": {"secretKeyRef": {
                                    "name": job_name(spec.key), "key": TOKEN_KEY}}},
                                *trace_env(settings.trace_env)],
                        "resources": {"requests": {"cpu": "1", "memory": memory}, "limits": {"memory": memory}},
                        "securityContext": container_security(uid),
                        "volumeMounts": [{"name": "work", "mountPath": contract.JOB_WORK_DIR},
                                         {"name": "tmp", "mountPath": "/tmp"}],
                    }],
                    "volumes": [{"name": "work", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }
