"""spec.rollout.analysis.goldenInputs → a local, digest-verified file (fetched once per digest).

The URI comes from a namespace user's spec: a `file://` one is read only under the operator's
`local_source_dirs` (local_files.py), and what a failure reports to the user names the kind of
failure, never what a server or the disk said (`why_not`).
"""

from __future__ import annotations

import hashlib
import urllib.error
from pathlib import Path

from edgewise.analysis import local_files
from edgewise.analysis.local_files import LocalFileRefused
from edgewise.analysis.provider import GoldenFile
from edgewise.api.model import GoldenInputs
from edgewise.shared.digest import DigestMismatch
from edgewise.shared.download import download_file


def fetch_golden(spec: GoldenInputs, into: Path, local_source_dirs: tuple[str, ...]) -> GoldenFile:
    """The golden inputs as a local file, downloaded into `into` unless already there."""
    digest = spec.sha256 or ""
    path = into / f"{digest or hashlib.sha256(spec.uri.encode()).hexdigest()}.npz"
    local_files.check(spec.uri, local_source_dirs)
    if not path.exists():
        download_file(spec.uri, path, digest)
    return GoldenFile(path=str(path), min_cosine=spec.min_cosine)


def why_not(err: Exception) -> str:
    """Why analysis cannot start, in words that repeat nothing a server or the disk said."""
    if isinstance(err, LocalFileRefused):
        return str(err)  # fixed words
    if isinstance(err, DigestMismatch):
        return "analysis: the goldenInputs file does not match its sha256"
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, urllib.error.HTTPError):
            return f"analysis: the goldenInputs file could not be fetched: HTTP {cause.code}"
        cause = cause.__cause__
    return "analysis: the goldenInputs file could not be fetched"
