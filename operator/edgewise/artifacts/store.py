"""The artifact store interface: content-addressed files with annotations and attestations, six methods.

Artifacts are named by the sha256 of their bytes (64 hex digits; a `sha256:` prefix is
accepted everywhere). `uri_for` gives the URI a node fetches it from; the node verifies the
bytes against the same digest, so a store can be untrusted for integrity.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edgewise.shared.digest import file_sha256


class ArtifactNotFound(KeyError):
    """No artifact with that digest in the store."""


@dataclass(frozen=True)
class ArtifactRef:
    digest: str  # hex sha256 of the file
    size: int
    uri: str  # where nodes fetch it: http(s)://…/artifacts/sha256/<hex> or oci://host/repo@sha256:<hex>


class ArtifactStore(Protocol):
    """Artifacts, and beside each its attestation (a DSSE envelope, contract.attestation_uri says where)."""

    def put(self, path: Path, annotations: dict[str, str]) -> ArtifactRef:
        """Store the file (idempotent: the same bytes give the same ref) with its annotations."""
        ...

    def get(self, digest: str, dest: Path) -> None:
        """Write the artifact to `dest` (atomically, verified); ArtifactNotFound if absent."""
        ...

    def has(self, digest: str) -> bool: ...

    def uri_for(self, digest: str) -> str: ...

    def put_attestation(self, digest: str, envelope: bytes) -> str:
        """Store the attestation of the stored artifact `digest` (replacing one there); its URI."""
        ...

    def get_attestation(self, digest: str) -> bytes:
        """The attestation of `digest`; ArtifactNotFound if it has none."""
        ...


def sha256_file(path: Path) -> tuple[str, int]:
    """(hex sha256, size in bytes) of the file."""
    return file_sha256(path), path.stat().st_size
