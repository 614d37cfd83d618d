"""Start and stop the control-plane processes, tracked by pid.

Each component runs in its own session (process group) with its output in a
log file. We record the pid *and* the process start time: a pid the kernel has
reused for something else is never signalled.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Running:
    name: str
    pid: int
    start_ticks: int  # field 22 of /proc/<pid>/stat: identifies this incarnation of the pid
    log: str


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct ports the kernel picked as free on `host`, held together while picked."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            socks.append(s)
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def command_lines() -> Iterator[tuple[int, list[bytes]]]:
    """(pid, argv) of every process on the machine that can still be read."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            yield int(proc.name), (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after its closing paren are fixed.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":  # zombie: already exited
        return None
    return int(fields[19])


def start(name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None) -> Running:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, **(env or {})})
    ticks = _start_ticks(proc.pid) or 0
    return Running(name=name, pid=proc.pid, start_ticks=ticks, log=str(log_path))


def alive(proc: Running) -> bool:
    return _start_ticks(proc.pid) == proc.start_ticks


def stop(proc: Running, grace: float = 10.0) -> None:
    """SIGTERM the component's process group, then SIGKILL what is left after `grace` seconds."""
    if not alive(proc):
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(proc.pid)
            if not alive(proc):
                return
            time.sleep(0.1)


def terminate(proc: subprocess.Popen[bytes], grace: float = 30.0) -> int:
    """SIGTERM a child started with Popen, SIGKILL it if it outlives `grace` seconds; its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(30)


def _reap(pid: int) -> None:
    # When we started the process ourselves it is our child: collect it so it doesn't linger as a zombie.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def log_tail(proc: Running, lines: int = 30) -> str:
    try:
        return "\n".join(Path(proc.log).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
