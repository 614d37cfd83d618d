"""Issue 14's scenario end to end: a rollout across three sites waits for its activation window, stays within
each site's byte budget (measured at the origin), and stops every class when more than the allowed share of
the nodes that tried it fail.

Real control plane, the real operator (as the chart's ServiceAccount, with per-site budgets in its bandwidth
settings, `EDGEWISE_AGENT_BANDWIDTH`), and one real `edgewise agent` per kwok node at the node's InternalIP,
checking the operator and its peers by TokenReview, as in test_power_e2e.py. Nine nodes at three sites (two
arm64 and one amd64 board each), two hardware classes. Version 2.0 comes from a local HTTP origin
(tests/node/bandwidth_support.py) that logs every 8 KiB it sends with the time and the site: the operator
gives every node the same URI, so each site's agents reach the origin through an address of its own
(their `http_proxy`, as a site's uplink carries them; the agents' calls to each other bypass it,
`no_proxy`), and the origin counts by the address a request came in on. The 2.0 bytes are random: the agents
only check their digest, and kwok runs no container.

The scenario, in one module-scoped fleet:
1. 1.0 everywhere; 2.0 with steps {sites: 2, canarySites: [the last site in the hashed order]}, a pause,
   {percent: 100}; an activation window that opens in three hours, no staging window; the abort rule
   {maxFailedPercent: 25, minNodes: 4}.
2. While the window is closed: no canary, each class waits and says until when; the nodes of the two sites
   the first step will move stage 2.0 through their agents, one copy per site from the origin (the site's
   source node downloads, the others fetch from it), never faster than the site's rate; the third site
   downloads nothing; the status shows each site's staging (nodes, budget).
3. The window opens (the spec's window re-applied as open now: nothing waits in real time): exactly the two
   sites' nodes run 2.0, with no further download. The amd64 canaries crash-loop: 2 of the 6 nodes that
   tried, more than 25 %: both classes roll back (the arm64 class did nothing wrong), the status and an
   Event name the rule with its numbers, and 1.0 serves on every node.

What it does not cover: the staging time estimate's numbers (without the artifact store the operator does
not know the source's size, so `bytes` and `estimatedSeconds` are null, as docs/node-cache.md says), and the
agent DaemonSet's own pods (the agents run as processes).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from operator_support import (
    Operator,
    apply,
    condition,
    crash_loop,
    events_of,
    get,
    model_versions,
    node_ips,
    rollout_classes,
    running_operator,
    running_pods,
)
from rollout_support import daily_window

from edgewise import contract
from edgewise.core.observed import NodeInfo
from edgewise.core.rollout.sites import site_key
from edgewise.core.staging import source_nodes
from edgewise.devcluster import demo_models, processes
from edgewise.devcluster.cluster import DevCluster
from edgewise.devcluster.fleet import ZONE_LABEL
from node.bandwidth_support import SLACK, CountingOrigin
from node.cache_support import http
from wait_support import wait_for

MODEL = "inspector"
SITES = sorted(["plant-a", "plant-b", "plant-c"], key=site_key)  # the rollout's hashed order
CANARY = SITES[-1]  # pinned although it comes last in that order: it goes first
SECOND = SITES[0]  # the first other site in that order: {sites: 2} takes it with the canary site
UNTOUCHED = SITES[1]  # no step before the abort reaches it
BUDGETS = {CANARY: 300_000, SECOND: 200_000, UNTOUCHED: 150_000}  # bytes per second from outside the site
DATA = os.urandom(1_200_000)  # 2.0's artifact: 4 s at the canary site's rate, 6 s at the second's
DIGEST = hashlib.sha256(DATA).hexdigest()
ABORT = {"maxFailedPercent": 25, "minNodes": 4}
STEPS = [{"sites": 2, "canarySites": [CANARY]}, {"pause": {}}, {"percent": 100}]
CLASSES = {"arm": "arm64", "x86": "amd64"}  # class → kubernetes.io/arch


@pytest.fixture(scope="module")
def origin() -> Iterator[CountingOrigin]:
    server = CountingOrigin(DATA).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def operator(cluster: DevCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The operator with a byte budget per site (the chart's agent.bandwidth, as the operator reads it)."""
    bandwidth = {"siteLabel": ZONE_LABEL, "sites": {s: {"bytesPerSecond": r} for s, r in BUDGETS.items()}}
    with running_operator(cluster, Path(tmp_path_factory.mktemp("operator")),
                          extra_env={"EDGEWISE_AGENT_BANDWIDTH": json.dumps(bandwidth)}) as op:
        yield op


@dataclass(frozen=True)
class Fleet:
    cluster: DevCluster
    namespace: str
    site_of: dict[str, str]  # node → site
    arch_of: dict[str, str]  # node → kubernetes.io/arch
    ip_of: dict[str, str]  # node → InternalIP, where its agent listens
    operator_token: str  # the operator's token for the agents (audience edgewise-agent)
    v1: Path

    def at(self, *sites: str) -> set[str]:
        return {n for n, s in self.site_of.items() if s in sites}

    def agent(self, node: str) -> str:
        return contract.agent_url(self.ip_of[node])

    def job(self, node: str) -> tuple[int, dict[str, Any]]:
        """The node's agent's prefetch of 2.0, as the operator sees it (404: never asked)."""
        status, _, body = http("GET", f"{self.agent(node)}{contract.AGENT_PREFETCH_PATH}/{DIGEST}", timeout=20,
                               token=self.operator_token)
        return status, json.loads(body or b"{}")

    def model(self) -> dict[str, Any]:
        return get(self.cluster, "edgemodel", MODEL, "-n", self.namespace)

    def classes(self) -> dict[str, dict[str, Any]]:
        return rollout_classes(self.model())


def _agent_metric(url: str, name: str) -> float:
    _, _, body = http("GET", url + "/metrics", timeout=20)
    match = re.search(rf"^{name} (\S+)$", body.decode(), re.MULTILINE)
    assert match, f"{name} not in {url}/metrics"
    return float(match.group(1))


def _answers(url: str) -> bool:
    try:
        return http("GET", url + "/healthz", timeout=5)[0] == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def fleet(cluster: DevCluster, module_namespace: str, module_fleet, operator: Operator, origin: CountingOrigin,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("sites")
    arm, amd = module_fleet({"arm64-cpu": 6}), module_fleet({"amd64-cpu": 3})
    site_of = {**{n: SITES[i // 2] for i, n in enumerate(sorted(arm))},  # two arm64 boards per site
               **{n: SITES[i] for i, n in enumerate(sorted(amd))}}  # one amd64 PC per site
    for node, site in site_of.items():
        cluster.kubectl("label", "node", node, f"{ZONE_LABEL}={site}", "--overwrite")
    ips = node_ips(cluster, list(site_of))
    own, peer = root / "agent-sa.token", root / "agent-peer.token"  # for TokenReviews; for its peers
    own.write_text(operator.agent_token())
    peer.write_text(operator.agent_token(contract.AGENT_AUDIENCE))
    peer_user = f"{contract.SA_PREFIX}{operator.agent_namespace}:{operator.agent_account()}"
    no_proxy = ",".join(ips.values())  # agent to agent stays inside the site
    agents = []
    try:
        for node, ip in ips.items():
            env = {"http_proxy": origin.site_proxy(site_of[node]), "no_proxy": no_proxy}
            agents.append(processes.start(f"agent-{node}", operator.agent_argv(
                node, ip, root / node / "cache", own, "--allow-host", "127.0.0.1", "--peer-user", peer_user,
                "--peer-token-file", str(peer)), root, env))
        for node, ip in ips.items():
            wait_for(lambda ip=ip: _answers(contract.agent_url(ip)), 90, f"the agent of {node} to listen")
        operator_sa = operator.username.rsplit(":", 1)[1]
        token = cluster.kubectl("create", "token", operator_sa, "-n", operator.namespace, "--duration=1h",
                                f"--audience={contract.AGENT_AUDIENCE}").stdout.strip()
        f = Fleet(cluster, module_namespace, site_of, {**dict.fromkeys(arm, "arm64"), **dict.fromkeys(amd, "amd64")},
                  ips, token, demo_models.good(root / "v1" / "model.onnx"))
        yield f
    finally:
        for agent in agents:
            processes.stop(agent)


def _profile(ns: str) -> dict[str, Any]:
    return {"apiVersion": "edgewise.io/v1alpha1", "kind": "DeploymentProfile",
            "metadata": {"name": "sites", "namespace": ns},
            "spec": {"classes": [{"name": name, "nodeSelector": {"kubernetes.io/arch": arch},
                                  "runtime": "onnxruntime", "precision": "fp32"} for name, arch in CLASSES.items()]}}


def _model(f: Fleet, version: str, origin: CountingOrigin, activation: list[dict[str, str]] | None = None
           ) -> dict[str, Any]:
    source = {"uri": f.v1.as_uri(), "sha256": demo_models.sha256(f.v1)} if version == "1.0" else \
        {"uri": f"http://{origin.netloc()}/model.onnx", "sha256": DIGEST}
    rollout: dict[str, Any] = {"steps": STEPS, "analysis": {"provider": "none"}, "abort": ABORT,
                               "progressDeadline": "10m"}
    if activation is not None:
        rollout["windows"] = {"activation": activation}
    return {"apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel",
            "metadata": {"name": MODEL, "namespace": f.namespace},
            "spec": {"profileRef": "sites", "version": version, "source": source,
                     "optimization": {"quantization": "none"}, "rollout": rollout}}


def test_three_sites_wait_for_the_window_stage_one_copy_each_within_budget_and_abort_every_class(
        fleet: Fleet, origin: CountingOrigin) -> None:
    f, nodes = fleet, set(fleet.site_of)
    apply(f.cluster, [_profile(f.namespace), _model(f, "1.0", origin)])
    wait_for(lambda: model_versions(f.cluster, f.namespace, MODEL) == dict.fromkeys(nodes, "1.0"), 180,
             "1.0 on every node")
    assert origin.sent == []  # 1.0 is a file on the nodes' host: the origin has served nothing yet

    # -- 2.0, with an activation window that opens in three hours ---------------------------------------------
    opens = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=3)).replace(second=0, microsecond=0)
    when = opens.strftime("%Y-%m-%dT%H:%M:%SZ")
    apply(f.cluster, _model(f, "2.0", origin, [daily_window(opens, "1h")]))
    classes = wait_for(lambda: (cs := f.classes()) and set(cs) == set(CLASSES)
                       and all(c.get("waitingForWindow") for c in cs.values()) and cs, 90,
                       "both classes waiting for the activation window")
    for name, c in classes.items():
        assert c["windowOpensAt"] == when, (name, c)
        assert c["message"] == f"step 1/3 of 2.0 is waiting for the activation window, which opens at {when}"
        assert c.get("canaryNodes", 0) == 0 and c.get("percent", 0) == 0 and c["canaryVersion"] == "2.0"

    # Meanwhile the nodes of the two sites the first step will move stage 2.0 through their agents.
    staged = f.at(CANARY, SECOND)
    wait_for(lambda: all(f.job(n)[1].get("state") == "ready" for n in staged), 180,
             f"the agents of {sorted(staged)} to have 2.0 cached")
    for node in f.at(UNTOUCHED):  # never asked: the first step does not move them
        assert f.job(node)[0] == 404, node
    classes = f.classes()
    assert all(c.get("waitingForWindow") and c.get("canaryNodes", 0) == 0 for c in classes.values()), classes
    assert model_versions(f.cluster, f.namespace, MODEL) == dict.fromkeys(nodes, "1.0")  # no canary started
    reasons = events_of(f.cluster, f.namespace, MODEL)
    assert not [m for r, m in reasons if r == "StepChanged"], reasons
    for name in CLASSES:
        assert any(r == "WaitingForWindow" and m.startswith(f"class {name}:") for r, m in reasons), (name, reasons)
        assert any(r == "Staged" and m.startswith(f"class {name}:") for r, m in reasons), (name, reasons)

    # One copy per site, from its source node; the site's other nodes from that node's agent.
    assert origin.bytes_by_site() == {CANARY: len(DATA), SECOND: len(DATA)}  # and nothing from UNTOUCHED
    assert sorted(origin.gets) == sorted([CANARY, SECOND]) and origin.strays == []
    infos = [NodeInfo(name=n, labels={ZONE_LABEL: s}, address=f.ip_of[n]) for n, s in f.site_of.items()]
    sources = {site: node.name for site, node in source_nodes(infos, ZONE_LABEL).items()}
    for node in staged:
        site, url = f.site_of[node], f.agent(node)
        health = json.loads(http("GET", url + "/healthz", timeout=20)[2])["bandwidth"]
        assert (health["site"], health["bytesPerSecond"]) == (site, BUDGETS[site]), (node, health)  # the operator's
        if node == sources[site]:
            assert f.job(node)[1].get("via") in ("source", None)  # None: a peer's job, done
            assert _agent_metric(url, "edgewise_agent_source_bytes_total") == len(DATA), node
        else:
            assert f.job(node)[1]["via"] == f"peer {f.ip_of[sources[site]]}", node
            assert _agent_metric(url, "edgewise_agent_source_bytes_total") == 0, node
            assert _agent_metric(url, "edgewise_agent_peer_bytes_total") == len(DATA), node
    # ... never faster than the site's budget: sliding one- and three-second windows at the origin, with the
    # bucket's burst and the sockets' buffers as tolerance (SLACK, as in tests/node/test_bandwidth_sites.py;
    # the limiter caps the rate, a busy machine only makes the windows emptier).
    for site in (CANARY, SECOND):
        rate = BUDGETS[site]
        busiest = origin.busiest_window(site, 1.0)
        assert busiest <= rate + SLACK, f"{site}: {busiest} bytes in one second against a budget of {rate}/s"
        assert busiest < len(DATA)  # the limit did something: unthrottled, one window holds it all
        assert origin.busiest_window(site, 3.0) <= 3 * rate + SLACK, site
        times = [t for t, at, _ in origin.sent if at == site]
        assert times[-1] - times[0] >= (len(DATA) - SLACK) / rate, site  # and over the whole copy

    # The status shows each site's staging: every site of the class, its nodes and budget. The size of a
    # source served as is is unknown to the operator (no artifact store here), so no bytes and no time.
    for name, c in f.classes().items():
        per_site = {s["site"]: s for s in c["staging"]}
        arch = CLASSES[name]
        assert {s: (p["nodes"], p["bytesPerSecond"]) for s, p in per_site.items()} == {
            s: (sum(1 for n in f.at(s) if f.arch_of[n] == arch), BUDGETS[s]) for s in SITES}, (name, c["staging"])
        assert all(p.get("bytes") is None and p.get("estimatedSeconds") is None for p in per_site.values())

    # -- the window opens: the first step moves exactly the two sites' nodes, with nothing more to download ---
    sent = len(origin.sent)
    apply(f.cluster, _model(f, "2.0", origin, [daily_window(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30),
                                                            "2h")]))

    def at_the_pause() -> dict[str, dict[str, Any]] | None:
        cs = f.classes()
        if set(cs) != set(CLASSES) or not all(c.get("state") == "Paused" for c in cs.values()):
            return None
        ready = [p for p in running_pods(f.cluster, f.namespace, MODEL)
                 if p["metadata"]["labels"]["edgewise.io/version"] == "2.0"
                 and all(c.get("ready") for c in p["status"].get("containerStatuses") or [{}])]
        versions = model_versions(f.cluster, f.namespace, MODEL)
        expected = {n: "2.0" if n in staged else "1.0" for n in nodes}
        return cs if len(ready) == len(staged) and versions == expected else None

    classes = wait_for(at_the_pause, 180, f"2.0 Ready on exactly the nodes of {CANARY} and {SECOND}, paused")
    assert {name: c["canaryNodes"] for name, c in classes.items()} == {"arm": 4, "x86": 2}
    assert all(not c.get("waitingForWindow") and c["canarySites"] == [CANARY] for c in classes.values())
    assert not f.model()["status"]["rollout"].get("aborted")
    assert len(origin.sent) == sent and origin.strays == []  # staged ahead: the step downloaded nothing more

    # -- the amd64 canaries crash-loop: 2 of the 6 nodes that tried, more than 25 % ----------------------------
    failing = [p for p in running_pods(f.cluster, f.namespace, MODEL)
               if p["metadata"]["labels"]["edgewise.io/version"] == "2.0"
               and p["metadata"]["labels"]["edgewise.io/class"] == "x86"]
    assert {p["spec"]["nodeName"] for p in failing} == {n for n in staged if f.arch_of[n] == "amd64"}
    for pod in failing:
        crash_loop(f.cluster, f.namespace, pod)
    message = ("abort: 2 of 6 nodes that tried 2.0 failed (33.3% > maxFailedPercent 25, minNodes 4): "
               "x86 2 crash-looped")

    def aborted() -> dict[str, Any] | None:
        obj = f.model()
        done = obj["status"]["rollout"].get("aborted") and all(
            c.get("state") == "RolledBack" for c in rollout_classes(obj).values())
        return obj if done else None

    obj = wait_for(aborted, 120, "the abort rule rolling every class back")
    record = obj["status"]["rollout"]["aborted"]
    assert (record["message"], record["version"]) == (message, "2.0")
    for name, c in rollout_classes(obj).items():  # the arm64 class too, whose canaries were fine
        assert message in c["message"] and not c.get("canaryRevision"), (name, c)
    tallies = {name: c["tally"] for name, c in rollout_classes(obj).items()}
    assert {n: (t["tried"], t.get("crashLooped", 0)) for n, t in tallies.items()} == {"arm": (4, 0), "x86": (2, 2)}
    degraded = condition(obj, "Degraded")
    assert (degraded["status"], degraded["reason"], degraded["message"]) == ("True", "AbortRuleFired", message)
    wait_for(lambda: ("AbortRuleFired", message) in events_of(f.cluster, f.namespace, MODEL), 60,
             "the AbortRuleFired Event")
    wait_for(lambda: model_versions(f.cluster, f.namespace, MODEL) == dict.fromkeys(nodes, "1.0")
             and len(running_pods(f.cluster, f.namespace, MODEL)) == len(nodes), 180, "1.0 on every node again")
    assert UNTOUCHED not in origin.bytes_by_site() and origin.strays == []  # the third site never downloaded
