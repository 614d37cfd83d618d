"""Status writes: the merge patch between what is stored and what should be."""

from __future__ import annotations

from edgewise.core.durations import seconds
from edgewise.kube.writes import merge_patch


def test_equal_documents_need_no_patch() -> None:
    doc = {"phase": "Ready", "classes": [{"name": "a"}], "nested": {"x": 1}}
    assert merge_patch(doc, dict(doc)) == {}


def test_removed_keys_become_null_and_lists_are_replaced_whole() -> None:
    old = {
        "phase": "Progressing",
        "canaryVersion": "2",
        "conditions": [{"type": "A"}, {"type": "B"}],
        "nested": {"keep": 1, "drop": 2},
    }
    new = {"phase": "Ready", "conditions": [{"type": "A"}], "nested": {"keep": 1}}
    assert merge_patch(old, new) == {
        "phase": "Ready",
        "canaryVersion": None,
        "conditions": [{"type": "A"}],
        "nested": {"drop": None},
    }


def test_go_durations() -> None:
    assert seconds("10m") == 600 and seconds("1h30m") == 5400 and seconds("250ms") == 0.25
    for bad in ("", "10", "m", "1d", "10m5"):
        try:
            seconds(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")
