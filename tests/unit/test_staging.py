"""One copy per site: who downloads from the source, what the others are told, and the estimate."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json

import pytest
from planning_support import fleet, model, profile_of
from test_rollout_model import live

from edgewise import contract
from edgewise.api.settings import Bandwidth, OperatorSettings, SiteBudget
from edgewise.core.agent import agent_args, agent_daemonset
from edgewise.core.observed import NodeInfo
from edgewise.core.plan import plan_model
from edgewise.core.rollout import Observed, StageRequest, advance
from edgewise.core.staging import estimate, site_stages, source_nodes, staging_seconds, summary
from edgewise.kube.node_agents import bodies

ZONE = "topology.kubernetes.io/zone"


def node(name: str, site: str | None, ready: bool = True, address: str = "") -> NodeInfo:
    labels = {ZONE: site} if site is not None else {}
    return NodeInfo(name=name, labels=labels, ready=ready, address=address or f"10.0.{ord(name[0])}.{name[1:]}")


def lowest(*names: str) -> str:
    return min(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())


FLEET = [node(f"a{i}", "factory-a") for i in range(5)] + [node(f"b{i}", "store-b") for i in range(3)]
BUDGETS = Bandwidth(default=SiteBudget(bytes_per_second=1_000_000),
                    sites={"store-b": SiteBudget(bytes_per_second=250_000, daily_bytes=10_000_000)})


def test_each_site_has_one_source_node_the_lowest_hash_of_its_ready_nodes() -> None:
    sources = source_nodes(FLEET, ZONE)
    assert sources["factory-a"].name == lowest(*(f"a{i}" for i in range(5)))
    assert sources["store-b"].name == lowest("b0", "b1", "b2")
    assert source_nodes(list(reversed(FLEET)), ZONE) == sources  # the order nodes are listed in does not matter
    down = sources["store-b"].name
    fleet = [node(n.name, "store-b", ready=False) if n.name == down else n for n in FLEET]
    assert source_nodes(fleet, ZONE)["store-b"].name == lowest(*({"b0", "b1", "b2"} - {down}))  # NotReady: skipped
    windows = {lowest("b0", "b1", "b2")}  # a node the agent does not run on (its DaemonSet's node selector)
    labelled = [NodeInfo(n.name, {**n.labels, "kubernetes.io/os": "windows" if n.name in windows else "linux"},
                         address=n.address) for n in FLEET]
    assert source_nodes(labelled, ZONE, {"kubernetes.io/os": "linux"})["store-b"].name not in windows


def test_a_stage_puts_the_sites_source_first_even_when_it_does_not_move_and_the_others_fetch_from_it() -> None:
    source_a = source_nodes(FLEET, ZONE)["factory-a"]
    moving = [n for n in FLEET if n.name != source_a.name and n.labels[ZONE] == "factory-a"][:2]
    [stage] = site_stages(moving, FLEET, BUDGETS)
    assert stage.site == "factory-a" and stage.source == source_a and stage.others == tuple(moving)
    assert stage.bytes_per_second == 1_000_000 and stage.daily_bytes is None  # the default budget
    req = StageRequest(class_name="c", uri="http://src/m.onnx", sha256="0" * 64,
                       nodes=(*moving, source_a), sites=(stage,))
    sources, others = bodies(req, {"uri": req.uri, "sha256": req.sha256, "model": "m", "namespace": "ns"})
    calls = sources + others  # sources are called first, others once those answered
    assert [n.name for n, _ in calls] == [source_a.name, *(n.name for n in moving)]
    first, *rest = (json.loads(b) for _, b in calls)
    assert first["peers"] == [] and first["budget"]["bytesPerSecond"] == 1_000_000 and first["site"] == "factory-a"
    assert all(b["peers"] == [source_a.address] for b in rest)


def test_without_one_copy_per_site_or_without_a_ready_node_every_node_goes_to_the_source() -> None:
    moving = [n for n in FLEET if n.labels[ZONE] == "store-b"]
    [stage] = site_stages(moving, FLEET, BUDGETS.model_copy(update={"one_copy_per_site": False}))
    assert stage.source is None and stage.others == tuple(moving)
    [stage] = site_stages(moving, [node(n.name, "store-b", ready=False) for n in moving], BUDGETS)
    assert stage.source is None
    sources, calls = bodies(StageRequest("c", "u", "0" * 64, tuple(moving), (stage,)), {})
    assert sources == [] and all(json.loads(b)["peers"] == [] for _, b in calls)
    assert json.loads(calls[0][1])["budget"] == {"bytesPerSecond": 250_000, "dailyBytes": 10_000_000,
                                                 "timeZone": "UTC"}


def test_the_staging_estimate_is_one_copy_per_site_at_the_sites_rate_plus_days_past_the_cap() -> None:
    sites = estimate(FLEET, 20_000_000, BUDGETS)
    by_site = {s.site: s for s in sites}
    assert by_site["factory-a"].bytes == 20_000_000 and by_site["factory-a"].estimated_seconds == 20
    assert by_site["factory-a"].nodes == 5
    # 20 MB past a 10 MB daily cap: the second half waits for the next day
    assert by_site["store-b"].estimated_seconds == 86400 and by_site["store-b"].daily_bytes == 10_000_000
    assert summary(sites) == 86400
    unpooled = estimate(FLEET, 20_000_000, BUDGETS.model_copy(update={"one_copy_per_site": False}))
    assert {s.site: s.bytes for s in unpooled} == {"factory-a": 100_000_000, "store-b": 60_000_000}
    assert estimate(FLEET, 0, BUDGETS)[0].estimated_seconds is None  # size unknown: no made-up number
    assert staging_seconds(5_000_000, None, None) == 0  # no budget: nothing paces it


@pytest.mark.parametrize("raw, expected", [
    ('{"default": {"bytesPerSecond": 5000000}, "sites": {"store-b": {"dailyBytes": 1000}}}',
     {"store-b": SiteBudget(daily_bytes=1000), "elsewhere": SiteBudget(bytes_per_second=5_000_000)}),
])
def test_budgets_come_from_the_environment_as_json_and_reach_the_agents_flags(raw: str, expected: dict) -> None:
    settings = OperatorSettings.from_env({"EDGEWISE_AGENT_BANDWIDTH": raw})
    assert {site: settings.agent_bandwidth.budget(site) for site in expected} == expected
    args = agent_args(settings, "system:serviceaccount:edgewise-system:edgewise-operator")
    assert args[args.index("--bytes-per-second") + 1] == "5000000"
    assert args[args.index("--peer-user") + 1] == "system:serviceaccount:edgewise-node:edgewise-node-agent"
    pod = agent_daemonset(settings)["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == contract.AGENT_TOKEN_VOLUME]  # its token for its peers
    assert volume["projected"]["sources"][0]["serviceAccountToken"]["audience"] == contract.AGENT_AUDIENCE
    assert {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]} >= {contract.AGENT_TOKEN_DIR}
    assert args[args.index("--peer-token-file") + 1] == contract.AGENT_TOKEN_FILE
    with pytest.raises(ValueError, match="IANA"):
        OperatorSettings.from_env({"EDGEWISE_AGENT_BANDWIDTH": '{"timeZone": "Nowhere/Land"}'})


def test_a_rollout_step_stages_per_site_and_its_status_shows_the_estimate() -> None:
    nodes = [dataclasses.replace(n, address=f"10.1.0.{i}",
                                 labels={**n.labels, ZONE: "factory-a" if i < 3 else "store-b"})
             for i, n in enumerate(fleet(arm64_cpu=5))]
    profile = profile_of({"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"}, "runtime": "onnxruntime",
                          "precision": "fp32"})
    rollout = {"steps": [{"percent": 50}, {"percent": 100}], "analysis": {"interval": "5s"}}
    settings = OperatorSettings()
    t0 = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
    observed = Observed(nodes, [], bandwidth=BUDGETS, artifact_bytes={"arm": 5_000_000})

    def step(version: str, status: object = None, existing: list | None = None) -> object:
        m = model(version=version, profile_ref="p", rollout=rollout)
        if status is not None:
            m = m.model_copy(update={"status": m.status.model_copy(update={"rollout": status})})
        plan = plan_model(m, profile, nodes, existing or [], settings)
        return advance(m, plan, dataclasses.replace(observed, workloads=existing or []), None, t0)

    first = step("1")
    assert first.status.class_state("arm").staging is None  # nothing rolling out: nothing to stage
    second = step("2", first.status, live([w.manifest for w in first.apply]))
    [req] = second.stage
    assert {s.site for s in req.sites} == {n.labels[ZONE] for n in req.nodes}
    for site in req.sites:
        assert site.source == source_nodes(nodes, ZONE)[site.site]  # the site's source node, moving or not
        assert site.source not in site.others and set(site.others) <= set(req.nodes)
    arm = second.status.class_state("arm")
    assert {s.site: (s.nodes, s.bytes, s.estimated_seconds) for s in arm.staging} == {
        "factory-a": (3, 5_000_000, 5), "store-b": (2, 5_000_000, 20)}
    assert arm.staging_seconds == 20
