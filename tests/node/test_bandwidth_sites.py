"""Bandwidth budgets, measured at the origin: real agent processes in two "sites" on loopback.

The test plays the operator: it sends each agent the prefetch the operator would (its site's
budget, and for every node but the site's source node that node's agent as the peer). The origin
must see one copy per site, never faster than the site's budget (sliding one-second windows,
with the bucket's burst and the sockets' buffers as tolerance: the limiter caps the rate, it
does not floor it, so a slow machine only makes the windows emptier).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest
from bandwidth_support import SLACK, CountingOrigin
from cache_support import AGENT_USER, OPERATOR, PEER, AgentProcess, get_json, http, sha256

from edgewise.shared.bandwidth import Budget
from wait_support import wait_for

DATA = os.urandom(1_500_000)
BUDGETS = {"factory-a": 400_000, "store-b": 250_000}  # bytes per second


@pytest.fixture
def origin() -> Any:
    server = CountingOrigin(DATA).start()
    yield server
    server.stop()


def start_agents(agents: Any, tmp_path: Path, names: list[str]) -> dict[str, AgentProcess]:
    token = tmp_path / "peer-token"
    token.write_text(PEER)
    for name in names:
        (tmp_path / name).mkdir()
    return {name: agents("--peer-user", AGENT_USER, "--peer-token-file", str(token), cache=tmp_path / name / "cache")
            for name in names}


def prefetch(agent: AgentProcess, body: dict[str, Any]) -> None:
    status, _, answer = http("POST", agent.url + "/v1/prefetch", json.dumps(body).encode(),
                             {"Content-Type": "application/json"}, token=OPERATOR)
    assert status in (200, 202), answer


def job(agent: AgentProcess, digest: str) -> dict[str, Any]:
    return dict(get_json(f"{agent.url}/v1/prefetch/{digest}", token=OPERATOR))


def test_each_site_downloads_one_copy_within_its_budget_and_its_nodes_fetch_from_its_source(
        origin, agents, tmp_path) -> None:
    sites = {"factory-a": ["a1", "a2", "a3"], "store-b": ["b1", "b2"]}
    procs = start_agents(agents, tmp_path, [n for names in sites.values() for n in names])
    digest = sha256(DATA)
    for site, (source, *others) in sites.items():
        common = {"sha256": digest, "model": "detector", "namespace": "vision", "site": site, "uri": origin.uri(site),
                  "budget": Budget(bytes_per_second=BUDGETS[site]).to_wire()}
        prefetch(procs[source], {**common, "peers": []})  # as the operator does: the source first
        for name in others:
            prefetch(procs[name], {**common, "peers": [procs[source].url]})

    for name, proc in procs.items():
        state = wait_for(lambda p=proc: (j := job(p, digest))["state"] in ("ready", "failed") and j, 120,
                         f"{name} to stage the artifact")
        assert state["state"] == "ready", (name, state)
    for source, *others in sites.values():
        assert job(procs[source], digest)["via"] in ("source", None)  # None: it was a peer's job, and is done
        for name in others:
            assert job(procs[name], digest)["via"] == f"peer {procs[source].url}", name
            assert [a["sha256"] for a in procs[name].artifacts()] == [digest]

    assert sorted(origin.gets) == ["factory-a", "store-b"]  # one copy per site
    assert origin.bytes_by_site() == {site: len(DATA) for site in sites}
    for site, rate in BUDGETS.items():
        busiest = origin.busiest_window(site, 1.0)
        assert busiest <= rate + SLACK, f"{site}: {busiest} bytes in one second against a budget of {rate}/s"
        assert busiest < len(DATA)  # the limit did something: unthrottled, one window holds it all
        assert origin.busiest_window(site, 3.0) <= 3 * rate + SLACK, site  # and the rate holds over time


def test_past_the_daily_cap_the_download_waits_for_midnight_and_says_so(origin, agents, tmp_path) -> None:
    [agent] = start_agents(agents, tmp_path, ["c1"]).values()
    digest = sha256(DATA)
    prefetch(agent, {"sha256": digest, "model": "detector", "namespace": "vision", "site": "depot-c",
                     "uri": origin.uri("depot-c"), "peers": [], "budget": {"dailyBytes": 400_000}})
    state = wait_for(lambda: (j := job(agent, digest))["waitingUntil"] and j, 60, "the download to wait for the cap")
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).date()
    assert state["state"] == "downloading" and state["waitingUntil"] == f"{tomorrow}T00:00:00Z", state
    health = get_json(agent.url + "/healthz", token=None)["bandwidth"]
    assert health["usedToday"] == 400_000 and health["dailyBytes"] == 400_000 and health["site"] == "depot-c"
    _, _, metrics = http("GET", agent.url + "/metrics")
    assert "edgewise_agent_bandwidth_used_today_bytes 400000.0" in metrics.decode()
    assert "edgewise_agent_bandwidth_waiting_until_seconds 0.0" not in metrics.decode()
    assert origin.bytes_by_site()["depot-c"] <= 400_000 + SLACK  # the rest stays at the origin


def test_a_peer_that_cannot_deliver_is_replaced_by_the_source_and_peers_read_only_by_digest(
        origin, agents, tmp_path) -> None:
    procs = start_agents(agents, tmp_path, ["d1", "d2"])
    digest = sha256(DATA)
    gone = "http://127.0.0.1:9"  # nothing listens: the peer is down
    prefetch(procs["d1"], {"sha256": digest, "model": "m", "namespace": "vision", "site": "d",
                           "uri": origin.uri("d"), "peers": [gone]})
    state = wait_for(lambda: (j := job(procs["d1"], digest))["state"] in ("ready", "failed") and j, 60, "fallback")
    assert state["state"] == "ready" and state["via"] == "source"
    assert origin.gets == ["d"]
    _, _, metrics = http("GET", procs["d1"].url + "/metrics")
    assert "edgewise_agent_peer_fallbacks_total 1.0" in metrics.decode()
    # What a peer may do: read what is cached by digest; not list the cache, nor fill by GET.
    d1 = procs["d1"]
    assert http("GET", f"{d1.url}/v1/artifacts/{digest}", token=PEER)[2] == DATA
    assert http("GET", f"{d1.url}/v1/artifacts", token=PEER)[0] == 403
    other = sha256(b"other")
    status, _, _ = http("GET", f"{d1.url}/v1/artifacts/{other}?uri={origin.uri('d')}", token=PEER)
    assert status == 404 and origin.gets == ["d"]
    # A peer cannot set the site's budget: only the operator says what the site is.
    http("POST", d1.url + "/v1/prefetch", json.dumps({"sha256": digest, "uri": origin.uri("d"), "site": "x",
                                                      "budget": {"bytesPerSecond": 1}}).encode(), token=PEER)
    assert get_json(d1.url + "/healthz", token=None)["bandwidth"]["site"] == "d"
