"""Find (building on first use) the control-plane, kwok and helm binaries."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok", "helm",
              "kubelet", "kube-proxy", "coredns")


def repo_root() -> Path:
    # operator/edgewise/devcluster/tools.py → repository root; the dev cluster only runs from a checkout.
    return Path(__file__).resolve().parents[3]


def ensure_tools() -> Path:
    """Return the directory holding every component binary, building what the cache lacks.

    EDGEWISE_BIN points at a ready directory and skips the build script.
    """
    override = os.environ.get("EDGEWISE_BIN")
    if override:
        bin_dir = Path(override)
    else:
        script = repo_root() / "hack" / "build-tools.sh"
        out = subprocess.run(["bash", str(script)], check=True, stdout=subprocess.PIPE, text=True).stdout
        bin_dir = Path(out.strip().splitlines()[-1])
    missing = [c for c in COMPONENTS if not (bin_dir / c).exists()]
    if missing:
        raise FileNotFoundError(f"{bin_dir} lacks {', '.join(missing)}; run hack/build-tools.sh")
    return bin_dir


def kwok_stage_files(bin_dir: Path) -> list[Path]:
    """kwok v0.8's Stage objects for nodes and pods, shipped in its module and copied next to bin/.

    Not pod-complete: it marks a Job's pods Succeeded without running them; the pod runner
    runs them and reports their phase instead (devcluster/podrunner.py).
    """
    stages = bin_dir.parent / "kwok-stages"
    return [
        stages / "node/fast/node-initialize.yaml",
        stages / "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
        stages / "pod/fast/pod-ready.yaml",
        stages / "pod/fast/pod-delete.yaml",
    ]
