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


# ---- TensorRT plans: the node's own plan key -----------------------------------------------------------------

PLAN_CHECK = OperatorSettings(node_trusted_keys_config_map="edgewise-trust", node_plan_check=True,
                              agent_cache_dir="/data/edgewise/cache/")


def _agent_args(settings: OperatorSettings) -> list[str]:
    return agent_daemonset(settings)["spec"]["template"]["spec"]["containers"][0]["args"]


def _by_runtime(settings: OperatorSettings) -> dict[str, dict]:
    plan = plan_model(model(), factory_floor(), NODES, [], settings)
    return {w.manifest["metadata"]["labels"]["edgewise.io/runtime"]: w.manifest["spec"]["template"]["spec"]
            for w in plan.workloads}


def test_with_node_trust_each_agent_attests_plans_with_a_key_kept_in_its_cache_and_pods_stay_restricted() -> None:
    from edgewise.cli import agent as cli

    assert "--plan-signing-key" not in _agent_args(OperatorSettings())
    args = _agent_args(TRUST_ON)
    key = args[args.index("--plan-signing-key") + 1]
    assert key == f"{contract.AGENT_CACHE_DIR}/{contract.PLAN_KEY_SUBDIR}/{contract.PLAN_KEY_FILE}"
    assert key.startswith(args[args.index("--cache-dir") + 1] + "/")  # in the hostPath: kept across restarts
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    assert str(parser.parse_args(["agent", "--plan-signing-key", key]).plan_signing_key) == key
    assert "--plan-signing-key" in _agent_args(OperatorSettings(node_plan_check=True))  # implied by the check
    for pod in _pods(TRUST_ON):  # node trust alone checks no plan: no hostPath in any runtime pod
        assert restricted_violations(pod) == []
        assert _fetch_request(pod["initContainers"][0]).trusted_plan_keys == ""


def test_with_the_plan_check_tensorrt_pods_read_the_nodes_public_plan_key_through_a_read_only_host_path() -> None:
    pods = _by_runtime(PLAN_CHECK)
    assert restricted_violations(pods["onnxruntime"]) == []  # it loads no plan
    assert _fetch_request(pods["onnxruntime"]["initContainers"][0]).trusted_plan_keys == ""
    pod = pods["triton-tensorrt"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[contract.PLAN_KEYS_VOLUME] == {"name": "plan-key", "hostPath": {
        "path": "/data/edgewise/cache/plan-key", "type": "Directory"}}  # just the key's directory, made by the agent
    assert restricted_violations(pod) == ["volume plan-key: ['hostPath']"]  # the one exception
    (fetch,) = pod["initContainers"]
    request = _fetch_request(fetch)
    assert request.trusted_plan_keys == f"{contract.PLAN_KEYS_DIR}/{contract.PLAN_PUBLIC_KEY_FILE}"
    assert request.trusted_keys == contract.TRUSTED_KEYS_DIR
    assert {"name": "plan-key", "mountPath": contract.PLAN_KEYS_DIR, "readOnly": True} in fetch["volumeMounts"]
    for server in pod["containers"]:
        assert all(m["name"] != "plan-key" for m in server["volumeMounts"])
    # The file the fetch reads is the public key the agent writes beside the key it is given.
    from edgewise.shared.trust.keys import public_key_path

    args = _agent_args(PLAN_CHECK)
    in_agent = public_key_path(args[args.index("--plan-signing-key") + 1])
    assert str(in_agent.relative_to(contract.AGENT_CACHE_DIR)) == f"{contract.PLAN_KEY_SUBDIR}/{in_agent.name}"
    assert request.trusted_plan_keys == f"{contract.PLAN_KEYS_DIR}/{in_agent.name}"
