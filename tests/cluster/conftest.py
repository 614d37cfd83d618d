"""Fixtures of the cluster tests: the real operator, as its own least-privileged ServiceAccount."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_support import Operator, running_operator

from edgewise.devcluster.cluster import DevCluster


@pytest.fixture(scope="module")
def operator(cluster: DevCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    with running_operator(cluster, Path(tmp_path_factory.mktemp("operator"))) as op:
        yield op
