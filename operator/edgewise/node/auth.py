"""Who is calling the node agent, and what they may do.

Callers present a projected ServiceAccount token with the audience
`contract.AGENT_AUDIENCE` as `Authorization: Bearer`. The agent has it checked by
the apiserver (a TokenReview) and trusts only what the review says:

- the operator's ServiceAccount (its user name is given to the agent) may stage
  artifacts (prefetch), see prefetch states and list the cache;
- a pod may do everything a runtime pod needs (fill, read, upload a plan) only when
  its token is bound to a pod on the agent's own node: the apiserver writes the
  pod's node into pod-bound tokens (user extra `authentication.kubernetes.io/node-name`);
- another node's agent (the agents' ServiceAccount, its user name given to the agent)
  may ask this agent to stage an artifact, see prefetch states and read cached
  artifacts by digest: the peers of a site fetch from its source node (see
  docs/node-cache.md, "Bandwidth"). Nothing else: no plans, no listing, no fill by GET.

Nobody else gets anything but /healthz and /metrics. The token never leaves the
agent except towards the apiserver; results are cached by the token's sha256.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import ssl
import time
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from edgewise.contract import service_account

log = logging.getLogger("edgewise.agent.auth")

NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
IN_CLUSTER_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MAX_CACHED = 4096
NEGATIVE_SECONDS = 10.0  # a refused token is asked about again after this long (no review per request)
MAX_POSITIVE_SECONDS = 600.0


@dataclass(frozen=True)
class Caller:
    """An authenticated caller, as the apiserver described it."""

    user: str  # e.g. system:serviceaccount:vision:default
    node: str = ""  # the node of the pod the token is bound to; "" when not pod-bound
    pod: str = ""  # that pod's name

    @property
    def namespace(self) -> str:
        """The ServiceAccount's namespace, "" for other users."""
        account = service_account(self.user)
        return account[0] if account else ""

    def describe(self) -> str:
        return f"pod {self.namespace}/{self.pod} on node {self.node}" if self.pod else self.user


class Role(StrEnum):
    OPERATOR = "operator"  # stage (prefetch), prefetch states, listing
    NODE_POD = "node-pod"  # everything a runtime pod on this node needs
    PEER = "peer"  # another node's agent: stage, prefetch states, cached artifacts by digest


@dataclass(frozen=True)
class Policy:
    """The authorization rules: pure, so they are unit-tested directly."""

    node_name: str
    operator_users: frozenset[str]
    peer_users: frozenset[str] = frozenset()  # the agents' ServiceAccount

    def roles(self, caller: Caller) -> frozenset[Role]:
        roles = set()
        if caller.user in self.operator_users:
            roles.add(Role.OPERATOR)
        if caller.user in self.peer_users:
            roles.add(Role.PEER)
        if caller.node and caller.node == self.node_name and caller.pod and caller.namespace:
            roles.add(Role.NODE_POD)
        return frozenset(roles)

    def allows(self, caller: Caller, wanted: Collection[Role]) -> bool:
        return bool(self.roles(caller) & set(wanted))


class Verifier(Protocol):
    async def verify(self, token: str) -> Caller | None:
        """The caller the token belongs to, or None when it is not valid for the agent."""


class VerifierUnavailable(Exception):
    """The apiserver could not be asked; the caller should retry (503), not be told "no"."""


def bearer_token(header: str) -> str:
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def token_expiry(token: str) -> float | None:
    """`exp` of a JWT, read without checking it (only to bound how long a review is cached)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class ApiServer:
    """Where and as whom the agent asks for TokenReviews (in-cluster defaults)."""

    url: str
    token_file: Path
    ca_file: Path | None

    @classmethod
    def in_cluster(cls, env: dict[str, str] | None = None) -> ApiServer | None:
        env = dict(os.environ) if env is None else env
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            return None
        if ":" in host:
            host = f"[{host}]"
        return cls(f"https://{host}:{port}", IN_CLUSTER_DIR / "token", IN_CLUSTER_DIR / "ca.crt")


class TokenReviewVerifier:
    """Asks the apiserver (authentication.k8s.io/v1 TokenReview) about each new token."""

    def __init__(self, api: ApiServer, audience: str, *, clock: Any = time.time) -> None:
        self.api = api
        self.audience = audience
        self.clock = clock
        self._cache: OrderedDict[str, tuple[float, Caller | None]] = OrderedDict()
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def verify(self, token: str) -> Caller | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self.clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(key)
            return hit[1]
        caller = await self._review(token)
        if caller is None:
            until = now + NEGATIVE_SECONDS
        else:
            until = min(token_expiry(token) or now, now + MAX_POSITIVE_SECONDS)
        self._cache[key] = (until, caller)
        while len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)
        return caller

    async def _review(self, token: str) -> Caller | None:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token, "audiences": [self.audience]}}
        try:
            own = self.api.token_file.read_text(encoding="utf-8").strip()  # re-read: the kubelet rotates it
            session = await self._get_session()
            async with session.post(f"{self.api.url.rstrip('/')}/apis/authentication.k8s.io/v1/tokenreviews",
                                    json=body, headers={"Authorization": f"Bearer {own}"}) as resp:
                if resp.status != 201 and resp.status != 200:
                    text = (await resp.text())[:300]
                    raise VerifierUnavailable(f"TokenReview answered HTTP {resp.status}: {text}")
                review = await resp.json()
        except (TimeoutError, OSError, aiohttp.ClientError, ValueError) as err:
            raise VerifierUnavailable(f"TokenReview failed: {err}") from err
        return caller_from_review(review, self.audience)

    async def _get_session(self) -> aiohttp.ClientSession:
        async with self._lock:
            if self._session is None:
                ctx = ssl.create_default_context(cafile=str(self.api.ca_file) if self.api.ca_file else None)
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=ctx, limit=8),
                    timeout=aiohttp.ClientTimeout(total=10))
            return self._session


def caller_from_review(review: dict[str, Any], audience: str) -> Caller | None:
    """The caller a TokenReview's status describes; None unless authenticated for `audience`."""
    status = review.get("status") or {}
    if not status.get("authenticated"):
        return None
    if audience not in (status.get("audiences") or []):
        return None
    user = status.get("user") or {}
    extra = user.get("extra") or {}

    def first(key: str) -> str:
        values = extra.get(key) or []
        return str(values[0]) if values else ""

    return Caller(user=str(user.get("username", "")), node=first(NODE_NAME_EXTRA), pod=first(POD_NAME_EXTRA))
