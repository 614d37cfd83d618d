"""Content digests: the sha256 that names an artifact everywhere, and a writer that hashes as it writes.

The operator, the optimizer and the node runtime all name a file by the sha256 of its
bytes and refuse bytes that hash to anything else; this is the one place that says how.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20


class DigestMismatch(Exception):
    """The bytes do not hash to the digest they were announced with: never cached, never served."""

    def __init__(self, expected: str, actual: str) -> None:
        # The actual digest is kept for logs but never put into the message: a caller that
        # learns the digest of bytes it cannot see could then have them cached and served.
        super().__init__(f"digest mismatch: expected sha256 {expected}, the bytes received hash to another")
        self.expected = expected
        self.actual = actual


def normalize_digest(value: str) -> str:
    """Accept `<hex>` or `sha256:<hex>` (OCI style); raise ValueError on anything else."""
    digest = value.strip().lower().removeprefix("sha256:")
    if not SHA256_RE.match(digest):
        raise ValueError(f"not a sha256 digest: {value!r} (want 64 hex characters)")
    return digest


class Writer:
    """A temporary file in the cache that hashes what is written to it.

    The downloader writes, may `reset()` when a resumed transfer has to start
    over, and the owner (the node cache's `commit`, `download_file`) decides whether the bytes become a cache entry.
    """

    def __init__(self, path: Path, reserve: Callable[[int], None] | None = None) -> None:
        self.path = path
        self._file = open(path, "wb")  # noqa: SIM115 - closed by commit/abort
        self._hash = hashlib.sha256()
        self._reserve = reserve  # raises CacheFull before bytes beyond the budget are written
        self.size = 0

    def write(self, data: bytes) -> None:
        if self._reserve is not None:
            self._reserve(len(data))
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    def reset(self) -> None:
        if self._reserve is not None:
            self._reserve(-self.size)
        self._file.seek(0)
        self._file.truncate()
        self._hash = hashlib.sha256()
        self.size = 0

    def tell(self) -> int:
        return self.size

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def check_digest(self, expected: str) -> None:
        """Raise DigestMismatch unless the bytes written so far hash to `expected`."""
        if self.hexdigest() != expected:
            raise DigestMismatch(expected, self.hexdigest())

    def finish(self) -> None:
        """Flush and fsync, so the rename that follows publishes durable bytes."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.release()

    def release(self) -> None:
        """Give back the bytes reserved in the budget (they were published or deleted)."""
        if self._reserve is not None and self.size:
            self._reserve(-self.size)
            self._reserve = None


def file_sha256(path: Path, *, follow_symlinks: bool = True) -> str:
    h = hashlib.sha256()
    flags = os.O_RDONLY | (0 if follow_symlinks else os.O_NOFOLLOW)
    with os.fdopen(os.open(path, flags), "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
