"""The test tree itself: pytest imports test modules by their file name (no packages, `prepend` mode), so
two test files of one name in different folders stop the whole run at collection."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_and_support_module_has_a_name_of_its_own() -> None:
    names = Counter(p.name for p in TESTS.rglob("*.py") if p.name.startswith("test_") or p.name.endswith("_support.py"))
    assert not [n for n, count in names.items() if count > 1], sorted(n for n, c in names.items() if c > 1)
