"""Which status changes are worth an API write while pods move.

A large fleet's DaemonSets report progress many times per step (every few pods), and each report
changes a ready count in the model's status. Writing each one makes the operator's writes per step
grow with the fleet. So progress counts are written in steps of a tenth of their class (or
site, or model), and exactly once the counts stop moving: a reconcile that computes the same
status as the one before it writes what it sees. Everything else (states, steps, verdicts,
tallies of failures, conditions' reasons) is written as soon as it changes. A class of up to 10
nodes is always written exactly.

Why tenths: each count can cross at most LEVELS marks in a rollout, whatever the fleet's size, so
that is the ceiling; below it, how many crossings a reconcile sees apart depends on how fast pods
move between reconciles. With twentieths a 5,000-node fleet came close to the ceiling and a
1,000-node one did not (16.2 against 10.5 writes per step, docs/benchmarks.md); tenths lower the
ceiling so both reach it.

Pure: `worth_writing` compares the status as it is, the status computed now, and the status the
previous reconcile of the same model computed (None when unknown).
"""

from __future__ import annotations

import math
import re
from typing import Any

LEVELS = 10  # progress counts are written when they cross one of these fractions of their total
SETTLE_SECONDS = 10.0  # a skipped write is looked at again after this, to write the counts once they rest

# Counts that follow pods as they become ready; each is scaled by a total in the same object.
_PROGRESS_KEYS = frozenset({"readyPods", "updatedPods", "desiredPods", "readyNodes", "tried"})
_TOTAL_KEYS = ("matchedNodes", "nodes")
_NUMBER = re.compile(r"\d+")


def worth_writing(current: dict[str, Any], new: dict[str, Any], previous: dict[str, Any] | None) -> bool:
    """True when `new` should be written over `current`.

    `previous` is what the last reconcile of this model computed: equal to `new`, the pods rest,
    and the exact counts are written."""
    if new == current:
        return False
    if new == previous:
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
