"""Protocol-neutral request errors: each front end maps a `Status` to its own code.

The core raises `InferError(Status.X, message)`; HTTP turns it into a 4xx/5xx with
Triton's `{"error": message}` body and gRPC into the matching status code, so both
protocols report the same message for the same mistake.
"""

from __future__ import annotations

from enum import Enum


class Status(Enum):
    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    TOO_LARGE = "too_large"
    INTERNAL = "internal"


HTTP_CODES = {
    Status.INVALID_ARGUMENT: 400,
    Status.NOT_FOUND: 404,
    Status.UNAVAILABLE: 503,
    Status.TOO_LARGE: 413,
    Status.INTERNAL: 500,
}


class InferError(Exception):
    """A request the server refuses or could not answer; `message` says what was expected."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def invalid(message: str) -> InferError:
    return InferError(Status.INVALID_ARGUMENT, message)
