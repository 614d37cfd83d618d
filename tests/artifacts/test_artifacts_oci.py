"""The OCI store and the node's oci:// pull, against a real registry server on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from registry_support import Registry

from edgewise import contract
from edgewise.artifacts.oci import OciStore, tag_for
from edgewise.artifacts.store import ArtifactNotFound
from edgewise.shared import oci
from edgewise.shared.digest import DigestMismatch


def make_file(tmp_path: Path, content: bytes) -> tuple[Path, str]:
    path = tmp_path / f"artifact-{hashlib.sha256(content).hexdigest()[:8]}.onnx"
    path.write_bytes(content)
    return path, hashlib.sha256(content).hexdigest()


def manifest(registry: Registry, repo: str, reference: str) -> tuple[dict, str]:
    req = urllib.request.Request(f"http://{registry.address}/v2/{repo}/manifests/{reference}",
                                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read()), resp.headers["Docker-Content-Digest"]


def test_push_names_the_layer_digest_with_annotations(registry: Registry, tmp_path: Path) -> None:
    store = OciStore(registry.address, "edgewise/models")
    path, digest = make_file(tmp_path, b"\x08\x07model" * 1000)
    assert not store.has(digest)
    ref = store.put(path, {"source.sha256": "b" * 64, "target": "onnxruntime/int8/arm64", "precision": "int8",
                           "report": "Optimized: int8 dynamic, size 0.25x"})
    assert ref.uri == f"oci://{registry.address}/edgewise/models@sha256:{digest}"
    assert ref.digest == digest and ref.size == path.stat().st_size and store.has(digest)
    body, _ = manifest(registry, "edgewise/models", tag_for(digest))
    [layer] = body["layers"]
    assert layer["digest"] == f"sha256:{digest}" and layer["mediaType"] == contract.OCI_MODEL_MEDIA_TYPE
    assert body["annotations"]["io.edgewise.precision"] == "int8"
    assert store.annotations(digest) == {"source.sha256": "b" * 64, "target": "onnxruntime/int8/arm64",
                                         "precision": "int8", "report": "Optimized: int8 dynamic, size 0.25x",
                                         "sha256": digest}
    # Idempotent: the same bytes again give the same reference.
    assert store.put(path, {"precision": "int8"}).uri == ref.uri


def test_node_pulls_by_layer_digest_tag_and_manifest_digest(registry: Registry, tmp_path: Path) -> None:
    store = OciStore(registry.address, "edgewise/pull")
    path, digest = make_file(tmp_path, b"weights" * 200_000)
    ref = store.put(path, {})
    _, manifest_digest = manifest(registry, "edgewise/pull", tag_for(digest))
    uris = [ref.uri, store.manifest_uri_for(digest), f"oci://{registry.address}/edgewise/pull@{manifest_digest}"]
    for i, uri in enumerate(uris):
        dest = tmp_path / f"pulled-{i}/model.onnx"
        oci.pull(uri, dest, expected_sha256=digest)
        assert dest.read_bytes() == path.read_bytes(), uri
    store.get(digest, tmp_path / "via-store.onnx")
    assert (tmp_path / "via-store.onnx").read_bytes() == path.read_bytes()


def test_pull_refuses_a_blob_that_does_not_hash_to_its_digest(registry: Registry, tmp_path: Path) -> None:
    store = OciStore(registry.address, "edgewise/tamper")
    path, digest = make_file(tmp_path, b"original bytes" * 100)
    ref = store.put(path, {})
    registry.blob_path(digest).write_bytes(b"tampered bytes" * 100)  # same length, other content
    dest = tmp_path / "tampered.onnx"
    with pytest.raises(DigestMismatch) as mismatch:
        oci.pull(ref.uri, dest)
    assert mismatch.value.expected == digest and mismatch.value.actual != digest
    assert not dest.exists() and not list(tmp_path.glob(".tampered.onnx.*"))


def test_pull_checks_the_expected_digest_and_missing_artifacts(registry: Registry, tmp_path: Path) -> None:
    store = OciStore(registry.address, "edgewise/missing")
    path, digest = make_file(tmp_path, b"abc" * 10)
    ref = store.put(path, {})
    with pytest.raises(DigestMismatch) as mismatch:
        oci.pull(ref.uri, tmp_path / "x.onnx", expected_sha256="c" * 64)
    assert (mismatch.value.expected, mismatch.value.actual) == ("c" * 64, digest)
    with pytest.raises(oci.OciError, match="no such artifact"):
        oci.pull(f"oci://{registry.address}/edgewise/missing@sha256:{'d' * 64}", tmp_path / "y.onnx")
    with pytest.raises(ArtifactNotFound):
        store.get("d" * 64, tmp_path / "z.onnx")
    with pytest.raises(ArtifactNotFound):
        store.annotations("d" * 64)


def test_unreachable_registry_is_an_oci_error(tmp_path: Path) -> None:
    with pytest.raises(oci.OciError):
        oci.pull(f"oci://127.0.0.1:9/edgewise/x@sha256:{'a' * 64}", tmp_path / "x.onnx")


@pytest.mark.parametrize(("uri", "expected"), [
    ("oci://reg.local:5000/team/model@sha256:" + "a" * 64, ("reg.local:5000", "team/model", "a" * 64, None)),
    ("oci://127.0.0.1:5000/m:v2.1", ("127.0.0.1:5000", "m", None, "v2.1")),
    ("oci://[::1]:5000/a/b/c", ("[::1]:5000", "a/b/c", None, None)),
])
def test_parse(uri: str, expected: tuple) -> None:
    ref = oci.parse(uri)
    assert (ref.registry, ref.repository, ref.digest, ref.tag) == expected


@pytest.mark.parametrize("uri", ["https://x/y", "oci://host", "oci://host/Repo", "oci://h/r@sha256:abc"])
def test_parse_rejects(uri: str) -> None:
    with pytest.raises(oci.OciError, match="not an oci://"):
        oci.parse(uri)


def test_plain_http_only_for_loopback_or_listed_registries() -> None:
    assert oci.is_insecure("127.0.0.1:5000", env={}) and oci.is_insecure("localhost", env={})
    assert oci.is_insecure("[::1]:5000", env={})
    assert not oci.is_insecure("registry.internal:5000", env={})
    listed = {contract.OCI_INSECURE_ENV: "registry.internal:5000, other"}
    assert oci.is_insecure("registry.internal:5000", env=listed) and oci.is_insecure("other:443", env=listed)
    assert oci.is_insecure("anything", env={contract.OCI_INSECURE_ENV: "*"})


def test_edgewise_fetch_lays_out_a_model_pulled_over_oci(registry: Registry, tmp_path: Path) -> None:
    from edgewise.devcluster import demo_models

    model = demo_models.good(tmp_path / "src" / "model.onnx")
    digest = demo_models.sha256(model)
    ref = OciStore(registry.address, "edgewise/fetch").put(model, {"precision": "fp32"})
    request = contract.FetchRequest(uri=ref.uri, sha256=digest, model_name="clf", dest=str(tmp_path / "models"))
    done = subprocess.run([sys.executable, "-m", "edgewise", "fetch", *request.to_args()], capture_output=True,
                          text=True, timeout=120, env={**os.environ, contract.OCI_INSECURE_ENV: "1"})
    assert done.returncode == 0, done.stderr
    laid_out = tmp_path / "models" / "clf" / "1" / "model.onnx"
    assert hashlib.sha256(laid_out.read_bytes()).hexdigest() == digest
