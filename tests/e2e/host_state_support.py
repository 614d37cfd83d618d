"""What a real node may leave on this machine: processes, mounts, interfaces, routes, iptables rules.

Read before `cluster up --real-node` and after `cluster down`; the two must be equal.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgewise.devcluster import processes

OUR_PROGRAMS = ("containerd", "containerd-shim-runc-v2", "kubelet", "kube-proxy", "coredns", "pause")


@dataclass(frozen=True)
class HostState:
    processes: frozenset[str]
    mounts: frozenset[str]
    links: frozenset[str]
    routes: frozenset[str]
    iptables: frozenset[str]
    cgroups: frozenset[str]


def _processes(root: Path) -> frozenset[str]:
    """Our programs, and anything whose command line names the cluster directory."""
    out = set()
    for pid, argv in processes.command_lines():
        name = Path(argv[0].decode(errors="replace")).name if argv[0] else ""
        cmdline = b" ".join(argv).decode(errors="replace")
        if name in OUR_PROGRAMS or str(root) in cmdline:
            out.add(f"{pid} {cmdline[:120]}")
    return frozenset(out)


def _lines(argv: list[str]) -> frozenset[str]:
    out = subprocess.run(argv, capture_output=True, text=True).stdout
    return frozenset(line for line in out.splitlines() if line and not line.startswith("#"))


def _iptables() -> frozenset[str]:
    rules = set()
    for table in ("filter", "nat", "mangle", "raw"):
        rules |= {f"{table} {line}" for line in _lines(["iptables-save", "-t", table])
                  if line.startswith(("-A", ":")) and not line.startswith((":INPUT", ":OUTPUT", ":FORWARD",
                                                                          ":PREROUTING", ":POSTROUTING"))}
    return frozenset(rules)


def read(root: Path) -> HostState:
    mounts = frozenset(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())
    cgroups = frozenset(str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods"))
    return HostState(
        processes=_processes(root),
        mounts=mounts,
        links=frozenset(line.split(":")[1].strip().split("@")[0] for line in _lines(["ip", "-o", "link"])),
        routes=_lines(["ip", "route", "show", "table", "all"]),
        iptables=_iptables(),
        cgroups=cgroups,
    )


def left_behind(before: HostState, after: HostState) -> dict[str, list[str]]:
    """What `after` has that `before` had not, by kind; empty when the machine is as it was."""
    out: dict[str, list[str]] = {}
    for kind in ("processes", "mounts", "links", "routes", "iptables", "cgroups"):
        extra = sorted(getattr(after, kind) - getattr(before, kind))
        if extra:
            out[kind] = extra
    return out
