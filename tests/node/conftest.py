"""Fixtures shared by the node-runtime tests."""

from __future__ import annotations

import sys
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


FAKE_TRTEXEC = """#!{python}
# Stand-in for NVIDIA's trtexec: logs each build, writes a plan that differs per build
# (real engine builds are not byte-reproducible either), prints trtexec's banner.
import hashlib, os, sys
args = sys.argv[1:]
print("&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # trtexec " + " ".join(args))
if "--help" in args:
    sys.exit(0)
with open({log!r}, "a") as log:
    log.write(" ".join(args) + "\\n")
if os.environ.get("FAKE_TRTEXEC_FAIL"):
    print("[E] [TRT] ModelImporter.cpp: failed to parse onnx file", file=sys.stderr)
    sys.exit(1)
value = lambda flag: next(a.split("=", 1)[1] for a in args if a.startswith(flag + "="))
onnx = open(value("--onnx"), "rb").read()
with open(value("--saveEngine"), "wb") as plan:
    plan.write(b"FAKE-PLAN" + hashlib.sha256(onnx).digest() + os.urandom(16))
print("&&&& PASSED TensorRT.trtexec")
"""


@pytest.fixture
def fake_trtexec(tmp_path: Path) -> tuple[Path, Path]:
    """(executable, log of builds)."""
    log = tmp_path / "trtexec-builds.log"
    exe = tmp_path / "trtexec"
    exe.write_text(FAKE_TRTEXEC.format(python=sys.executable, log=str(log)))
    exe.chmod(0o755)
    return exe, log
