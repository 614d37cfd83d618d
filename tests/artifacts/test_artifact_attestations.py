"""Attestations stored next to their artifacts: in the built-in store (and its HTTP server) and in a real OCI
registry as a referrer of the artifact's manifest; and read back from where `contract.attestation_uri` says."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path

import pytest
from registry_support import Registry

from edgewise import contract
from edgewise.artifacts.builtin import BuiltinStore
from edgewise.artifacts.builtin_http import BackgroundServer
from edgewise.artifacts.oci import OciStore, tag_for
from edgewise.artifacts.store import ArtifactNotFound
from edgewise.shared.download import download_file

ENVELOPE = b'{"payloadType": "application/vnd.in-toto+json", "payload": "e30=", "signatures": []}'


def artifact(tmp_path: Path, content: bytes) -> tuple[Path, str]:
    path = tmp_path / "artifact.onnx"
    path.write_bytes(content)
    return path, hashlib.sha256(content).hexdigest()


def test_the_attestation_uri_is_beside_the_artifact_for_every_scheme() -> None:
    assert contract.attestation_uri("http://h:1/artifacts/sha256/ab") == "http://h:1/artifacts/sha256/ab.intoto.json"
    assert contract.attestation_uri("https://h/m.onnx?sig=x") == "https://h/m.onnx.intoto.json?sig=x"
    assert contract.attestation_uri(f"oci://r:5000/e/a@sha256:{'c' * 64}") == f"oci://r:5000/e/a:sha256-{'c' * 64}.att"
    with pytest.raises(ValueError, match="by its digest"):
        contract.attestation_uri("oci://r/e/a:latest")


def test_the_builtin_store_keeps_and_serves_the_attestation_beside_the_artifact(tmp_path: Path) -> None:
    store = BuiltinStore(tmp_path / "store")
    path, digest = artifact(tmp_path, b"int8 bytes" * 100)
    with pytest.raises(ArtifactNotFound):
        store.put_attestation(digest, ENVELOPE)  # no artifact, no attestation
    store.put(path, {})
    with pytest.raises(ArtifactNotFound):
        store.get_attestation(digest)
    with BackgroundServer(store) as server:
        store.base_url = server.url
        uri = store.put_attestation(digest, ENVELOPE)
        assert uri == f"{server.url}/artifacts/sha256/{digest}.intoto.json"
        assert uri == contract.attestation_uri(store.uri_for(digest))
        assert store.get_attestation(digest) == ENVELOPE
        download_file(uri, tmp_path / "got.json")
        assert (tmp_path / "got.json").read_bytes() == ENVELOPE
        with urllib.request.urlopen(f"{server.url}/artifacts/sha256/{digest}.json", timeout=10) as resp:
            assert json.loads(resp.read()) == {}  # the annotations are still where they were


def test_the_oci_store_pushes_the_attestation_as_a_referrer_of_the_artifact(registry: Registry,
                                                                             tmp_path: Path) -> None:
    store = OciStore(registry.address, "edgewise/attested")
    path, digest = artifact(tmp_path, b"fp16 bytes" * 1000)
    store.put(path, {"precision": "fp16"})
    with pytest.raises(ArtifactNotFound):
        store.get_attestation(digest)
    uri = store.put_attestation(digest, ENVELOPE)
    assert uri == f"oci://{registry.address}/edgewise/attested:sha256-{digest}.att"
    req = urllib.request.Request(f"http://{registry.address}/v2/edgewise/attested/manifests/{tag_for(digest)}",
                                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        artifact_manifest_digest = resp.headers["Docker-Content-Digest"]
    referrer = store.attestation_manifest(digest)
    assert referrer["subject"]["digest"] == artifact_manifest_digest  # type: ignore[index]
    assert referrer["artifactType"] == contract.OCI_ATTESTATION_ARTIFACT_TYPE
    assert [ly["mediaType"] for ly in referrer["layers"]] == [contract.OCI_ATTESTATION_MEDIA_TYPE]  # type: ignore[attr-defined]
    assert store.get_attestation(digest) == ENVELOPE
    download_file(uri, tmp_path / "pulled.json")  # what a node does: by the URI, with the shared puller
    assert (tmp_path / "pulled.json").read_bytes() == ENVELOPE
    assert store.annotations(digest)["precision"] == "fp16"  # the artifact's own manifest is untouched


def test_an_oci_artifact_nobody_attested_has_no_attestation_and_an_unreachable_registry_is_retried(
        registry: Registry, tmp_path: Path) -> None:
    """A node refuses the first (no_attestation) and tries the second again later, rather than refusing."""
    from edgewise.devcluster.processes import free_port
    from edgewise.node.trust import attestation_of
    from edgewise.shared.download import TransientError

    store = OciStore(registry.address, "edgewise/unattested")
    path, digest = artifact(tmp_path, b"int8 bytes nobody attested" * 100)
    store.put(path, {})
    assert attestation_of(store.uri_for(digest), attempts=1) is None
    closed = f"oci://127.0.0.1:{free_port()}/edgewise/unattested@sha256:{digest}"
    with pytest.raises(TransientError):
        attestation_of(closed, attempts=1, base_delay=0)
