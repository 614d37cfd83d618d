"""Which hosts the node agent may download from: never an open proxy into the node's network.

The agent runs on the host network, so a URI naming loopback, a link-local address
or a cloud metadata service would reach what only the node should reach. Those are
refused unless the operator's settings name the host in an allow-list
(`--allow-host`). The check applies to the addresses a name RESOLVES to, at connect
time, on every connection (redirects included), and the connection goes to the
address that was checked, so DNS rebinding cannot swap it afterwards.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services that are not link-local: AWS (IPv6), Alibaba, Oracle's legacy one.
METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "192.0.0.192"))


class RefusedDestination(Exception):
    """The destination is one the agent does not download from; says which and how to allow it."""


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def why_refused(address: IPAddress, *, deny_private: bool) -> str | None:
    """Why `address` is no download destination, or None when it may be."""
    a = _unmapped(address)
    if a in METADATA:
        return "a cloud metadata address"
    if a.is_loopback:
        return "a loopback address"
    if a.is_link_local:
        return "a link-local address"
    if a.is_unspecified:
        return "the unspecified address"
    if a.is_multicast or a.is_reserved:
        return "a multicast or reserved address"
    if deny_private and (a.is_private or a in ipaddress.ip_network("100.64.0.0/10")):
        return "a private address (the agent runs with --deny-private)"
    return None


Resolver = Callable[[str, int], list[IPAddress]]


def resolve(host: str, port: int) -> list[IPAddress]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]


@dataclass(frozen=True)
class Destinations:
    """The rule set: hosts named in `allow_hosts` skip the address checks."""

    allow_hosts: frozenset[str] = frozenset()
    deny_private: bool = False
    resolver: Resolver = field(default=resolve, compare=False)

    @classmethod
    def of(cls, allow_hosts: Collection[str] = (), deny_private: bool = False) -> Destinations:
        return cls(frozenset(h.strip().lower().strip("[]") for h in allow_hosts if h.strip()), deny_private)

    def allowed_host(self, host: str) -> bool:
        return host.lower().strip("[]") in self.allow_hosts

    def vet(self, host: str, port: int) -> list[IPAddress]:
        """The addresses of `host` to connect to; RefusedDestination if any is forbidden."""
        try:
            addresses = self.resolver(host, port)
        except OSError as err:
            raise OSError(f"cannot resolve {host}: {err}") from err
        if self.allowed_host(host):
            return addresses
        for address in addresses:
            reason = why_refused(address, deny_private=self.deny_private)
            if reason:
                raise RefusedDestination(
                    f"{host} resolves to {address}, {reason}: the node agent does not download from it "
                    f"(to allow it on purpose, name it in the chart value agent.allowHosts, i.e. --allow-host {host})")
        return addresses

    def check_url(self, uri: str) -> None:
        """Vet the host of `uri` now (for clients whose connections cannot be pinned, e.g. OCI)."""
        parts = urllib.parse.urlsplit(uri)
        try:
            port = parts.port or 443
        except ValueError as err:
            raise RefusedDestination(f"{uri}: {err}") from err
        if not parts.hostname:
            raise RefusedDestination(f"{uri}: no host")
        self.vet(parts.hostname, port)

    def create_connection(self, address: tuple[str, int], timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT,
                          source_address: Any = None, **_: Any) -> socket.socket:
        """socket.create_connection, to a vetted address of the host only."""
        host, port = address
        last: OSError | None = None
        for ip in self.vet(host, port):
            try:
                return socket.create_connection((str(ip), port), timeout, source_address)
            except OSError as err:
                last = err
        raise last or OSError(f"cannot connect to {host}:{port}")
