"""Keys: a signer's private key and the set of public keys a verifier trusts.

A key is named by its key id, the hex sha256 of its DER SubjectPublicKeyInfo: the same bytes
whichever PEM wrapping or file name carries it, so a key id in an attestation names one key.
ECDSA P-256 (with SHA-256) and Ed25519 are accepted; anything else is refused when loaded, so
an operator learns at start-up, not at the first verification, that a key is of no use.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PUBLIC_SUFFIX = ".pub"
CERTIFICATE_BEGIN = b"-----BEGIN CERTIFICATE-----"
PEM_SUFFIXES = (".pem", PUBLIC_SUFFIX)


class KeyLoadError(ValueError):
    """A key that cannot be loaded or is of a kind not accepted here."""


def _check_kind(key: object, where: str) -> None:
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeyLoadError(f"{where}: ECDSA key on {key.curve.name}; only P-256 (secp256r1) is accepted")
        return
    if not isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        raise KeyLoadError(f"{where}: a {type(key).__name__}; only ECDSA P-256 and Ed25519 keys are accepted")


def key_id(public_key: PublicKey) -> str:
    """Hex sha256 of the key's DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def public_pem(public_key: PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def verify_raw(public_key: PublicKey, signature: bytes, data: bytes) -> bool:
    """True when `signature` over `data` was made by `public_key`'s private key."""
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
        else:
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class Signer:
    """A private key and its key id; `sign` gives a raw signature (DER ECDSA or Ed25519)."""

    private_key: PrivateKey
    key_id: str

    @classmethod
    def from_key(cls, private_key: PrivateKey) -> Signer:
        _check_kind(private_key, "signing key")
        return cls(private_key, key_id(private_key.public_key()))

    @classmethod
    def load(cls, pem_or_path: bytes | str | Path, password: bytes | None = None) -> Signer:
        """From PEM bytes, or a path to a PEM file (e.g. a Secret mounted into the operator)."""
        where = "signing key"
        if isinstance(pem_or_path, str | Path):
            where = str(pem_or_path)
            pem = Path(pem_or_path).read_bytes()
        else:
            pem = pem_or_path
        try:
            key = serialization.load_pem_private_key(pem, password=password)
        except (ValueError, TypeError) as err:
            raise KeyLoadError(f"{where}: not a PEM private key ({err})") from err
        _check_kind(key, where)
        return cls.from_key(key)  # type: ignore[arg-type]

    def public_key(self) -> PublicKey:
        return self.private_key.public_key()

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            return self.private_key.sign(data)
        return self.private_key.sign(data, ec.ECDSA(hashes.SHA256()))


@dataclass(frozen=True, eq=False)
class TrustedKeys:
    """Public keys by key id. More than one during a rotation: the old key and the new."""

    keys: Mapping[str, PublicKey]

    @classmethod
    def of(cls, public_keys: Iterable[PublicKey]) -> TrustedKeys:
        out: dict[str, PublicKey] = {}
        for k in public_keys:
            _check_kind(k, "trusted key")
            out[key_id(k)] = k
        return cls(out)

    @classmethod
    def from_pem(cls, pem: bytes, where: str = "trusted keys") -> TrustedKeys:
        """Every PEM public key block in `pem` (a bundle may hold the old key and the new).

        A PEM certificate counts as its public key and nothing more: the chart can wrap a key it
        generates in a self-signed certificate but cannot write the bare public key (Helm has no
        function for it). Its subject, issuer, validity and extensions are not looked at: trust is in
        the key, pinned here, as for a bare key."""
        blocks = pem_blocks(pem, (b"PUBLIC KEY", b"CERTIFICATE"))
        if not blocks:
            raise KeyLoadError(f"{where}: no PEM public key or certificate in it")
        keys: list[object] = []  # any kind the PEM holds; _check_kind keeps P-256 and Ed25519
        for block in blocks:
            try:
                if block.startswith(CERTIFICATE_BEGIN):
                    keys.append(x509.load_pem_x509_certificate(block).public_key())
                else:
                    keys.append(serialization.load_pem_public_key(block))
            except ValueError as err:
                raise KeyLoadError(f"{where}: not a PEM public key or certificate ({err})") from err
            _check_kind(keys[-1], where)
        return cls.of(keys)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | Path) -> TrustedKeys:
        """A PEM file, or a directory of *.pem/*.pub files (a ConfigMap mounted as a volume).

        Dot-files are skipped: a mounted ConfigMap keeps its previous version in `..data` links.
        """
        p = Path(path)
        try:
            if not p.is_dir():
                return cls.from_pem(p.read_bytes(), str(p))
            return cls._load_dir(p)
        except OSError as err:  # a missing or unreadable key file: a configuration error, said as one
            raise KeyLoadError(f"{p}: cannot read trusted keys ({err.strerror or err})") from err

    @classmethod
    def _load_dir(cls, p: Path) -> TrustedKeys:
        files = sorted(f for f in p.iterdir() if f.suffix in PEM_SUFFIXES and not f.name.startswith("."))
        if not files:
            raise KeyLoadError(f"{p}: no *.pem or *.pub file in it")
        merged: dict[str, PublicKey] = {}
        for f in files:
            merged |= dict(cls.from_pem(f.read_bytes(), str(f)).keys)
        return cls(merged)

    def get(self, kid: str) -> PublicKey | None:
        return self.keys.get(kid)

    def __contains__(self, kid: object) -> bool:
        return kid in self.keys

    def __len__(self) -> int:
        return len(self.keys)

    def ids(self) -> list[str]:
        return sorted(self.keys)


def pem_blocks(pem: bytes, kinds: tuple[bytes, ...] = (b"PUBLIC KEY",)) -> list[bytes]:
    """The PEM blocks of `kinds` in `pem`, in order; others (a private key) are skipped."""
    blocks: list[bytes] = []
    rest = pem
    while (start := rest.find(b"-----BEGIN ")) >= 0:
        kind = next((k for k in kinds if rest.startswith(b"-----BEGIN " + k + b"-----", start)), None)
        end = b"-----END " + (kind or b"") + b"-----"
        stop = rest.find(end, start) if kind else -1
        if stop < 0:
            rest = rest[start + len(b"-----BEGIN "):]
            continue
        blocks.append(rest[start:stop + len(end)] + b"\n")
        rest = rest[stop + len(end):]
    return blocks


def generate_ec() -> Signer:
    """A fresh ECDSA P-256 key (tests, `edgewise` key tooling)."""
    return Signer.from_key(ec.generate_private_key(ec.SECP256R1()))


def public_key_path(private_key_path: str | Path) -> Path:
    """Where a private key's public half is kept: beside it, its name + ".pub" (node.pem -> node.pem.pub), so
    whatever the private key is named, its public key's name differs from it."""
    p = Path(private_key_path)
    return p.with_name(p.name + PUBLIC_SUFFIX)


def private_pem(signer: Signer) -> bytes:
    return signer.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
