"""The optimization report is one typed model for success, rejection, does-not-fit and failure."""

from __future__ import annotations

import json
from typing import get_args

import pytest
from pydantic import ValidationError

from edgewise.api.optimization_report import FAILED_OUTCOMES, MADE_OUTCOMES, OptimizationReport, Outcome
from edgewise.contract import JOB_REPORT_DETAIL
from edgewise.optimize import errors

FILE = {"path": "m.onnx", "sha256": "0" * 64, "sizeBytes": 10}
TARGET = {"runtime": "onnxruntime", "precision": "int8", "cpuFeatures": ["avx2"]}
REJECTED = {"outcome": "OptimizationRejected", "message": "no artifact passed the accuracy gate",
            "source": FILE, "sourceKind": "cnn", "sourceOpset": 17, "target": TARGET, "precision": "",
            "technique": "int8 static"}


def _subclasses(cls: type) -> list[type]:
    return [cls] + [s for sub in cls.__subclasses__() for s in _subclasses(sub)]


def test_every_reason_the_optimizer_raises_is_a_failure_outcome_of_the_report() -> None:
    reasons = {cls.reason for cls in _subclasses(errors.OptimizeError)}
    assert reasons <= FAILED_OUTCOMES
    assert set(get_args(Outcome)) >= reasons | MADE_OUTCOMES | {"SourceUnavailable", "DigestMismatch"}


@pytest.mark.parametrize("outcome", sorted(FAILED_OUTCOMES))
def test_a_failure_is_a_report_whose_wire_form_is_outcome_and_message(outcome: str) -> None:
    report = OptimizationReport.model_validate({"outcome": outcome, "message": "why"})
    assert not report.made and report.summary() == outcome
    assert report.to_wire() == {"outcome": outcome, "message": "why"}
    assert json.loads(report.to_json()) == {"outcome": outcome, "message": "why"}


def test_a_failure_carries_its_detail_over_the_wire_until_the_operator_drops_it() -> None:
    report = OptimizationReport.failed("SourceUnavailable", "HTTP 404", detail="the server's page")
    assert report.to_wire() == {"outcome": "SourceUnavailable", "message": "HTTP 404",
                                JOB_REPORT_DETAIL: "the server's page"}
    assert OptimizationReport.model_validate_json(report.to_json()) == report
    assert "detail" not in report.without_detail().to_wire()


def test_a_made_report_round_trips_and_keeps_its_camel_case_fields() -> None:
    report = OptimizationReport.model_validate(REJECTED)
    assert report.made and report.source is not None and report.source.size_bytes == 10
    wire = report.to_wire()
    assert wire["sourceKind"] == "cnn" and wire["target"]["cpuFeatures"] == ["avx2"] and "detail" not in wire
    assert OptimizationReport.model_validate(wire) == report


@pytest.mark.parametrize(("report", "problem"), [
    ({k: v for k, v in REJECTED.items() if k != "source"}, "names its source and target"),
    ({k: v for k, v in REJECTED.items() if k != "target"}, "names its source and target"),
    (REJECTED | {"outcome": "Optimized"}, "describes its artifact"),
    (REJECTED | {"outcome": "DoesNotFit"}, "describes its artifact"),
    ({"outcome": "Exploded", "message": "x"}, "outcome"),
    ({"outcome": "Optimized"}, "message"),
])
def test_a_report_that_does_not_say_what_its_outcome_needs_is_refused(report: dict, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        OptimizationReport.model_validate(report)


def test_what_was_passed_over_is_every_attempt_not_accepted_in_200_characters() -> None:
    report = OptimizationReport.model_validate(REJECTED | {"attempts": [
        {"technique": "int8 static", "precision": "int8", "status": "rejected", "message": "cosine " + "9" * 300},
        {"technique": "fp16", "precision": "fp16", "status": "accepted"}]})
    assert report.passed_over() == ["int8 static rejected: cosine " + "9" * 193]
