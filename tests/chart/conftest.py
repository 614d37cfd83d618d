"""The real `helm` (built by hack/build-tools.sh into ~/.cache/edgewise) rendering the chart."""

from __future__ import annotations

import pytest
from chart_support import Helm

from edgewise.devcluster.tools import ensure_tools


@pytest.fixture(scope="session")
def helm() -> Helm:
    return Helm(ensure_tools() / "helm")
