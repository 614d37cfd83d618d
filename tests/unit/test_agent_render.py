"""How the operator renders the agent's callers: the runtime pods' projected token, the agent's identity."""

from __future__ import annotations

from planning_support import factory_floor, fleet, model, restricted_violations

from edgewise import contract
from edgewise.api.settings import OperatorSettings
from edgewise.core.agent import agent_daemonset
from edgewise.core.plan import plan_model

OPERATOR = "system:serviceaccount:edgewise-system:edgewise-operator"


def test_only_the_fetch_init_container_gets_a_short_lived_pod_bound_token_for_the_agent() -> None:
    plan = plan_model(model(), factory_floor(), fleet(jetson_orin=1, arm64_cpu=1, amd64_cpu=1), [],
                      OperatorSettings())
    assert plan.workloads
    for w in plan.workloads:
        pod = w.manifest["spec"]["template"]["spec"]
        assert restricted_violations(pod) == []
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes[contract.AGENT_TOKEN_VOLUME] == {"name": "agent-token", "projected": {"sources": [
            {"serviceAccountToken": {"audience": "edgewise-agent", "expirationSeconds": 600, "path": "token"}}]}}
        assert not any("secret" in v for v in pod["volumes"])  # no Secret a namespace user could read
        (fetch,) = pod["initContainers"]
        mount = {"name": "agent-token", "mountPath": contract.AGENT_TOKEN_DIR, "readOnly": True}
        assert mount in fetch["volumeMounts"]
        args = fetch["args"]
        assert args[args.index("--agent-token-file") + 1] == contract.AGENT_TOKEN_FILE
        for server in pod["containers"]:
            assert all(m["name"] != "agent-token" for m in server["volumeMounts"])


def test_the_agent_knows_its_node_its_operator_and_its_allowed_hosts() -> None:
    settings = OperatorSettings(agent_allow_hosts="mirror.local, 127.0.0.1", agent_deny_private=True,
                                agent_download_workers=3, agent_download_deadline_seconds=900)
    ds = agent_daemonset(settings, OPERATOR)
    pod = ds["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "edgewise-node-agent" and pod["automountServiceAccountToken"] is True
    (agent,) = pod["containers"]
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in agent["env"]
    args = agent["args"]
    pairs = list(zip(args, args[1:], strict=False))
    assert ("--operator-user", OPERATOR) in pairs
    assert ("--allow-host", "mirror.local") in pairs and ("--allow-host", "127.0.0.1") in pairs
    assert "--deny-private" in args and ("--download-workers", "3") in pairs
    assert ("--download-deadline", "900") in pairs
    plain = agent_daemonset(OperatorSettings())["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--operator-user" not in plain and "--allow-host" not in plain and "--deny-private" not in plain


def test_the_agent_parses_what_the_operator_renders() -> None:
    import argparse

    from edgewise.cli import agent as cli

    ds = agent_daemonset(OperatorSettings(agent_allow_hosts="mirror.local"), OPERATOR)
    args = [a.replace(f"$({contract.AGENT_HOST_ENV})", "10.0.0.5")
            for a in ds["spec"]["template"]["spec"]["containers"][0]["args"]]
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    config = cli.config(parser.parse_args(["agent", *args, "--node-name", "node-a"]))
    assert config.policy.operator_users == {OPERATOR} and config.policy.node_name == "node-a"
    assert config.destinations.allow_hosts == {"mirror.local"} and config.max_bytes == 20 * 2**30
