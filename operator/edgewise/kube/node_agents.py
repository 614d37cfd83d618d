"""Calls to the node agents (`edgewise agent`, one per node): prefetch a canary's artifact, read power.

Best effort and bounded in time: only the agents of the nodes a step is about to move are
called (and each site's source node, which stages for them), each with a short timeout, so an
agent that does not answer (a disconnected node) never holds the step; the node's fetch init
container gets the artifact itself when its pod starts. Power and temperature (`telemetry`) are
read from a bounded sample of a class's canary and stable nodes; an agent that does not answer
gives an unavailable reading, with the reason.

Each call carries the node's site budget, and for every node but its site's source node the
address of that node's agent as the peer to fetch from (core/staging.py decides who is who).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from edgewise import contract
from edgewise.core.analysis import NodeReading
from edgewise.core.observed import NodeInfo
from edgewise.core.rollout import StageRequest

STAGE_TIMEOUT = 3.0  # seconds per agent call; staging is best effort, a step never waits on a dead agent
STAGE_WORKERS = 16
TELEMETRY_TIMEOUT = 3.0  # seconds per agent: a node that does not answer is left out of the power rules
MAX_TELEMETRY_BYTES = 1 << 20


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
    """(the sites' source nodes, the others), each with its prefetch body. The body pins the model's source
    (sourceSha256) so an agent with trusted keys checks the artifact's attestation against it when staging."""
    if req.source_sha256:
        common = {**common, "sourceSha256": req.source_sha256}
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


def telemetry(nodes: Sequence[NodeInfo], token: str | None) -> dict[str, NodeReading]:
    """Each node's power and temperature as its agent reads them (GET /v1/telemetry, operator-only)."""
    if not nodes:
        return {}
    with ThreadPoolExecutor(max_workers=min(STAGE_WORKERS, len(nodes))) as pool:
        return dict(zip((n.name for n in nodes), pool.map(_telemetry, nodes, [token] * len(nodes)), strict=True))


def _telemetry(node: NodeInfo, token: str | None) -> NodeReading:
    if not node.address:
        return NodeReading.unavailable(node.name, "node has no InternalIP")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(contract.agent_url(node.address) + contract.AGENT_TELEMETRY_PATH,
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TELEMETRY_TIMEOUT) as resp:  # noqa: S310 - node agent URL
            body = json.loads(resp.read(MAX_TELEMETRY_BYTES))
    except urllib.error.HTTPError as err:
        return NodeReading.unavailable(node.name, f"agent answered HTTP {err.code}")
    except (OSError, ValueError) as err:
        kind = "timed out" if isinstance(err, TimeoutError) else type(err).__name__
        return NodeReading.unavailable(node.name, f"agent did not answer ({kind})")
    return parse_telemetry(node.name, body)


def parse_telemetry(node: str, body: object) -> NodeReading:
    """An agent's /v1/telemetry answer as a reading; anything malformed is unavailable, never a number.

    Reasons are the agent's own fixed words (which sysfs files exist), cut short: the status shows them.
    """
    if not isinstance(body, dict):
        return NodeReading.unavailable(node, "agent answered no telemetry object")
    power = body.get("power") if isinstance(body.get("power"), dict) else {}
    temp = body.get("temperature") if isinstance(body.get("temperature"), dict) else {}
    watts, celsius = _number(power.get("watts")), _number(temp.get("celsius"))
    return NodeReading(
        node=node, watts=watts, celsius=celsius, sensor=str(temp.get("sensor") or "")[:64],
        power_reason="" if watts is not None else str(power.get("reason") or "no power reading")[:160],
        temperature_reason="" if celsius is not None else str(temp.get("reason") or "no temperature reading")[:160])


def _number(x: object) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    value = float(x)
    return value if value == value and abs(value) != float("inf") else None
