"""Fixtures shared by the node-runtime tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cache_support import AgentProcess, SourceServer


@pytest.fixture
def source() -> Iterator[SourceServer]:
    """A local HTTP server playing the artifact source (the uplink); tests can cut it or stop it."""
    server = SourceServer().start()
    yield server
    server.stop()


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """Factory: agents(*flags, cache=dir, allow_loopback=True) starts a real agent process;
    all are stopped after the test."""
    started: list[AgentProcess] = []

    def start(*flags: str, cache: Path | None = None, allow_loopback: bool = True) -> AgentProcess:
        agent = AgentProcess(cache or tmp_path / "cache", *flags, allow_loopback=allow_loopback).start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()
