"""The OCI store: artifacts pushed to a registry as OCI artifacts with ORAS (the `oras` package).

Each artifact is one manifest with one layer, the model file (media type
`application/vnd.edgewise.model.onnx.v1`), annotated with what the operator knows about it
(source digest, target, precision, report summary). The manifest is tagged `sha256-<hex>`
after the file's digest, so `has`/`annotations` find it by the file's digest alone.

URIs name the LAYER: `oci://host:port/repo@sha256:<hex>`, where <hex> is the sha256 of the
model file. That is the digest EdgeModel sources and nodes verify, so one digest means the
same bytes everywhere; `edgewise fetch` GETs the blob by that digest and hashes what it
receives (see edgewise.shared.oci). Manifest digests and tags are accepted as input too.

An artifact's attestation is a referrer of its manifest: a manifest whose `subject` is the
artifact's manifest, `artifactType` contract.OCI_ATTESTATION_ARTIFACT_TYPE, one layer (the DSSE
envelope). Registries with the referrers API list it; it is also tagged `sha256-<hex>.att`
(contract.OCI_ATTESTATION_TAG), which is how nodes find it on any registry, the referrers API or not.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from edgewise import contract
from edgewise.artifacts.store import ArtifactNotFound, ArtifactRef, sha256_file
from edgewise.shared import oci as node_oci
from edgewise.shared.digest import normalize_digest

ANNOTATION_PREFIX = "io.edgewise."
TITLE = "model.onnx"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY_CONFIG = b"{}"


def _key(name: str) -> str:
    """Our annotations live under io.edgewise.; OCI's own (org.opencontainers.*) pass through."""
    return name if name.startswith("org.opencontainers.") else ANNOTATION_PREFIX + name


def tag_for(digest: str) -> str:
    return f"sha256-{normalize_digest(digest)}"


class OciStore:
    """Artifacts in `registry` (host[:port]) under `repository`; plain HTTP for loopback registries."""

    def __init__(self, registry: str, repository: str = "edgewise/artifacts",
                 insecure: bool | None = None) -> None:
        self.registry = registry
        self.repository = repository
        self.insecure = node_oci.is_insecure(registry) if insecure is None else insecure

    def _client(self):  # noqa: ANN202 - oras.provider.Registry
        return node_oci.registry_client(self.registry, self.insecure)

    def _target(self, digest: str) -> str:
        return f"{self.registry}/{self.repository}:{tag_for(digest)}"

    def put(self, path: Path, annotations: dict[str, str]) -> ArtifactRef:
        digest, size = sha256_file(path)
        manifest_annotations = {_key(k): str(v) for k, v in annotations.items()}
        manifest_annotations[ANNOTATION_PREFIX + "sha256"] = digest
        with tempfile.TemporaryDirectory(prefix="edgewise-oci-") as tmp:
            # ORAS names the layer after the file: push a hard link (or copy) named model.onnx.
            staged = Path(tmp) / TITLE
            try:
                os.link(path, staged)
            except OSError:
                shutil.copyfile(path, staged)
            self._client().push(
                target=self._target(digest), files=[f"{staged}:{contract.OCI_MODEL_MEDIA_TYPE}"],
                manifest_annotations=manifest_annotations, disable_path_validation=True, quiet=True)
        return ArtifactRef(digest=digest, size=size, uri=self.uri_for(digest))

    def get(self, digest: str, dest: Path) -> None:
        try:
            node_oci.pull(self.uri_for(digest), dest, insecure=self.insecure)
        except node_oci.OciNotFound as err:
            raise ArtifactNotFound(normalize_digest(digest)) from err

    def has(self, digest: str) -> bool:
        resp = self._client().get_blob(f"{self.registry}/{self.repository}", f"sha256:{normalize_digest(digest)}",
                                       head=True)
        return resp.status_code == 200

    def uri_for(self, digest: str) -> str:
        return f"oci://{self.registry}/{self.repository}@sha256:{normalize_digest(digest)}"

    def manifest_uri_for(self, digest: str) -> str:
        return f"oci://{self.registry}/{self.repository}:{tag_for(digest)}"

    def annotations(self, digest: str) -> dict[str, str]:
        """The manifest's annotations (prefix io.edgewise. stripped), found through the digest tag."""
        try:
            manifest = self._client().get_manifest(self._target(digest))
        except Exception as err:  # noqa: BLE001 - oras raises ValueError/HTTP errors for a missing tag
            raise ArtifactNotFound(normalize_digest(digest)) from err
        return {k.removeprefix(ANNOTATION_PREFIX): v for k, v in (manifest.get("annotations") or {}).items()}

    def _manifest_descriptor(self, digest: str) -> dict[str, object]:
        """The artifact's manifest as a descriptor (media type, digest, size): the attestation's subject."""
        client = self._client()
        container = client.get_container(self._target(digest))
        resp = client.do_request(f"{client.prefix}://{container.manifest_url()}", "GET",
                                 headers={"Accept": OCI_MANIFEST})
        if resp.status_code != 200:
            raise ArtifactNotFound(normalize_digest(digest))
        body = resp.content  # the digest is of the bytes the registry stored, not of a re-encoding
        return {"mediaType": OCI_MANIFEST, "digest": "sha256:" + hashlib.sha256(body).hexdigest(), "size": len(body)}

    def attestation_target(self, digest: str) -> str:
        return f"{self.registry}/{self.repository}:{contract.OCI_ATTESTATION_TAG.format(hex=normalize_digest(digest))}"

    def put_attestation(self, digest: str, envelope: bytes) -> str:
        import oras.defaults
        import oras.oci

        subject = self._manifest_descriptor(digest)
        client = self._client()
        container = client.get_container(self.attestation_target(digest))
        with tempfile.TemporaryDirectory(prefix="edgewise-oci-") as tmp:
            path, config = Path(tmp) / f"{TITLE}{contract.ATTESTATION_SUFFIX}", Path(tmp) / "config.json"
            path.write_bytes(envelope)
            config.write_bytes(EMPTY_CONFIG)
            layer = oras.oci.NewLayer(str(path), media_type=contract.OCI_ATTESTATION_MEDIA_TYPE)
            layer["annotations"] = {oras.defaults.annotation_title: path.name}
            conf = {"mediaType": oras.defaults.unknown_config_media_type, "size": len(EMPTY_CONFIG),
                    "digest": "sha256:" + hashlib.sha256(EMPTY_CONFIG).hexdigest()}
            for blob, descriptor in ((path, layer), (config, conf)):
                client._check_200_response(client.upload_blob(str(blob), container, descriptor))
            manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "artifactType": contract.OCI_ATTESTATION_ARTIFACT_TYPE, "config": conf, "layers": [layer],
                        "subject": subject, "annotations": {ANNOTATION_PREFIX + "sha256": normalize_digest(digest)}}
            client._check_200_response(client.upload_manifest(manifest, container))
        return contract.attestation_uri(self.uri_for(digest))

    def attestation_manifest(self, digest: str) -> dict[str, object]:
        """The attestation's manifest (its subject, artifactType, layer); ArtifactNotFound without one."""
        try:
            return dict(self._client().get_manifest(self.attestation_target(digest)))
        except Exception as err:  # noqa: BLE001 - oras raises ValueError/HTTP errors for a missing tag
            raise ArtifactNotFound(normalize_digest(digest)) from err

    def get_attestation(self, digest: str) -> bytes:
        with tempfile.TemporaryDirectory(prefix="edgewise-oci-") as tmp:
            out = Path(tmp) / "attestation"
            try:
                node_oci.pull(contract.attestation_uri(self.uri_for(digest)), out, insecure=self.insecure)
            except node_oci.OciError as err:
                raise ArtifactNotFound(normalize_digest(digest)) from err
            return out.read_bytes()
