"""Helpers of the rollout tests: model files by digest (traffic and readiness live in edgewise.devcluster)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
