"""Certificates and keys for the local control plane, made with `cryptography`.

One CA signs the apiserver's serving certificate and a client certificate per
component; RBAC's bootstrap roles give each component's user (its certificate's
CN) exactly the rights the upstream component expects.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class ClientIdentity:
    name: str  # file stem
    user: str  # certificate CN = Kubernetes user name
    groups: tuple[str, ...] = ()


CLIENTS = (
    ClientIdentity("admin", "edgewise-admin", ("system:masters",)),
    ClientIdentity("controller-manager", "system:kube-controller-manager"),
    ClientIdentity("scheduler", "system:kube-scheduler"),
    # kwok plays every kubelet; it needs to write nodes, leases and pod status.
    ClientIdentity("kwok", "edgewise-kwok", ("system:masters",)),
    # The real node (devcluster/realnode.py): its kubelet as a node, kube-proxy as the node proxier,
    # and the apiserver's client for kubelet APIs (logs, exec, port-forward).
    ClientIdentity("kubelet", "system:node:edgewise-real-1", ("system:nodes",)),
    ClientIdentity("kube-proxy", "system:kube-proxy"),
    ClientIdentity("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)),
    # The real node's cluster DNS reads Services, EndpointSlices, Namespaces and Pods cluster-wide.
    ClientIdentity("coredns", "edgewise-coredns", ("system:masters",)),
)


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: x509.Name, issuer: x509.Name, public_key, signing_key, *, ca: bool,
          sans: list[x509.GeneralName] | None = None, usages: list[x509.ObjectIdentifier] | None = None
          ) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(issuer).public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def generate(pki_dir: Path, service_ip: str, extra_ips: tuple[str, ...] = ()) -> None:
    """Write ca, apiserver serving cert, client certs and the service-account key pair."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgewise-devcluster-ca")])
    ca = _cert(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    _write(pki_dir / "ca.key", _pem_key(ca_key))
    _write(pki_dir / "ca.crt", ca.public_bytes(serialization.Encoding.PEM))

    server_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address(service_ip)),
        *[x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips],
        *[x509.DNSName(n) for n in ("localhost", "kubernetes", "kubernetes.default",
                                     "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")],
    ]
    server = _cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]), ca_name,
                   server_key.public_key(), ca_key, ca=False, sans=sans,
                   usages=[x509.ExtendedKeyUsageOID.SERVER_AUTH])
    _write(pki_dir / "apiserver.key", _pem_key(server_key))
    _write(pki_dir / "apiserver.crt", server.public_bytes(serialization.Encoding.PEM))

    for client in CLIENTS:
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in client.groups]
        subject = x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, client.user)])
        cert = _cert(subject, ca_name, key.public_key(), ca_key, ca=False,
                     usages=[x509.ExtendedKeyUsageOID.CLIENT_AUTH])
        _write(pki_dir / f"{client.name}.key", _pem_key(key))
        _write(pki_dir / f"{client.name}.crt", cert.public_bytes(serialization.Encoding.PEM))

    # Service-account tokens are signed by the apiserver and verified with the public half.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write(pki_dir / "sa.key", _pem_key(sa_key))
    _write(pki_dir / "sa.pub", sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
