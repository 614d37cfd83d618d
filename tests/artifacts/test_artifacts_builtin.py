"""The built-in store: content-addressed files on a volume, served read-only over real HTTP."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise import contract
from edgewise.artifacts.builtin import BuiltinStore
from edgewise.artifacts.builtin_http import BackgroundServer
from edgewise.artifacts.store import ArtifactNotFound
from edgewise.shared import download
from edgewise.shared.digest import DigestMismatch


@pytest.fixture
def artifact(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx-bytes " * 50_000)  # ~550 KB: several chunks, worth a Range request
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[BuiltinStore, BackgroundServer]]:
    store = BuiltinStore(tmp_path / "store")
    with BackgroundServer(store) as server:
        store.base_url = server.url
        yield store, server


class Sink:
    """What the node's downloader writes into (the node cache's Writer has the same three methods)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def reset(self) -> None:
        self.data.clear()

    def tell(self) -> int:
        return len(self.data)


def test_put_is_content_addressed_and_idempotent(tmp_path: Path, artifact: tuple[Path, str]) -> None:
    path, digest = artifact
    store = BuiltinStore(tmp_path / "store", base_url="http://operator:8080")
    ref = store.put(path, {"precision": "int8", "source.sha256": "a" * 64})
    assert ref.digest == digest and ref.size == path.stat().st_size
    assert ref.uri == f"http://operator:8080/artifacts/sha256/{digest}"
    assert (tmp_path / "store/sha256" / digest).read_bytes() == path.read_bytes()
    again = store.put(path, {"precision": "int8", "report": "Optimized: int8"})
    assert again == ref
    assert store.annotations(f"sha256:{digest}") == {"precision": "int8", "report": "Optimized: int8"}
    assert list((tmp_path / "store/tmp").iterdir()) == []  # nothing half-written left behind


def test_get_verifies_and_missing_is_not_found(tmp_path: Path, artifact: tuple[Path, str]) -> None:
    path, digest = artifact
    store = BuiltinStore(tmp_path / "store")
    store.put(path, {})
    store.get(digest, tmp_path / "out/copy.onnx")
    assert (tmp_path / "out/copy.onnx").read_bytes() == path.read_bytes()
    assert store.has(digest) and not store.has("0" * 64)
    with pytest.raises(ArtifactNotFound):
        store.get("0" * 64, tmp_path / "nope")
    (tmp_path / "store/sha256" / digest).write_bytes(b"bit rot")
    with pytest.raises(DigestMismatch):
        store.get(digest, tmp_path / "out/rotten.onnx")
    assert not (tmp_path / "out/rotten.onnx").exists()


def test_digests_are_validated(tmp_path: Path) -> None:
    store = BuiltinStore(tmp_path / "store", "http://store")
    assert store.path_of("SHA256:" + "A" * 64) == tmp_path / "store" / "sha256" / ("a" * 64)
    for bad in ("", "abc", "sha512:" + "a" * 64, "../" + "a" * 61):
        with pytest.raises(ValueError, match="not a sha256 digest"):
            store.path_of(bad)  # nothing outside the store's directory can be named
        with pytest.raises(ValueError, match="not a sha256 digest"):
            store.uri_for(bad)


def test_http_serves_bytes_headers_and_annotations(served: tuple[BuiltinStore, BackgroundServer],
                                                   artifact: tuple[Path, str]) -> None:
    store, server = served
    path, digest = artifact
    ref = store.put(path, {"target": "onnxruntime/int8/-"})
    with urllib.request.urlopen(ref.uri, timeout=10) as resp:
        assert resp.read() == path.read_bytes()
        assert resp.headers[contract.AGENT_SHA256_HEADER] == digest
        assert "immutable" in resp.headers["Cache-Control"]
    with urllib.request.urlopen(ref.uri + ".json", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("application/json")
        assert b'"target": "onnxruntime/int8/-"' in resp.read()
    head = urllib.request.Request(ref.uri, method="HEAD")
    with urllib.request.urlopen(head, timeout=10) as resp:
        assert int(resp.headers["Content-Length"]) == path.stat().st_size


def test_http_range_requests_resume(served: tuple[BuiltinStore, BackgroundServer],
                                    artifact: tuple[Path, str]) -> None:
    store, _ = served
    path, _digest = artifact
    ref = store.put(path, {})
    req = urllib.request.Request(ref.uri, headers={"Range": "bytes=100000-"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 206
        assert resp.read() == path.read_bytes()[100000:]


@pytest.mark.parametrize("suffix", ["0" * 64, "not-a-digest", "..%2F..%2Fetc%2Fpasswd", "0" * 64 + ".json"])
def test_http_unknown_or_invalid_is_404(served: tuple[BuiltinStore, BackgroundServer], suffix: str) -> None:
    _, server = served
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{server.url}/artifacts/sha256/{suffix}", timeout=10)
    assert err.value.code == 404


def test_http_is_read_only(served: tuple[BuiltinStore, BackgroundServer], artifact: tuple[Path, str]) -> None:
    store, _ = served
    ref = store.put(artifact[0], {})
    for method in ("PUT", "POST", "DELETE"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(urllib.request.Request(ref.uri, data=b"x", method=method), timeout=10)
        assert err.value.code == 405
    assert store.has(ref.digest)


def test_node_downloader_fetches_from_the_store(served: tuple[BuiltinStore, BackgroundServer],
                                                artifact: tuple[Path, str]) -> None:
    store, _ = served
    path, digest = artifact
    ref = store.put(path, {})
    sink = Sink()
    download.download(ref.uri, sink, attempts=2)
    assert hashlib.sha256(sink.data).hexdigest() == digest
    # A cut transfer resumes from where it stopped (the server honours Range).
    partial = Sink()
    partial.write(path.read_bytes()[:12345])
    download.copy_once(ref.uri, partial)
    assert hashlib.sha256(partial.data).hexdigest() == digest
