"""Test-only tools built from Go (Argo CD, Jaeger) by their hack/build-*.sh, cached outside the clone."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def built_binary(name: str) -> Path:
    """$EDGEWISE_BIN/<name> when present, else built (or reused) by hack/build-<name>.sh (its last output line)."""
    override = os.environ.get("EDGEWISE_BIN")
    if override and (Path(override) / name).exists():
        return Path(override) / name
    out = subprocess.run(["bash", str(REPO / "hack" / f"build-{name}.sh")], check=True, stdout=subprocess.PIPE,
                         text=True).stdout
    return Path(out.strip().splitlines()[-1])
