"""core/status_writes.py: progress counts of a large class are written in tenths and exactly once they
have rested SETTLE_SECONDS; everything else as soon as it changes; a small class always exactly."""

from __future__ import annotations

from typing import Any

from edgewise.core.status_writes import LEVELS, SETTLE_SECONDS, worth_writing


def status(ready: int, matched: int = 1000, *, state: str = "Progressing", message: str | None = None,
           failed: int = 0) -> dict[str, Any]:
    return {
        "phase": "Progressing", "ready": f"{ready}/{matched}", "readyNodes": ready, "matchedNodes": matched,
        "classes": [{"name": "arm", "matchedNodes": matched, "desiredPods": matched, "readyPods": ready,
                     "updatedPods": ready}],
        "conditions": [{"type": "Ready", "status": "False", "reason": "PodsNotReady",
                        "message": message or f"{ready}/{matched} nodes ready"}],
        "rollout": {"classes": [{"name": "arm", "state": state, "message": f"step 1: {ready} canary pods ready",
                                 "sites": [{"site": "a", "nodes": matched, "readyNodes": ready}],
                                 "tally": {"version": "2", "tried": ready, "failedPods": failed}}]},
    }


def test_an_unchanged_status_is_never_written() -> None:
    assert not worth_writing(status(10), status(10), 0)
    assert not worth_writing(status(10), status(10), SETTLE_SECONDS)


def test_counts_moving_within_a_tenth_of_a_large_class_wait() -> None:
    quantum = 1000 // LEVELS
    assert not worth_writing(status(0), status(quantum - 1), 0)
    assert not worth_writing(status(quantum), status(2 * quantum - 1), SETTLE_SECONDS - 0.1)


def test_counts_crossing_a_tenth_are_written() -> None:
    assert worth_writing(status(1000 // LEVELS - 1), status(1000 // LEVELS), 0)


def test_the_last_pod_of_a_class_is_written_and_so_is_the_first_one_to_leave_it() -> None:
    assert worth_writing(status(999), status(1000), 0)
    assert worth_writing(status(1000), status(999), 0)


def test_counts_that_rest_are_written_exactly() -> None:
    # Reconciles have computed the same status for SETTLE_SECONDS: the pods stopped moving, the exact counts go out.
    assert worth_writing(status(0), status(7), SETTLE_SECONDS)
    # Two reconciles that agree within a moment are not a rest: a large fleet's DaemonSets report often.
    assert not worth_writing(status(0), status(7), 0.5)


def test_a_change_beyond_the_counts_is_written_at_once() -> None:
    assert worth_writing(status(3), status(4, state="Paused"), 0)
    assert worth_writing(status(3), status(4, failed=1), 0)
    assert worth_writing(status(3), status(4, message="the canary was rolled back: 4/1000 ready"), 0)


def test_a_class_of_up_to_ten_nodes_is_written_exactly() -> None:
    assert worth_writing(status(3, matched=LEVELS), status(4, matched=LEVELS), 0)
    assert not worth_writing(status(4, matched=LEVELS + 1), status(5, matched=LEVELS + 1), 0)  # a quantum of 2


def test_writes_for_a_class_moving_one_pod_at_a_time_do_not_grow_with_its_size() -> None:
    def writes(n: int, reports_per_pod: int = 1) -> int:
        """Reconciles a moment apart, each pod reported `reports_per_pod` times (the same status again)."""
        current, count = status(0, n), 0
        for ready in range(1, n + 1):
            for _ in range(reports_per_pod):
                if worth_writing(current, status(ready, n), 0):
                    current, count = status(ready, n), count + 1
        return count

    assert writes(300) == writes(5000) == writes(5000, reports_per_pod=3) == LEVELS
