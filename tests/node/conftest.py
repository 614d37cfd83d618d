"""Fixtures shared by the node-runtime tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cache_support import SourceServer


@pytest.fixture
def source() -> Iterator[SourceServer]:
    """A local HTTP server playing the artifact source (the uplink); tests can cut it or stop it."""
    server = SourceServer().start()
    yield server
    server.stop()
