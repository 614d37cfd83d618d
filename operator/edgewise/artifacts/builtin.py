"""The built-in store: files on the operator's volume, keyed by sha256 (served by builtin_http.py).

Layout under the root (one volume, so renames are atomic):
    sha256/<hex>        the artifact
    sha256/<hex>.json   its annotations (source digest, target, precision, report summary)
    sha256/<hex>.intoto.json  its attestation (a DSSE envelope), served beside it
    tmp/                writes in progress; renamed into sha256/ only once complete and verified
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from edgewise import contract
from edgewise.artifacts.store import ArtifactNotFound, ArtifactRef, sha256_file
from edgewise.shared.digest import DigestMismatch, normalize_digest

ARTIFACT_PATH = "/artifacts/sha256/{hex}"


class BuiltinStore:
    """Content-addressed files under `root`; `base_url` is where the HTTP server is reachable by nodes."""

    def __init__(self, root: str | Path, base_url: str = "") -> None:
        self.root = Path(root)
        self.base_url = base_url.rstrip("/")
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)

    def path_of(self, digest: str) -> Path:
        return self.root / "sha256" / normalize_digest(digest)

    def put(self, path: Path, annotations: dict[str, str]) -> ArtifactRef:
        fd, tmp_name = tempfile.mkstemp(dir=self.root / "tmp", prefix="put-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            digest, size = sha256_file(tmp)  # hash what landed on the volume, not what we meant to write
            final = self.path_of(digest)
            if final.exists():
                tmp.unlink()
            else:
                os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        self._write_annotations(digest, annotations)
        return ArtifactRef(digest=digest, size=size, uri=self.uri_for(digest))

    def _write_annotations(self, digest: str, annotations: dict[str, str]) -> None:
        target = self.path_of(digest).with_suffix(".json")
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp", prefix="ann-")
        with os.fdopen(fd, "w") as f:
            json.dump({k: str(v) for k, v in annotations.items()}, f, indent=2, sort_keys=True)
        os.replace(tmp, target)

    def annotations(self, digest: str) -> dict[str, str]:
        try:
            return json.loads(self.path_of(digest).with_suffix(".json").read_text())
        except FileNotFoundError as err:
            raise ArtifactNotFound(digest) from err

    def get(self, digest: str, dest: Path) -> None:
        want = normalize_digest(digest)
        src = self.path_of(want)
        if not src.exists():
            raise ArtifactNotFound(want)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        shutil.copyfile(src, tmp)
        got, _ = sha256_file(tmp)
        if got != want:  # bit rot on the volume: refuse rather than serve a wrong model
            tmp.unlink()
            raise DigestMismatch(want, got)
        os.replace(tmp, dest)

    def _attestation_path(self, digest: str) -> Path:
        hexdigest = normalize_digest(digest)
        return self.root / "sha256" / f"{hexdigest}{contract.ATTESTATION_SUFFIX}"

    def put_attestation(self, digest: str, envelope: bytes) -> str:
        if not self.has(digest):
            raise ArtifactNotFound(normalize_digest(digest))
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp", prefix="att-")
        with os.fdopen(fd, "wb") as f:
            f.write(envelope)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._attestation_path(digest))
        return contract.attestation_uri(self.uri_for(digest))

    def get_attestation(self, digest: str) -> bytes:
        try:
            return self._attestation_path(digest).read_bytes()
        except FileNotFoundError as err:
            raise ArtifactNotFound(normalize_digest(digest)) from err

    def has(self, digest: str) -> bool:
        return self.path_of(digest).exists()

    def uri_for(self, digest: str) -> str:
        return self.base_url + ARTIFACT_PATH.format(hex=normalize_digest(digest))
