"""What the `registry` fixture yields (a module of its own so tests can import the type)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Registry:
    address: str  # host:port
    storage: Path  # the filesystem driver's root, for tests that tamper with blobs

    def blob_path(self, hexdigest: str) -> Path:
        return self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
