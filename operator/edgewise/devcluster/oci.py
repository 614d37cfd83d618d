"""Write and read the two image archive formats the image build deals in, with the standard library.

- an OCI image layout in a tar (`oci-archive:`), which buildah takes as a base image;
- a docker-archive (`manifest.json` with RepoTags), which `ctr images import` and K3s's air-gap
  import take with the image's full name.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from edgewise.shared.digest import file_sha256

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def write_oci_archive(out: Path, layer: Path, config: dict, ref_name: str, image_name: str = "") -> str:
    """One-layer image as an OCI layout tar; returns the manifest digest (the image's pinnable digest).

    Deterministic: the same layer and config give the same bytes, so the digest can be locked.
    `image_name` (a full name) is the name `ctr images import` gives the image.
    """
    layer_digest = "sha256:" + file_sha256(layer)
    config = {**config, "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": _digest(config_bytes), "size": len(config_bytes)},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": layer.stat().st_size}],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    manifest_digest = _digest(manifest_bytes)
    annotations = {"org.opencontainers.image.ref.name": ref_name}
    if image_name:
        annotations["io.containerd.image.name"] = image_name
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": len(manifest_bytes),
        "platform": {k: config[k] for k in ("architecture", "os", "variant") if k in config},
        "annotations": annotations}]}
    tmp = out.with_suffix(out.suffix + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add(tar, "index.json", json.dumps(index, sort_keys=True).encode())
        _add(tar, f"blobs/sha256/{manifest_digest[7:]}", manifest_bytes)
        _add(tar, f"blobs/sha256/{_digest(config_bytes)[7:]}", config_bytes)
        info = tarfile.TarInfo(f"blobs/sha256/{layer_digest[7:]}")
        info.size, info.mode, info.mtime = layer.stat().st_size, 0o644, 0
        with open(layer, "rb") as f:
            tar.addfile(info, f)
    tmp.replace(out)
    return manifest_digest


def write_files_image(out: Path, image_name: str, files: dict[str, bytes], config: dict) -> str:
    """`files` (executable, owned by root) as a one-layer image that `ctr images import` names `image_name`."""
    layer = out.with_name(out.name + ".layer")
    try:
        with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
            for path, data in files.items():
                info = tarfile.TarInfo(path)
                info.size, info.mode, info.mtime = len(data), 0o755, 0
                tar.addfile(info, io.BytesIO(data))
        return write_oci_archive(out, layer, config, ref_name=image_name.rsplit(":", 1)[-1], image_name=image_name)
    finally:
        layer.unlink(missing_ok=True)


@dataclass(frozen=True)
class DockerArchive:
    """What a docker-archive says about its one image."""

    repo_tags: list[str]
    config: dict
    layers: list[str]  # member names of the layer tars, bottom first

    @property
    def architecture(self) -> str:
        return str(self.config.get("architecture"))


def read_docker_archive(path: Path) -> DockerArchive:
    with tarfile.open(path) as tar:
        manifest = json.load(_member(tar, "manifest.json"))
        if len(manifest) != 1:
            raise ValueError(f"{path}: expected one image in manifest.json, found {len(manifest)}")
        entry = manifest[0]
        config = json.load(_member(tar, entry["Config"]))
    return DockerArchive(repo_tags=list(entry.get("RepoTags") or []), config=config, layers=list(entry["Layers"]))


def _member(tar: tarfile.TarFile, name: str) -> io.BufferedReader:
    f = tar.extractfile(name)
    if f is None:
        raise ValueError(f"{tar.name!r}: {name} is not a file")
    return f  # type: ignore[return-value]
