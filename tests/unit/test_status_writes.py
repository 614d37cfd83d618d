"""core/status_writes.py: progress counts of a large class are written in tenths and exactly once they
rest; everything else as soon as it changes; a small class always exactly."""

from __future__ import annotations

from typing import Any

from edgewise.core.status_writes import LEVELS, worth_writing


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
    assert not worth_writing(status(10), status(10), None)
    assert not worth_writing(status(10), status(10), status(10))


def test_counts_moving_within_a_tenth_of_a_large_class_wait() -> None:
    quantum = 1000 // LEVELS
    assert not worth_writing(status(0), status(quantum - 1), status(quantum - 2))
    assert not worth_writing(status(quantum), status(2 * quantum - 1), None)


def test_counts_crossing_a_tenth_are_written() -> None:
    assert worth_writing(status(1000 // LEVELS - 1), status(1000 // LEVELS), status(1000 // LEVELS - 1))


def test_the_last_pod_of_a_class_is_written_and_so_is_the_first_one_to_leave_it() -> None:
    assert worth_writing(status(999), status(1000), status(999))
    assert worth_writing(status(1000), status(999), status(1000))


def test_counts_that_rest_are_written_exactly() -> None:
    # The previous reconcile computed the same status: the pods stopped moving, so the exact counts go out.
    assert worth_writing(status(0), status(7), status(7))


def test_a_change_beyond_the_counts_is_written_at_once() -> None:
    assert worth_writing(status(3), status(4, state="Paused"), status(3))
    assert worth_writing(status(3), status(4, failed=1), status(3))
    assert worth_writing(status(3), status(4, message="the canary was rolled back: 4/1000 ready"), status(3))


def test_a_class_of_up_to_ten_nodes_is_written_exactly() -> None:
    assert worth_writing(status(3, matched=LEVELS), status(4, matched=LEVELS), status(3, matched=LEVELS))
    assert not worth_writing(status(4, matched=LEVELS + 1), status(5, matched=LEVELS + 1),
                             status(4, matched=LEVELS + 1))  # a quantum of 2


def test_writes_for_a_class_moving_one_pod_at_a_time_do_not_grow_with_its_size() -> None:
    def writes(n: int) -> int:
        current, previous, count = status(0, n), None, 0
        for ready in range(1, n + 1):
            new = status(ready, n)
            if worth_writing(current, new, previous):
                current, count = new, count + 1
            previous = new
        return count

    assert writes(300) == writes(5000) == LEVELS
