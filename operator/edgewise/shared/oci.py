"""`oci://` for `edgewise fetch` and the node agent: pull a model layer from an OCI registry, verified.

URI forms (what the artifact store hands out is the first):
    oci://host:port/repo@sha256:<hex>   <hex> is the sha256 of the model file itself (the layer
                                         blob), so the digest nodes verify equals the one in the URI
    oci://host:port/repo@sha256:<hex>   when <hex> names a manifest instead, its model layer is pulled
    oci://host:port/repo:tag            the tag's manifest, then its model layer

Either way the bytes written are hashed and must equal the layer digest the registry's
manifest (or the URI) names, and `expected_sha256` when given. The file appears at
`dest_path` only once complete and verified.

Imports only third-party libraries (oras, requests), edgewise.contract and the shared digest.
Bytes that do not match their digest raise `DigestMismatch`, as everywhere else.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edgewise import contract
from edgewise.shared.digest import DigestMismatch

_REF = re.compile(r"^oci://(?P<registry>[^/]+)/(?P<repo>[a-z0-9][a-z0-9._/-]*?)"
                  r"(?:@sha256:(?P<digest>[a-f0-9]{64})|:(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?$")


class OciError(Exception):
    """The artifact could not be pulled (not found, unreachable, not a model artifact).

    Bytes that arrive but hash wrong are a `DigestMismatch`, as for every other download.
    """


class OciNotFound(OciError):
    """The registry answered: no blob and no manifest by that reference."""


@dataclass(frozen=True)
class OciRef:
    registry: str  # host[:port]
    repository: str
    digest: str | None = None  # hex, without "sha256:"
    tag: str | None = None

    @property
    def reference(self) -> str:
        return f"sha256:{self.digest}" if self.digest else (self.tag or "latest")

    def uri(self) -> str:
        suffix = f"@sha256:{self.digest}" if self.digest else f":{self.tag or 'latest'}"
        return f"oci://{self.registry}/{self.repository}{suffix}"


def parse(uri: str) -> OciRef:
    m = _REF.match(uri)
    if not m:
        raise OciError(f"{uri}: not an oci://host[:port]/repository[@sha256:<hex>|:tag] reference")
    return OciRef(m["registry"], m["repo"], m["digest"], m["tag"])


def is_insecure(registry: str, env: dict[str, str] | None = None) -> bool:
    """Plain HTTP for loopback registries and those listed in EDGEWISE_OCI_INSECURE."""
    source: Mapping[str, str] = os.environ if env is None else env
    listed = {h.strip() for h in source.get(contract.OCI_INSECURE_ENV, "").split(",") if h.strip()}
    host = registry[1:].split("]")[0] if registry.startswith("[") else registry.split(":")[0]
    if "*" in listed or registry in listed or host in listed:
        return True
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def registry_client(registry: str, insecure: bool | None = None, timeout: float = 60.0):  # noqa: ANN201
    """An ORAS client (oras.provider.Registry) that tries each request once, with a timeout.

    oras-py retries every request five times, sleeping 3, 5, 11, 29 and 83 s: over two minutes
    before an unreachable registry is reported. Callers here have their own retries with
    jittered backoff (the node's downloader, the operator's reconcile loop), so one attempt;
    and requests has no default timeout, so a stalled registry would otherwise hang a node.
    """
    import oras.provider

    class OneAttempt(oras.provider.Registry):
        def do_request(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            return oras.provider.Registry.do_request.__wrapped__(self, *args, **kwargs)  # type: ignore[attr-defined]

    client = OneAttempt(hostname=registry, insecure=is_insecure(registry) if insecure is None else insecure)
    send = client.session.request

    def request_with_timeout(method, url, **kwargs):  # noqa: ANN001, ANN003, ANN202
        kwargs.setdefault("timeout", timeout)
        return send(method, url, **kwargs)

    client.session.request = request_with_timeout  # type: ignore[method-assign]
    return client


def _model_layer(manifest: dict, uri: str) -> str:
    """The digest (hex) of the model layer of an artifact manifest."""
    layers = manifest.get("layers") or []
    chosen = [ly for ly in layers if ly.get("mediaType") == contract.OCI_MODEL_MEDIA_TYPE] or (
        layers if len(layers) == 1 else [])
    if not chosen:
        raise OciError(f"{uri}: manifest has {len(layers)} layers and none of media type "
                       f"{contract.OCI_MODEL_MEDIA_TYPE}")
    return str(chosen[0]["digest"]).removeprefix("sha256:")


def resolve(uri: str, *, insecure: bool | None = None, timeout: float = 60.0) -> str:
    """The hex digest of the blob to pull for `uri` (the layer itself, or a manifest's model layer)."""
    ref = parse(uri)
    client = registry_client(ref.registry, insecure, timeout)
    container = f"{ref.registry}/{ref.repository}:{ref.tag}" if ref.tag else \
        f"{ref.registry}/{ref.repository}@sha256:{ref.digest}"
    if ref.digest:
        try:
            head = client.get_blob(container, f"sha256:{ref.digest}", head=True)
        except Exception as err:  # noqa: BLE001 - requests/oras raise many kinds
            raise OciError(f"{uri}: registry unreachable: {err}") from err
        if head.status_code == 200:
            return ref.digest
    try:
        manifest = client.get_manifest(container)
    except Exception as err:  # noqa: BLE001 - oras says ValueError for any non-2xx answer, requests its own kinds
        if _manifest_status(client, container) == 404:
            raise OciNotFound(f"{uri}: no such artifact (neither a blob nor a manifest)") from err
        raise OciError(f"{uri}: registry unreachable or failing: {err}") from err
    return _model_layer(manifest, uri)


def _manifest_status(client, container: str) -> int | None:  # noqa: ANN001
    """The registry's HTTP status for the manifest (None when it does not answer): a missing manifest
    (404, e.g. an artifact nobody attested) is not an unreachable registry, which is retried."""
    import oras.defaults

    try:
        ref = client.get_container(container)
        accept = ", ".join(oras.defaults.default_manifest_accepted_media_types)
        return int(client.do_request(f"{client.prefix}://{ref.manifest_url()}", "HEAD",
                                     headers={"Accept": accept}).status_code)
    except Exception:  # noqa: BLE001 - no answer at all
        return None


def pull(uri: str, dest_path: str | Path, *, expected_sha256: str | None = None, insecure: bool | None = None,
         timeout: float = 60.0) -> None:
    """Download the model layer `uri` names into `dest_path`, verified against its digest."""
    ref = parse(uri)
    layer = resolve(uri, insecure=insecure, timeout=timeout)
    if expected_sha256 and expected_sha256.removeprefix("sha256:") != layer:
        raise DigestMismatch(expected_sha256.removeprefix("sha256:"), layer)
    dest = Path(dest_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    client = registry_client(ref.registry, insecure, timeout)
    h = hashlib.sha256()
    try:
        with client.get_blob(f"{ref.registry}/{ref.repository}", f"sha256:{layer}", stream=True) as resp:
            if resp.status_code != 200:
                raise OciError(f"{uri}: blob sha256:{layer}: HTTP {resp.status_code}")
            with open(tmp, "wb") as out:
                for chunk in resp.iter_content(chunk_size=1 << 20):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        if h.hexdigest() != layer:
            raise DigestMismatch(layer, h.hexdigest())
        os.replace(tmp, dest)
    except (OciError, DigestMismatch):
        raise
    except Exception as err:  # noqa: BLE001 - network errors mid-body
        raise OciError(f"{uri}: download failed: {err}") from err
    finally:
        tmp.unlink(missing_ok=True)
