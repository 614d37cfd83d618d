"""Fixtures of the cluster tests: the real operator, as its own least-privileged ServiceAccount."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_support import Operator, running_operator, running_operators

from analysis.analysis_models_support import good, slow, write_golden, wrong
from edgewise.devcluster import processes
from edgewise.devcluster.cluster import DevCluster


@pytest.fixture(scope="module")
def operator(cluster: DevCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    with running_operator(cluster, Path(tmp_path_factory.mktemp("operator"))) as op:
        yield op


@pytest.fixture(scope="module")
def store_operator(cluster: DevCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The operator with its built-in artifact store (per-class optimization on), on loopback."""
    work = Path(tmp_path_factory.mktemp("opt-operator"))
    port = processes.free_port()
    args = ["--artifact-dir", str(work / "artifacts"), "--artifact-listen", f"127.0.0.1:{port}",
            "--artifact-url", f"http://127.0.0.1:{port}", "--optimize-retry-seconds", "3"]
    with running_operator(cluster, work, args) as op:
        yield op


OPERATOR_LOG_LINES = 200


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """A failing cluster test's report ends with the tail of each operator's log: the operator runs as a
    subprocess whose log is otherwise lost with the temporary directory, and a flake under load can only
    be diagnosed from what CI printed."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.failed or report.when == "teardown":
        return
    for op in operators_of(item):
        earlier = f"; earlier runs' logs beside it ({op.starts} in all)" if op.starts > 1 else ""
        report.sections.append((f"operator log {op.log_path}, last {OPERATOR_LOG_LINES} lines{earlier}",
                                op.log_tail(OPERATOR_LOG_LINES) or "(empty)"))


def operators_of(item: pytest.Item) -> list[Operator]:
    """The operators the test used: its fixtures' (directly or through another fixture) and any running."""
    funcargs = getattr(item, "funcargs", {}) or {}
    found = [v for v in funcargs.values() if isinstance(v, Operator)]
    found += [op for op in running_operators() if op not in found]
    return found


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The rollout scenario's model versions (good, slow, wrong) and golden inputs, once per module."""
    root = tmp_path_factory.mktemp("models")
    out = {"good": good(root / "good"), "slow": slow(root / "slow"), "wrong": wrong(root / "wrong")}
    out["golden"] = write_golden(root / "golden.npz", model_dir=out["good"])
    return out
