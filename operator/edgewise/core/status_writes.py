"""Which status changes are worth an API write while pods move.

A large fleet's DaemonSets report progress many times per step (every few pods), and each report
changes a ready count in the model's status. Writing each one makes the operator's writes per step
grow with the fleet. So progress counts are written in steps of a tenth of their class (or
site, or model), and exactly once the counts stop moving: once reconciles have computed the same
status for SETTLE_SECONDS, what they see is written. Everything else (states, steps, verdicts,
tallies of failures, conditions' reasons) is written as soon as it changes. A class of up to 10
nodes is always written exactly.

Why tenths: each count can cross at most LEVELS marks in a rollout, whatever the fleet's size, so
that is the ceiling; below it, how many crossings a reconcile sees apart depends on how fast pods
move between reconciles (docs/benchmarks.md). Why a rest of SETTLE_SECONDS, not two reconciles
that agree: a large fleet's DaemonSets report changes that leave the computed status as it was
(pods available, generations observed) while its pods are still on their way, so two reconciles
in a row agree many times within a step, and each agreement was a write.

Pure: `worth_writing` compares the status as it is with the status computed now, given how long
reconciles have been computing that same status.
"""

from __future__ import annotations

import math
import re
from typing import Any

LEVELS = 10  # progress counts are written when they cross one of these fractions of their total
SETTLE_SECONDS = 10.0  # counts unchanged this long rest, and are written exactly

# Counts that follow pods as they become ready; each is scaled by a total in the same object.
_PROGRESS_KEYS = frozenset({"readyPods", "updatedPods", "desiredPods", "readyNodes", "tried"})
_TOTAL_KEYS = ("matchedNodes", "nodes")
_NUMBER = re.compile(r"\d+")


def worth_writing(current: dict[str, Any], new: dict[str, Any], rested_seconds: float) -> bool:
    """True when `new` should be written over `current`.

    `rested_seconds`: how long the reconciles of this model have been computing `new` (0 when it is new):
    past SETTLE_SECONDS the pods rest, and the exact counts are written."""
    if new == current:
        return False
    if rested_seconds >= SETTLE_SECONDS:
        return True
    scale = _total(new)
    return _coarse(current, scale) != _coarse(new, scale)


def _total(status: dict[str, Any]) -> int:
    total = status.get("matchedNodes")
    return total if isinstance(total, int) else 0


def _quantum(total: int) -> int:
    return max(1, math.ceil(total / LEVELS))


def _coarse(value: Any, scale: int, key: str = "") -> Any:
    """`value` with progress counts rounded down to their quantum, and the numbers in messages hidden
    (they repeat the counts; a change that matters changes a field too)."""
    if isinstance(value, dict):
        total = next((value[k] for k in _TOTAL_KEYS if isinstance(value.get(k), int)), scale)
        return {k: _coarse(v, total, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_coarse(v, scale, key) for v in value]
    if key in _PROGRESS_KEYS and isinstance(value, int):
        return value // _quantum(scale) if value < scale else "all"
    if key == "ready" and isinstance(value, str):  # "ready/matched" at the top
        ready, _, matched = value.partition("/")
        if ready.isdigit() and matched.isdigit():
            return f"{_coarse(int(ready), int(matched), 'readyPods')}/{matched}"
        return value
    if key == "message" and isinstance(value, str):
        return _NUMBER.sub("#", value)
    return value
