"""Errors the optimizer reports; each carries the condition reason the operator sets."""

from __future__ import annotations


class OptimizeError(Exception):
    """Base: `reason` is a CamelCase Kubernetes condition reason."""

    reason = "OptimizationFailed"


class NotOnnxError(OptimizeError):
    """The source file is not a loadable ONNX model."""

    reason = "InvalidModel"


class CalibrationMismatch(OptimizeError):
    """Calibration/validation data does not fit the model's inputs (names, ranks, shapes, types)."""

    reason = "CalibrationMismatch"


class TechniqueFailed(OptimizeError):
    """One technique failed on this model; the pipeline records it and tries the next candidate."""

    reason = "TechniqueFailed"
