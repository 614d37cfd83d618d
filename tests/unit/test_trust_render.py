"""What the operator renders for trust on the nodes: the fetch container always pins the model's source digest;
trusted keys (a ConfigMap volume and --trusted-keys, in fetch and agent) only when a setting names them; staging
bodies pin the source too."""

from __future__ import annotations

import argparse
import json

from planning_support import SHA, factory_floor, fleet, model, restricted_violations

from edgewise import contract
from edgewise.api.settings import OperatorSettings
from edgewise.core.agent import agent_daemonset
from edgewise.core.plan import plan_model
from edgewise.core.rollout.all_classes import StageRequest
from edgewise.kube.node_agents import bodies

NODES = fleet(jetson_orin=1, arm64_cpu=1, amd64_cpu=1)
TRUST_ON = OperatorSettings(node_trusted_keys_config_map="edgewise-trust")


def _pods(settings: OperatorSettings) -> list[dict]:
    plan = plan_model(model(), factory_floor(), NODES, [], settings)
    runtimes = {w.manifest["metadata"]["labels"]["edgewise.io/runtime"] for w in plan.workloads}
    assert runtimes == {"onnxruntime", "triton-tensorrt"}  # both runtimes are covered
    return [w.manifest["spec"]["template"]["spec"] for w in plan.workloads]


def _fetch_request(fetch: dict) -> contract.FetchRequest:
    parser = argparse.ArgumentParser()
    contract.FetchRequest.add_arguments(parser)
    return contract.FetchRequest.from_args(parser.parse_args(fetch["args"]))


def test_the_fetch_pins_the_source_digest_and_mounts_no_keys_by_default() -> None:
    for pod in _pods(OperatorSettings()):
        (fetch,) = pod["initContainers"]
        request = _fetch_request(fetch)
        assert request.source_sha256 == SHA and request.trusted_keys == ""
        assert "--trusted-keys" not in fetch["args"]
        assert not [v for v in pod["volumes"] if v["name"] == contract.TRUSTED_KEYS_VOLUME]


def test_with_a_trusted_keys_config_map_the_fetch_verifies_with_it() -> None:
    for pod in _pods(TRUST_ON):
        assert restricted_violations(pod) == []
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes[contract.TRUSTED_KEYS_VOLUME] == {"name": "trusted-keys",
                                                         "configMap": {"name": "edgewise-trust"}}
        (fetch,) = pod["initContainers"]
        assert _fetch_request(fetch).trusted_keys == contract.TRUSTED_KEYS_DIR
        assert {"name": "trusted-keys", "mountPath": contract.TRUSTED_KEYS_DIR, "readOnly": True} \
            in fetch["volumeMounts"]
        for server in pod["containers"]:  # the serving containers verify nothing: no keys there
            assert all(m["name"] != "trusted-keys" for m in server["volumeMounts"])


def test_the_agent_gets_the_trusted_keys_only_when_named() -> None:
    from edgewise.cli import agent as cli

    plain = agent_daemonset(OperatorSettings())["spec"]["template"]["spec"]
    assert "--trusted-keys" not in plain["containers"][0]["args"]
    assert all(v["name"] != "trusted-keys" for v in plain["volumes"])
    pod = agent_daemonset(TRUST_ON)["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    args = agent["args"]
    assert args[args.index("--trusted-keys") + 1] == contract.TRUSTED_KEYS_DIR
    assert {"name": "trusted-keys", "configMap": {"name": "edgewise-trust"}} in pod["volumes"]
    assert {"name": "trusted-keys", "mountPath": contract.TRUSTED_KEYS_DIR, "readOnly": True} \
        in agent["volumeMounts"]
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    parsed = parser.parse_args(["agent", *[a.replace(f"$({contract.AGENT_HOST_ENV})", "10.0.0.5") for a in args],
                                "--node-name", "n"])
    assert str(parsed.trusted_keys) == contract.TRUSTED_KEYS_DIR


def test_staging_bodies_pin_the_source() -> None:
    nodes = tuple(fleet(arm64_cpu=2))
    _, calls = bodies(StageRequest("c", "http://a/m", "0" * 64, nodes, source_sha256=SHA), {"uri": "http://a/m"})
    assert all(json.loads(b)["sourceSha256"] == SHA for _, b in calls)
    _, unpinned = bodies(StageRequest("c", "http://a/m", "0" * 64, nodes), {"uri": "http://a/m"})
    assert all("sourceSha256" not in json.loads(b) for _, b in unpinned)


def test_a_step_stages_with_the_models_source() -> None:
    from test_rollout_model import live, run

    first = run("1")
    existing = live([w.manifest for w in first.apply])
    second = run("2", status=first.status, existing=existing)
    assert second.stage and all(s.source_sha256 == SHA for s in second.stage), second.stage
