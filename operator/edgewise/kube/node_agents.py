"""Calls to the node agents (`edgewise agent`, one per node): ask them to prefetch a canary's artifact.

Best effort and bounded in time: only the agents of the nodes a step is about to move are
called (and each site's source node, which stages for them), each with a short timeout, so an
agent that does not answer (a disconnected node) never holds the step; the node's fetch init
container gets the artifact itself when its pod starts.

Each call carries the node's site budget, and for every node but its site's source node the
address of that node's agent as the peer to fetch from (core/staging.py decides who is who).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from edgewise import contract
from edgewise.core.observed import NodeInfo
from edgewise.core.rollout import StageRequest

STAGE_TIMEOUT = 3.0  # seconds per agent call; staging is best effort, a step never waits on a dead agent
STAGE_WORKERS = 16


def prefetch(namespace: str, model: str, requests: Sequence[StageRequest], token: str | None
             ) -> dict[str, tuple[int, int]]:
    """Per class, (agents that accepted, agents asked). `token` authenticates the operator to the agents."""
    out: dict[str, tuple[int, int]] = {}
    for req in requests:
        common = {"uri": req.uri, "sha256": req.sha256, "model": model, "namespace": namespace}
        sources, others = bodies(req, common)
        accepted = 0
        # Sources first: each learns its site's budget before its peers ask it for the artifact.
        for calls in (sources, others):
            with ThreadPoolExecutor(max_workers=min(STAGE_WORKERS, len(calls) or 1)) as pool:
                accepted += sum(pool.map(lambda c: _prefetch(c[0], c[1], token), calls))
        out[req.class_name] = (accepted, len(sources) + len(others))
    return out


Call = tuple[NodeInfo, bytes]


def bodies(req: StageRequest, common: dict[str, Any]) -> tuple[list[Call], list[Call]]:
    """(the sites' source nodes, the others), each with its prefetch body."""
    if not req.sites:
        return [], [(node, json.dumps(common).encode()) for node in req.nodes]
    sources: list[Call] = []
    others: list[Call] = []
    for site in req.sites:
        body = {**common, "site": site.site, "budget": site.budget()}
        if site.source is not None:
            sources.append((site.source, json.dumps({**body, "peers": []}).encode()))
        peers = [site.source.address] if site.source is not None else []
        others += [(node, json.dumps({**body, "peers": peers}).encode()) for node in site.others]
    return sources, others


def _prefetch(node: NodeInfo, body: bytes, token: str | None) -> bool:
    if not node.address:
        return False
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"  # the agents stage only for the operator's user
    request = urllib.request.Request(contract.agent_url(node.address) + contract.AGENT_PREFETCH_PATH, data=body,
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=STAGE_TIMEOUT) as resp:  # noqa: S310 - node agent URL
            return 200 <= resp.status < 300
    except OSError:
        return False
