"""Verification on the node: the agent before it caches or serves an artifact, `edgewise fetch` before it
hands one to a runtime. The decision is the shared pure one (edgewise.shared.trust.verify); this module
loads the node's pinned keys and reads attestations, and needs no network once they are cached.

Opt-in: with no trusted keys configured (`--trusted-keys`, $EDGEWISE_TRUSTED_KEYS) `load_trust` gives
None and artifacts are checked by digest only, exactly as before.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path

from edgewise import contract
from edgewise.node.cache import fsync_dir
from edgewise.shared import download as dl
from edgewise.shared.trust.dsse import MAX_ENVELOPE_BYTES
from edgewise.shared.trust.keys import Signer, TrustedKeys, generate_ec, private_pem, public_key_path, public_pem
from edgewise.shared.trust.statement import Statement, TensorRTPlan, sign_statement
from edgewise.shared.trust.verify import (
    OK_REASONS,
    Expected,
    ExpectedPlan,
    NodeTrust,
    Reason,
    Verdict,
    check,
    check_plan,
)

# A refusal's errorKind in the agent's answers and its metric label, one per Reason that refuses.
TRUST_KINDS = frozenset(r.value for r in Reason if r not in OK_REASONS)
# Those about the attestation: everything but bytes that hash wrong, which stay a DigestMismatch
# (a bad upstream, worth another source) as they were before trust.
ATTESTATION_KINDS = TRUST_KINDS - {Reason.DIGEST_MISMATCH.value}


class TrustRefused(Exception):
    """The artifact's chain of trust is broken: never cached, never served, never laid out."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.message)
        self.verdict = verdict

    @property
    def kind(self) -> str:
        return self.verdict.reason.value


def load_trust(keys: str | Path | None, require_signed_source: bool = False,
               env: Mapping[str, str] | None = None) -> NodeTrust | None:
    """The node's trust from a PEM file or directory (default: $EDGEWISE_TRUSTED_KEYS); None when unset."""
    source = os.environ if env is None else env
    path = keys or source.get(contract.TRUSTED_KEYS_ENV, "")
    if not path:
        return None
    return NodeTrust(TrustedKeys.load(path), require_signed_source)


def judge(trust: NodeTrust, actual_sha256: str, envelope: bytes | None, artifact_sha256: str,
          source_sha256: str | None) -> Verdict:
    """The verdict, raising TrustRefused unless it lets the artifact run."""
    verdict = check(actual_sha256, envelope, trust, Expected(artifact_sha256, source_sha256 or None))
    if not verdict.ok:
        raise TrustRefused(verdict)
    return verdict


class _Memory:
    """A download sink in memory, bounded: an attestation is a few KiB."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        if len(self.data) + len(data) > MAX_ENVELOPE_BYTES:
            raise dl.PermanentError(f"an attestation larger than {MAX_ENVELOPE_BYTES} bytes")
        self.data += data

    def reset(self) -> None:
        self.data.clear()

    def tell(self) -> int:
        return len(self.data)


def fetch_attestation(uri: str, *, openers: Mapping[str, dl.Opener] | None = None, attempts: int = 3,
                      timeout: float = 30.0, base_delay: float = 0.5) -> bytes | None:
    """The attestation at `uri`; None when the source says there is none (a permanent error, e.g. 404).

    A transient error (network, 5xx) is raised: the caller retries later rather than refuse."""
    sink = _Memory()
    try:
        dl.download(uri, sink, attempts=attempts, timeout=timeout, openers=openers, base_delay=base_delay)
    except dl.TransientError:
        raise
    except dl.PermanentError:
        return None
    return bytes(sink.data)


def attestation_of(artifact_uri: str, **kwargs: object) -> bytes | None:
    """The attestation stored beside the artifact at `artifact_uri` (contract.attestation_uri)."""
    try:
        uri = contract.attestation_uri(artifact_uri)
    except ValueError:  # an oci:// artifact named by a tag: nothing is attested under a tag
        return None
    return fetch_attestation(uri, **kwargs)  # type: ignore[arg-type]


# contract.plan_cache_key(): plan-<onnx sha256>-sm<cc without the dot>-trt<version>-<precision>
_PLAN_KEY = re.compile(r"^plan-(?P<onnx>[0-9a-f]{64})-sm(?P<cc>[0-9A-Za-z]+)-trt(?P<trt>.+)"
                       r"-(?P<precision>fp32|fp16|int8)$")


def plan_statement(plan_key: str, plan_sha256: str, node: str) -> Statement | None:
    """What the agent attests of a plan cached under `plan_key`: the ONNX it was built from, the TensorRT
    version and compute capability the key names, and this node. None for a key not of that form."""
    m = _PLAN_KEY.match(plan_key)
    if m is None:
        return None
    cc = m["cc"]  # "87" for 8.7: the key drops the dot, and minor versions are one digit
    return Statement(contract.PLAN_FILENAME, plan_sha256, TensorRTPlan(
        onnx_sha256=m["onnx"], tensorrt_version=m["trt"], compute_capability=f"{cc[:-1]}.{cc[-1]}" if len(cc) > 1
        else cc, precision=m["precision"], node=node))


def own_plan_verdict(signer: Signer, plan_key: str, plan_sha256: str, envelope: bytes | None) -> Verdict | None:
    """Whether the plan cached under `plan_key` carries this agent's own attestation of what the key names
    (verify.check_plan with its own public key); None for a key not of that form."""
    statement = plan_statement(plan_key, plan_sha256, "")
    if statement is None or not isinstance(statement.predicate, TensorRTPlan):
        return None
    expected = ExpectedPlan(plan_sha256, statement.predicate.onnx_sha256, statement.predicate.tensorrt_version)
    return check_plan(plan_sha256, envelope, TrustedKeys.of([signer.public_key()]), expected)


def attest_plan(signer: Signer, plan_key: str, plan_sha256: str, node: str) -> bytes | None:
    statement = plan_statement(plan_key, plan_sha256, node)
    return None if statement is None else sign_statement(statement, signer)


def node_plan_key(path: Path) -> tuple[Signer, bool]:
    """This node's plan key at `path` and whether it was generated now.

    Generated once, when `path` does not exist (ECDSA P-256, mode 0600); loaded as it is afterwards, so its key id
    stays the same across restarts and the plans attested before keep verifying. Its public half is written
    beside it (keys.public_key_path, mode 0644) at each start, from the private key: the pods of this node verify
    plans with that file. OSError or KeyLoadError (a ValueError) when the key is there but unusable."""
    created = False
    if not path.exists():
        created = _create_private_key(path, private_pem(generate_ec()))
    signer = Signer.load(path)
    _write_public_key(public_key_path(path), public_pem(signer.public_key()))
    return signer, created


def _create_private_key(path: Path, pem: bytes) -> bool:
    """Write `pem` at `path` unless a key is there already: False when another start won the race."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)  # pods read the public key in this directory
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, not even briefly
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # atomic, and unlike a rename it never replaces a key that is there
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True


def _write_public_key(path: Path, pem: bytes) -> None:
    """Atomically, world-readable; left alone when it already says the same."""
    try:
        if path.read_bytes() == pem and path.stat().st_mode & 0o777 == 0o644:
            return
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # whatever the umask: pods of other users read it
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
