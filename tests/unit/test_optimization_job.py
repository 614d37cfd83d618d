"""The optimization job spec, its cache key and its Kubernetes Job (pure)."""

from __future__ import annotations

import json

from edgewise import contract
from edgewise.api.profile import HardwareClass
from edgewise.api.resources import EdgeModel
from edgewise.api.settings import OperatorSettings
from edgewise.core.optimization import job_manifest, job_spec, token_secret_manifest

CPU = HardwareClass.model_validate({"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"},
                                    "runtime": "onnxruntime", "precision": "int8"})


def _model(**optimization: object) -> EdgeModel:
    return EdgeModel.model_validate({
        "apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel", "metadata": {"name": "m", "namespace": "ns"},
        "spec": {"version": "1", "source": {"uri": "https://models.example/m.onnx", "sha256": "a" * 64},
                 "optimization": optimization}})


def test_where_a_job_runs_does_not_change_what_it_makes() -> None:
    in_process = job_spec(_model(), CPU, [])
    in_job = job_spec(_model(runIn="Job", jobMemory="16Gi"), CPU, [])
    assert in_process and in_job
    assert in_process.key == in_job.key and in_process.job == in_job.job  # the same artifact, made once
    assert (in_process.run_in, in_process.memory_mib) == ("Process", None)
    assert (in_job.run_in, in_job.memory_mib) == ("Job", 16 * 1024)


def test_the_job_runs_the_spec_restricted_and_uploads_to_the_store() -> None:
    settings = OperatorSettings(namespace="edgewise-system", artifact_url="http://store.edgewise-system:8090/",
                                image_registry="mirror.local", optimize_timeout_seconds=900)
    spec = job_spec(_model(runIn="Job", jobMemory="6Gi"), CPU, [])
    assert spec
    job = job_manifest(spec, settings, who="ns/m")
    assert job["metadata"]["namespace"] == "edgewise-system" and spec.key in job["metadata"]["name"]
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 900
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    c = pod["containers"][0]
    assert c["image"].startswith("mirror.local/edgewise/operator:")
    assert c["args"] == ["optimize-job", "--work", contract.JOB_WORK_DIR, "--upload",
                         f"http://store.edgewise-system:8090/uploads/{spec.key}"]
    env = {e["name"]: e.get("value") or e["valueFrom"] for e in c["env"]}
    assert json.loads(env[contract.JOB_SPEC_ENV]) == spec.job.to_wire()
    # The token is not in the Job: its pod reads it from the Secret of the same name.
    assert env[contract.JOB_TOKEN_ENV] == {"secretKeyRef": {"name": job["metadata"]["name"], "key": "token"}}
    secret = token_secret_manifest(spec, settings, "t0k")
    assert secret["kind"] == "Secret" and secret["stringData"] == {"token": "t0k"}
    assert secret["metadata"]["name"] == job["metadata"]["name"] and "t0k" not in json.dumps(job)
    assert c["resources"]["limits"]["memory"] == c["resources"]["requests"]["memory"] == "6144Mi"
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["capabilities"] == {"drop": ["ALL"]}


def test_without_job_memory_the_job_gets_the_operators_limit() -> None:
    spec = job_spec(_model(runIn="Job"), CPU, [])
    assert spec
    job = job_manifest(spec, OperatorSettings(optimize_memory_mib=3000), who="ns/m")
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "3000Mi"


def test_the_job_crosses_to_the_optimizer_as_it_was_hashed() -> None:
    from edgewise.api.optimization_job import OptimizationJob

    spec = job_spec(_model(quantization="static", calibration={"uri": "https://models.example/c.npz",
                                                               "maxSamples": 32},
                           accuracyGate={"minCosine": 0.95}), CPU, [])
    assert spec
    read_back = OptimizationJob.model_validate_json(json.dumps(spec.job.to_wire()))
    assert read_back == spec.job and read_back.key() == spec.key
    assert (read_back.options.gate.min_cosine, read_back.options.max_samples) == (0.95, 32)
    assert read_back.calibration and read_back.calibration.sha256 == ""


def test_job_keys_do_not_change_with_the_model_that_carries_them() -> None:
    # The key names the artifact already made in the store's index: a change re-optimizes every model.
    spec = job_spec(_model(), CPU, [])
    assert spec and spec.key == "9dc57f663a8a90b436d78b06"
