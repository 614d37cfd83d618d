"""The source-trust gate's shell: read the policy's ConfigMap, fetch and verify the signature, ask the core.

What verifying found is cached per (source digest, bundle, signers), so a model's source is downloaded and
checked once, not on every reconcile; a failure to fetch or read is not cached (it is retried).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
import urllib.error
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from kubernetes import client

from edgewise.analysis import local_files
from edgewise.analysis.local_files import LocalFileRefused
from edgewise.api.resources import EdgeModel
from edgewise.api.settings import OperatorSettings
from edgewise.core.plan import ResolvedProfile
from edgewise.core.trust_gate import Gate, PolicyRef, gate, needs_check, resolve_policy
from edgewise.shared.digest import DigestMismatch
from edgewise.shared.download import DownloadError, download_file
from edgewise.shared.trust.keys import pem_blocks
from edgewise.shared.trust.policy import SignatureCheck, TrustPolicy

log = logging.getLogger("edgewise.controller.trust")

# A ConfigMap's data (None: it does not exist); raises ApiException on anything else.
ReadConfigMap = Callable[[str, str], Mapping[str, str] | None]
# Verifies a model file against a bundle file: shared.trust.source_signature.check_signature by default.
Check = Callable[[Path, Path, TrustPolicy], SignatureCheck]

CERT_SUFFIXES = (".crt",)
KEY_SUFFIXES = (".pem", ".pub")


class ConfigMapProblem(Exception):
    """The policy's ConfigMap cannot be used; the words are fixed, safe for a status."""


def policy_from_config_map(data: Mapping[str, str], require_signed: bool) -> TrustPolicy:
    """Each key ending in .pem/.pub holds public key(s), each ending in .crt a CA chain (api/profile.py)."""
    keys: list[bytes] = []
    chains: list[bytes] = []
    for name in sorted(data):
        if name.endswith(KEY_SUFFIXES):
            keys += pem_blocks(data[name].encode())
        elif name.endswith(CERT_SUFFIXES):
            chains.append(data[name].encode())
    return TrustPolicy(public_keys=tuple(keys), certificate_chains=tuple(chains), require_signed=require_signed)


def _fingerprint(policy: TrustPolicy) -> str:
    h = hashlib.sha256()
    for part in (*policy.public_keys, b"--", *policy.certificate_chains):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def _why(what: str, err: Exception) -> str:
    """Why a file could not be fetched, without repeating what a server or the disk said."""
    if isinstance(err, LocalFileRefused):
        return f"the {what}: {err}"
    if isinstance(err, DigestMismatch):
        return f"the {what} does not match its sha256"
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, urllib.error.HTTPError):
            return f"the {what} could not be fetched: HTTP {cause.code}"
        cause = cause.__cause__
    return f"the {what} could not be fetched ({type(err).__name__})"


class SourceTrust:
    def __init__(self, settings: OperatorSettings, read_config_map: ReadConfigMap,
                 check: Check | None = None) -> None:
        self.settings = settings
        self.read_config_map = read_config_map
        self.check = check or _model_signing_check
        self._lock = threading.Lock()
        self._checked: dict[tuple[str, ...], tuple[SignatureCheck, str]] = {}  # → (what it found, bundle sha256)

    def verdict(self, model: EdgeModel, profile: ResolvedProfile) -> Gate:
        source = model.spec.source
        ref = resolve_policy(None if profile.builtin else profile.spec.trust_policy, profile.name,
                             model.metadata.namespace, self.settings)
        try:
            policy = self._policy(ref)
        except ConfigMapProblem as err:
            # Unsigned models need no signer, so only the requirement counts; a signed one cannot be checked.
            return gate(source, TrustPolicy(require_signed=ref.require_signed), ref, problem=str(err))
        if not needs_check(source):
            return gate(source, policy, ref)
        assert source.signature is not None
        key = (source.digest(), source.uri, source.signature.uri, source.signature.sha256 or "",
               _fingerprint(policy))
        with self._lock:
            found = self._checked.get(key)
        if found is None:
            try:
                found = self._verify(model, policy)
            except _Unavailable as err:
                return gate(source, policy, ref, problem=str(err))
            with self._lock:
                self._checked[key] = found
            log.info("source of edgewise model %s/%s: %s %s %s", model.metadata.namespace, model.metadata.name,
                     found[0].outcome, found[0].signer, found[0].detail[:300])
        verdict = gate(source, policy, ref, found[0])
        return replace(verdict, bundle_sha256=found[1]) if verdict.reason == "Signed" else verdict

    def _policy(self, ref: PolicyRef) -> TrustPolicy:
        if ref.config_map is None:
            return TrustPolicy(require_signed=ref.require_signed)
        ns, name = ref.config_map
        try:
            data = self.read_config_map(ns, name)
        except client.ApiException as err:
            raise ConfigMapProblem(f"the trust policy's ConfigMap {ns}/{name} cannot be read "
                                   f"(HTTP {err.status})") from err
        if data is None:
            raise ConfigMapProblem(f"the trust policy's ConfigMap {ns}/{name} does not exist")
        return policy_from_config_map(data, ref.require_signed)

    def _verify(self, model: EdgeModel, policy: TrustPolicy) -> tuple[SignatureCheck, str]:
        source = model.spec.source
        assert source.signature is not None
        dirs = self.settings.local_source_dirs
        with tempfile.TemporaryDirectory(prefix="edgewise-source-trust-") as tmp:
            path, bundle = Path(tmp) / "model.onnx", Path(tmp) / "model.sig"
            for what, uri, sha256, dest in (("signature bundle", source.signature.uri, source.signature.sha256,
                                             bundle),
                                            ("source model", source.uri, source.digest(), path)):
                try:
                    local_files.check(uri, dirs)
                    download_file(uri, dest, sha256 or "")
                except (LocalFileRefused, DigestMismatch, DownloadError, OSError) as err:
                    raise _Unavailable(_why(what, err)) from err
            bundle_sha256 = hashlib.sha256(bundle.read_bytes()).hexdigest()
            try:
                return self.check(path, bundle, policy), bundle_sha256
            except Exception as err:  # noqa: BLE001 - a verifier failure is not a verdict: retried, logged
                log.warning("verifying the signature of %s/%s failed: %s", model.metadata.namespace,
                            model.metadata.name, err)
                raise _Unavailable(f"the signature could not be verified ({type(err).__name__})") from err


class _Unavailable(Exception):
    pass


def _model_signing_check(path: Path, bundle: Path, policy: TrustPolicy) -> SignatureCheck:
    from edgewise.shared.trust.source_signature import check_signature  # model-signing: imported when needed

    return check_signature(path, bundle, policy)
