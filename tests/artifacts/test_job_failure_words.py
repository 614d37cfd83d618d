"""A worker process that dies without a report: the model's status says so, its output goes to the log.

Its output is a traceback of the operator's pod (paths, code, whatever the exception quoted);
the status a namespace user reads gets the exit code and where to look, nothing more.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from kubernetes.client import ApiClient

from edgewise.api.optimization_job import JobInput, OptimizationJob
from edgewise.api.settings import OperatorSettings
from edgewise.controller.optimize_runners import Ended, ProcessRunner
from edgewise.core.optimization import JobSpec
from edgewise.kube.writes import Writes
from wait_support import wait_for


def test_a_crash_leaves_its_output_in_the_log_not_the_status(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                             ) -> None:
    runner = ProcessRunner(OperatorSettings())
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    half_a_job = OptimizationJob.model_construct(source=JobInput(uri="https://models.example/m.onnx"))
    runner.start(JobSpec(key="k", job=half_a_job), job_dir, "ns/m", Writes(ApiClient()))  # it cannot read it
    try:
        with caplog.at_level(logging.WARNING, logger="edgewise.artifacts"):
            ended = wait_for(lambda: runner.poll("k", job_dir), 120, "the worker to exit")
    finally:
        runner.close()
    assert isinstance(ended, Ended)
    assert "exited 1 without a report" in ended.problem and "operator's log" in ended.problem
    assert "Traceback" not in ended.problem and "ValidationError" not in ended.problem and "/" not in ended.problem
    assert "ValidationError" in caplog.text  # the admin still sees why
