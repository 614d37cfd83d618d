"""Fixtures of the cluster tests: the real operator, as its own least-privileged ServiceAccount."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_support import Operator, running_operator

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
