"""The node's content-addressed artifact cache, owned by `edgewise agent`.

Layout under the cache root (a hostPath on the node):

    sha256/<hex>     verified artifacts and TensorRT plans, read-only (0444)
    attestations/<hex>.intoto.json  the attestation an artifact was verified with (when the node
                     verifies attestations), so it is verified again offline before each use
    tmp/<name>.part  downloads and uploads in flight; wiped at start-up
    index.json       which model used which digest, when; which plan key maps to which digest

A file only ever appears under sha256/ by `rename` after its bytes were hashed,
compared with the expected digest and fsync'ed, so a crash or a kill at any
moment leaves at worst a `.part` file, which never counts as cached. The index
is rebuilt from the files when it disagrees with them: the files are the truth.

Ordering of "last used" uses a persisted counter, not the wall clock: edge
devices often boot without a real-time clock and jump in time once NTP answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgewise.shared.digest import SHA256_RE, DigestMismatch, Writer, file_sha256, normalize_digest

# contract.plan_cache_key(): plan-<model sha256>-sm<cc>-trt<version>-<precision>
PLAN_KEY_RE = re.compile(r"^plan-([0-9a-f]{64})-[A-Za-z0-9._-]{1,128}$")


class CacheFull(Exception):
    """Bytes in flight would exceed the cache's budget: the download stops, nothing is kept."""


class PlanExists(Exception):
    """A plan is already cached under this key: plans are written once, never replaced."""


def plan_model_digest(key: str) -> str | None:
    """The model digest a plan key was built from, or None when `key` is not a plan key."""
    match = PLAN_KEY_RE.match(key)
    return match.group(1) if match else None


@dataclass(frozen=True)
class BlobInfo:
    size: int
    seq: int  # last use, as a position in the cache's own history


def select_evictions(
    blobs: Mapping[str, BlobInfo],
    models: Mapping[str, Mapping[str, int]],
    plan_models: Mapping[str, str],
    *,
    max_bytes: int | None,
    keep_per_model: int = 2,
    pinned: Collection[str] = (),
) -> list[str]:
    """Which blobs to delete so the cache fits `max_bytes`, least recently used first.

    `models` maps a model name to {digest: seq of its last use by that model};
    `plan_models` maps a plan's blob digest to the model digest it was built from.
    The `keep_per_model` most recently used digests of every model are never
    evicted, nor the plans built from them, nor anything `pinned` — even if the
    cache then stays over budget: a rollback must not need a download.
    """
    if max_bytes is None:
        return []
    total = sum(info.size for info in blobs.values())
    if total <= max_bytes:
        return []
    protected: set[str] = set(pinned)
    for uses in models.values():
        newest = sorted(uses.items(), key=lambda item: item[1], reverse=True)[:keep_per_model]
        protected.update(digest for digest, _ in newest)
    protected.update(plan for plan, model_digest in plan_models.items() if model_digest in protected)
    candidates = sorted((d for d in blobs if d not in protected), key=lambda d: (blobs[d].seq, d))
    evicted = []
    for digest in candidates:
        if total <= max_bytes:
            break
        evicted.append(digest)
        total -= blobs[digest].size
    return evicted


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` survive a power cut (the directory entry itself)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class NodeCache:
    """The cache directory plus its index; thread-safe, one owning process (the agent)."""

    def __init__(
        self, root: str | Path, *, max_bytes: int | None = None, keep_per_model: int = 2,
        max_models: int = 256,
    ) -> None:
        self.root = Path(root)
        self.blob_dir = self.root / "sha256"
        self.tmp_dir = self.root / "tmp"
        self.attestation_dir = self.root / "attestations"
        self.index_path = self.root / "index.json"
        self.max_bytes = max_bytes
        self.keep_per_model = keep_per_model
        self.max_models = max_models  # model names that pin blobs; the least recently used beyond go
        self._lock = threading.RLock()
        self._in_flight = 0  # bytes in tmp/ right now, held to max_bytes as well
        self._dirty = False  # uses recorded in memory only: reads are not persisted one by one
        self._seq = 0
        self._blobs: dict[str, dict[str, Any]] = {}  # digest -> {size, seq, last_used}
        self._models: dict[str, dict[str, dict[str, Any]]] = {}  # model -> digest -> {seq, last_used}
        self._plans: dict[str, str] = {}  # plan key -> digest
        self._uploaders: dict[str, str] = {}  # plan key -> who uploaded it (pod namespace/name)
        self._verified: set[str] = set()  # hashed by this process: safe to serve
        self._open()

    # ---- start-up -------------------------------------------------------------------------------

    def _open(self) -> None:
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.attestation_dir.mkdir(parents=True, exist_ok=True)
        # Anything in tmp/ was in flight when the previous agent died: it never counted.
        for leftover in self.tmp_dir.iterdir():
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                leftover.unlink()
        self._load_index()
        self._reconcile()

    def _load_index(self) -> None:
        try:
            data = json.loads(self.index_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return  # rebuilt from the files by _reconcile
        self._seq = int(data.get("seq", 0))
        self._blobs = dict(data.get("blobs", {}))
        self._models = {m: dict(d) for m, d in data.get("models", {}).items()}
        self._plans = dict(data.get("plans", {}))
        self._uploaders = dict(data.get("uploaders", {}))

    def _reconcile(self) -> None:
        """Make the index agree with the files: files that exist are entries, others are not."""
        on_disk: dict[str, int] = {}
        for p in self.blob_dir.iterdir():
            try:
                st = p.lstat()  # never follow: a symlink here could point at any host file
            except FileNotFoundError:
                continue
            if SHA256_RE.match(p.name) and stat.S_ISREG(st.st_mode):
                on_disk[p.name] = st.st_size
            else:
                with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                    p.unlink()
        unknown = {"seq": 0, "last_used": 0.0}  # a blob renamed in just before a crash
        self._blobs = {d: {**self._blobs.get(d, unknown), "size": size} for d, size in on_disk.items()}
        for p in self.attestation_dir.iterdir():  # an attestation goes with its artifact
            if p.name.split(".", 1)[0] not in on_disk:
                with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                    p.unlink()
        self._drop_missing_references()
        self._save()

    def _drop_missing_references(self) -> None:
        for model in list(self._models):
            uses = {d: u for d, u in self._models[model].items() if d in self._blobs}
            if uses:
                self._models[model] = uses
            else:
                del self._models[model]
        self._plans = {k: d for k, d in self._plans.items() if d in self._blobs}
        self._uploaders = {k: u for k, u in self._uploaders.items() if k in self._plans}

    def verify(self, digest: str) -> bool:
        """True when the blob is present and its bytes hash to its name; a bad blob is deleted.

        Each blob is hashed once per process before it is served, which catches bit rot
        and anyone writing into the hostPath behind the agent's back (or before it started).
        """
        with self._lock:
            if digest in self._verified:
                return digest in self._blobs
            if digest not in self._blobs:
                return False
        try:
            ok = file_sha256(self.blob_dir / digest, follow_symlinks=False) == digest
        except OSError:  # gone, or a symlink put there behind the agent's back (ELOOP)
            ok = False
        with self._lock:
            if ok:
                self._verified.add(digest)
            elif digest in self._blobs:
                self._remove_blob(digest)
                self._save()
        return ok

    def scrub(self) -> list[str]:
        """Verify every blob not yet verified; return the digests that were bad and deleted."""
        with self._lock:
            pending = [d for d in self._blobs if d not in self._verified]
        return [d for d in pending if not self.verify(d)]

    # ---- reads ----------------------------------------------------------------------------------

    def resolve(self, key: str) -> str | None:
        """The digest of a cached artifact (key = sha256) or plan (key = plan key), or None."""
        with self._lock:
            if PLAN_KEY_RE.match(key):
                digest = self._plans.get(key)
            else:
                digest = normalize_digest(key)
            return digest if digest in self._blobs else None

    def path(self, digest: str) -> Path:
        return self.blob_dir / digest

    def has(self, digest: str) -> bool:
        with self._lock:
            return digest in self._blobs

    def count(self) -> int:
        with self._lock:
            return len(self._blobs)

    def total_bytes(self) -> int:
        with self._lock:
            return sum(int(b["size"]) for b in self._blobs.values())

    def attestation(self, digest: str) -> bytes | None:
        """The attestation kept with the artifact `digest`, or None."""
        try:
            return self._attestation_path(digest).read_bytes()
        except (FileNotFoundError, ValueError):
            return None

    def _attestation_path(self, digest: str) -> Path:
        return self.attestation_dir / f"{normalize_digest(digest)}.intoto.json"

    def put_attestation(self, digest: str, envelope: bytes) -> None:
        """Keep `envelope` with the artifact `digest` (written before the artifact is published: an
        artifact never sits in the cache without the attestation it was verified with)."""
        _atomic_write_bytes(self._attestation_path(digest), envelope)

    def plan_uploader(self, key: str) -> str | None:
        with self._lock:
            return self._uploaders.get(key)

    def entries(self) -> list[dict[str, Any]]:
        """A listing for humans and the operator: every blob, its size, models and plan keys."""
        with self._lock:
            out = []
            for digest, info in sorted(self._blobs.items(), key=lambda kv: -int(kv[1]["seq"])):
                out.append({
                    "sha256": digest,
                    "size": int(info["size"]),
                    "last_used": float(info.get("last_used", 0.0)),
                    "models": sorted(m for m, uses in self._models.items() if digest in uses),
                    "plan_keys": sorted(k for k, d in self._plans.items() if d == digest),
                    "uploaded_by": sorted({u for k, u in self._uploaders.items() if self._plans.get(k) == digest}),
                })
            return out

    # ---- writes ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self) -> Iterator[Writer]:
        """A temp file for one incoming artifact; removed unless `commit` published it."""
        w = Writer(self.tmp_dir / f"{uuid.uuid4().hex}.part", reserve=self._reserve)
        try:
            yield w
        finally:
            w.abort()  # no-op after a successful commit (the file was renamed away)

    def _reserve(self, n: int) -> None:
        with self._lock:
            if n > 0 and self.max_bytes is not None and self._in_flight + n > self.max_bytes:
                raise CacheFull(f"the artifact does not fit the node cache: {self._in_flight + n} bytes in "
                                f"flight against a budget of {self.max_bytes} (raise the agent's "
                                "--max-cache-bytes, the chart value agent.maxCacheSize)")
            self._in_flight += n

    def in_flight_bytes(self) -> int:
        with self._lock:
            return self._in_flight

    def commit(
        self, w: Writer, expected_sha256: str, *, model: str | None = None, plan_key: str | None = None,
        uploader: str | None = None, replacing: str | None = None,
    ) -> str:
        """Publish `w` as the artifact `expected_sha256`, or raise DigestMismatch and drop it.

        A plan key is written once: PlanExists if one is cached under it already — unless it is still the plan
        `replacing` (one the agent found unattested by its key: checked by the caller, swapped only if unchanged)."""
        expected = normalize_digest(expected_sha256)
        if plan_key is not None and not PLAN_KEY_RE.match(plan_key):
            raise ValueError(f"not a plan key: {plan_key!r}")
        w.finish()
        actual = w.hexdigest()
        if actual != expected:
            w.abort()
            raise DigestMismatch(expected, actual)
        os.chmod(w.path, 0o444)
        with self._lock:
            current = self._plans.get(plan_key) if plan_key is not None else None
            if current in self._blobs and (replacing is None or current != replacing):
                w.abort()
                raise PlanExists(f"a plan is already cached under {plan_key}; plans are never replaced")
            os.replace(w.path, self.blob_dir / expected)
            w.release()
            fsync_dir(self.blob_dir)
            self._verified.add(expected)
            self._blobs[expected] = {"size": w.size, "seq": self._next_seq(), "last_used": time.time()}
            if model:
                self._touch_model(model, expected)
            if plan_key is not None:
                self._plans[plan_key] = expected
                if uploader:
                    self._uploaders[plan_key] = uploader
            self._evict_locked(pinned={expected})
            self._save()
        return expected

    def touch(self, digest: str, model: str | None = None) -> None:
        """Record a use of `digest` (by `model`), which keeps it among that model's newest.

        In memory only: a read must not rewrite (and fsync) the index. The next write,
        `flush()` or shutdown persists it; a crash loses some recency, never an artifact."""
        with self._lock:
            if digest not in self._blobs:
                return
            self._blobs[digest].update(seq=self._next_seq(), last_used=time.time())
            if model:
                self._touch_model(model, digest)
            self._dirty = True

    def flush(self) -> bool:
        """Persist uses recorded since the last write; True if the index was written."""
        with self._lock:
            if not self._dirty:
                return False
            self._save()
            return True

    def evict(self) -> list[str]:
        with self._lock:
            evicted = self._evict_locked(pinned=())
            self._save()
            return evicted

    # ---- internals (call with the lock held) ----------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _touch_model(self, model: str, digest: str) -> None:
        self._models.setdefault(model, {})[digest] = {"seq": self._seq, "last_used": time.time()}
        # Every model name pins its newest blobs: bound how many names there are, or made-up
        # names would pin the whole disk. The names used longest ago lose their pins first.
        while len(self._models) > self.max_models:
            oldest = min(self._models, key=lambda m: max(int(u["seq"]) for u in self._models[m].values()))
            del self._models[oldest]

    def _evict_locked(self, pinned: Collection[str]) -> list[str]:
        blobs = {d: BlobInfo(int(i["size"]), int(i["seq"])) for d, i in self._blobs.items()}
        models = {m: {d: int(u["seq"]) for d, u in uses.items()} for m, uses in self._models.items()}
        plan_models = {d: plan_model_digest(k) or "" for k, d in self._plans.items()}
        evicted = select_evictions(
            blobs, models, plan_models, max_bytes=self.max_bytes,
            keep_per_model=self.keep_per_model, pinned=pinned,
        )
        for digest in evicted:
            self._remove_blob(digest)
        return evicted

    def _remove_blob(self, digest: str) -> None:
        # Unlinking is safe while a reader has the file open: it keeps its bytes until it closes.
        with contextlib.suppress(FileNotFoundError):
            (self.blob_dir / digest).unlink()
        with contextlib.suppress(FileNotFoundError):
            self._attestation_path(digest).unlink()
        self._blobs.pop(digest, None)
        self._verified.discard(digest)
        self._drop_missing_references()

    def _save(self) -> None:
        data = {"seq": self._seq, "blobs": self._blobs, "models": self._models, "plans": self._plans,
                "uploaders": self._uploaders}
        _atomic_write_text(self.index_path, json.dumps(data, indent=1, sort_keys=True))
        self._dirty = False
