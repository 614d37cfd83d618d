"""Errors the optimizer reports; each carries the condition reason the operator sets."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only the name: reading an error's reason needs no pydantic
    from edgewise.api.optimization_report import FailedOutcome


class OptimizeError(Exception):
    """Base: `reason` is a CamelCase Kubernetes condition reason."""

    reason: FailedOutcome = "OptimizationFailed"


class NotOnnxError(OptimizeError):
    """The source file is not a loadable ONNX model."""

    reason: FailedOutcome = "InvalidModel"


class CalibrationMismatch(OptimizeError):
    """Calibration/validation data does not fit the model's inputs (names, ranks, shapes, types)."""

    reason: FailedOutcome = "CalibrationMismatch"


class TechniqueFailed(OptimizeError):
    """One technique failed on this model; the pipeline records it and tries the next candidate."""

    reason: FailedOutcome = "TechniqueFailed"
