"""The real node's side of this machine: the bridge's `ip` calls, sysctls, and the teardown that removes
what the kubelet, kube-proxy, containerd and CNI left (processes, mounts, cgroups, iptables chains),
without needing them to run (realnode.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from edgewise.devcluster import processes

KUBE_CHAIN_PREFIXES = ("KUBE-", "CNI-")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def read_sysctl(key: str) -> str | None:
    try:
        return Path("/proc/sys", key).read_text().strip()
    except OSError:
        return None


def write_sysctl(key: str, value: str) -> None:
    with contextlib.suppress(OSError):
        Path("/proc/sys", key).write_text(value)


def kill_pod_processes() -> None:
    """SIGKILL every process in the kubelet's pod cgroups (pause and containers)."""
    for _ in range(20):
        pids = set()
        for procs in Path("/sys/fs/cgroup/pids/kubepods").rglob("cgroup.procs") \
                if Path("/sys/fs/cgroup/pids/kubepods").exists() else []:
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except (OSError, ValueError):
                continue
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def kill_shims(socket: str) -> None:
    for pid, argv in processes.command_lines():
        if argv[0].endswith(b"containerd-shim-runc-v2") and socket.encode() in argv:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def unmount_below(roots: list[Path]) -> None:
    prefixes = [str(r.resolve()) if r.exists() else str(r) for r in roots]
    for _ in range(5):
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        mine = sorted({m for m in mounts if any(m == p or m.startswith(p + "/") for p in prefixes)},
                      key=len, reverse=True)
        if not mine:
            return
        for mount in mine:
            subprocess.run(["umount", "-l", mount], capture_output=True)


def remove_cgroups() -> None:
    for controller in Path("/sys/fs/cgroup").iterdir():
        top = controller / "kubepods"
        if not top.is_dir():
            continue
        for cg in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                cg.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def proxy_cleanup(root: Path) -> None:
    """kube-proxy's own cleanup of its rules (iptables, nftables, ipvs), if the binary is at hand."""
    state = root.parent / "state.json"
    try:
        bin_dir = Path(json.loads(state.read_text())["bin_dir"])
    except (OSError, ValueError, KeyError):
        bin_dir = Path.home() / ".cache" / "edgewise" / "bin"
    if (bin_dir / "kube-proxy").exists():
        subprocess.run([str(bin_dir / "kube-proxy"), "--cleanup"], capture_output=True, timeout=60)


def drop_kube_chains() -> None:
    """Remove what kube-proxy's cleanup leaves (the kubelet's and CNI's chains) from every table."""
    for table in ("filter", "nat", "mangle"):
        dump = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True).stdout
        chains = [line[1:].split()[0] for line in dump.splitlines()
                  if line.startswith(":") and line[1:].startswith(KUBE_CHAIN_PREFIXES)]
        for line in dump.splitlines():  # rules in built-in chains that jump to ours
            if line.startswith("-A ") and any(f"-j {c}" in line for c in chains) \
                    and not line.split()[1].startswith(KUBE_CHAIN_PREFIXES):
                subprocess.run(["iptables", "-t", table, "-D", *shlex.split(line)[1:]], capture_output=True)
        for chain in chains:
            subprocess.run(["iptables", "-t", table, "-F", chain], capture_output=True)
        for chain in chains:
            subprocess.run(["iptables", "-t", table, "-X", chain], capture_output=True)

