"""spec.rollout.progressDeadline: how long a rollout may go without progress before it is Degraded.

One rule, measured from when progress was last made: the start of the current canary step
while a class has a canary (`class_machine`), the last transition of the model's Progressing
condition otherwise (a first revision, or an optimization, see `core/status.py`). Exactly one
of the two clocks runs at a time, so a model is never judged twice for the same wait.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from edgewise.api.model import Rollout
from edgewise.core.durations import seconds


@dataclass(frozen=True)
class Deadline:
    waited: float  # seconds since progress was last made
    limit: float  # spec.rollout.progressDeadline, in seconds

    @property
    def exceeded(self) -> bool:
        return self.waited >= self.limit

    @property
    def remaining(self) -> float:
        return self.limit - self.waited


def progress_deadline(spec: Rollout, since: dt.datetime, now: dt.datetime) -> Deadline:
    return Deadline(waited=(now - since).total_seconds(), limit=seconds(spec.progress_deadline))
