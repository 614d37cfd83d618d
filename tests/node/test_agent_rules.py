"""The agent's pure rules: who may call (TokenReview results → roles) and where downloads may go."""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json

import pytest

from edgewise.cli import agent as cli
from edgewise.node.auth import (
    IN_CLUSTER_DIR,
    NODE_NAME_EXTRA,
    POD_NAME_EXTRA,
    Caller,
    Policy,
    Role,
    bearer_token,
    caller_from_review,
    token_expiry,
)
from edgewise.shared.destinations import Destinations, RefusedDestination, why_refused

OPERATOR = "system:serviceaccount:edgewise-system:edgewise-operator"
POLICY = Policy(node_name="node-a", operator_users=frozenset({OPERATOR}))


def review(authenticated: bool = True, audiences: tuple[str, ...] = ("edgewise-agent",), **extra: str) -> dict:
    return {"status": {"authenticated": authenticated, "audiences": list(audiences),
                       "user": {"username": "system:serviceaccount:vision:default",
                                "extra": {k: [v] for k, v in extra.items()}}}}


def test_only_a_pod_bound_to_this_node_or_the_operator_get_a_role() -> None:
    pod = caller_from_review(review(**{NODE_NAME_EXTRA: "node-a", POD_NAME_EXTRA: "p"}), "edgewise-agent")
    assert pod == Caller("system:serviceaccount:vision:default", node="node-a", pod="p")
    assert POLICY.roles(pod) == {Role.NODE_POD} and pod.namespace == "vision"
    elsewhere = caller_from_review(review(**{NODE_NAME_EXTRA: "node-b", POD_NAME_EXTRA: "p"}), "edgewise-agent")
    assert elsewhere is not None and POLICY.roles(elsewhere) == set()
    unbound = caller_from_review(review(), "edgewise-agent")  # a ServiceAccount token bound to no pod
    assert unbound is not None and POLICY.roles(unbound) == set()
    assert POLICY.roles(Caller(OPERATOR)) == {Role.OPERATOR}
    assert POLICY.roles(Caller("system:node:node-a", node="node-a", pod="p")) == set()  # not a ServiceAccount
    assert POLICY.allows(pod, [Role.NODE_POD, Role.OPERATOR]) and not POLICY.allows(Caller(OPERATOR), [Role.NODE_POD])


def test_reviews_that_do_not_authenticate_for_the_audience_give_no_caller() -> None:
    assert caller_from_review(review(authenticated=False), "edgewise-agent") is None
    assert caller_from_review(review(audiences=("https://kubernetes.default.svc",)), "edgewise-agent") is None
    assert caller_from_review({}, "edgewise-agent") is None


def test_bearer_tokens_and_their_expiry() -> None:
    assert bearer_token("Bearer abc.def") == "abc.def" and bearer_token("bearer  x ") == "x"
    assert bearer_token("Basic dXNlcjpwYXNz") == "" and bearer_token("") == ""
    payload = base64.urlsafe_b64encode(json.dumps({"exp": 1700000000}).encode()).decode().rstrip("=")
    assert token_expiry(f"h.{payload}.s") == 1700000000.0
    assert token_expiry("opaque") is None


def resolver(table: dict[str, list[str]]):  # noqa: ANN201
    return lambda host, port: [ipaddress.ip_address(a) for a in table[host]]


@pytest.mark.parametrize("address", [
    "127.0.0.1", "::1", "169.254.169.254", "169.254.1.1", "fe80::1", "0.0.0.0", "::", "fd00:ec2::254",
    "100.100.100.200", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "224.0.0.1",
])
def test_loopback_link_local_metadata_and_unspecified_are_refused(address: str) -> None:
    assert why_refused(ipaddress.ip_address(address), deny_private=False)


def test_private_addresses_only_by_setting() -> None:
    for address in ("10.1.2.3", "192.168.1.10", "172.16.0.1", "fd12::1", "100.64.0.1"):
        assert why_refused(ipaddress.ip_address(address), deny_private=False) is None
        assert why_refused(ipaddress.ip_address(address), deny_private=True)
    assert why_refused(ipaddress.ip_address("93.184.216.34"), deny_private=True) is None


def test_names_are_judged_by_every_address_they_resolve_to_unless_allowed_by_name() -> None:
    table = {"models.example": ["93.184.216.34"], "rebound.example": ["93.184.216.34", "169.254.169.254"],
             "mirror.local": ["127.0.0.1"]}
    rules = Destinations(frozenset({"mirror.local"}), resolver=resolver(table))
    assert rules.vet("models.example", 443) == [ipaddress.ip_address("93.184.216.34")]
    with pytest.raises(RefusedDestination, match="169.254.169.254, a cloud metadata address"):
        rules.vet("rebound.example", 443)
    assert rules.vet("mirror.local", 80) == [ipaddress.ip_address("127.0.0.1")]
    with pytest.raises(RefusedDestination, match="--allow-host 127.0.0.1"):
        Destinations.of(["mirror.local"]).vet("127.0.0.1", 80)  # the address is not the allowed name
    assert Destinations.of(["127.0.0.1", "[::1]"]).vet("::1", 80) == [ipaddress.ip_address("::1")]


def test_the_agent_asks_the_in_cluster_apiserver_unless_told_another(monkeypatch, tmp_path) -> None:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())

    def api(*flags: str):  # noqa: ANN202
        return cli.verifier(parser.parse_args(["agent", "--node-name", "node-a", *flags])).api

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ValueError, match="--apiserver-token-file"):
        api()
    with pytest.raises(ValueError, match="--apiserver-token-file"):
        api("--apiserver", "https://10.0.0.1:6443")  # outside a pod the agent's own token must be named
    token = tmp_path / "token"
    outside = api("--apiserver", "https://10.0.0.1:6443", "--apiserver-token-file", str(token))
    assert (outside.url, outside.token_file, outside.ca_file) == ("https://10.0.0.1:6443", token, None)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    inside = api()
    assert (inside.url, inside.token_file, inside.ca_file) == (
        "https://[fd00::1]:443", IN_CLUSTER_DIR / "token", IN_CLUSTER_DIR / "ca.crt")
    other = api("--apiserver", "https://10.0.0.1:6443", "--apiserver-ca", str(tmp_path / "ca.crt"))
    assert (other.url, other.token_file, other.ca_file) == (
        "https://10.0.0.1:6443", IN_CLUSTER_DIR / "token", tmp_path / "ca.crt")


def test_a_download_started_again_is_the_newest_job_kept_not_the_oldest(tmp_path) -> None:
    from edgewise.node.agent import MAX_JOBS_KEPT, Agent, Job
    from edgewise.node.cache import NodeCache

    agent = Agent(NodeCache(tmp_path), verifier=None, policy=POLICY)  # type: ignore[arg-type]
    try:
        first = "0" * 64
        agent._remember(Job(sha256=first, uri="http://a/m", model=None, state="failed"))
        for i in range(1, MAX_JOBS_KEPT):
            agent._remember(Job(sha256=f"{i:064x}", uri="http://a/m", model=None))
        retry = Job(sha256=first, uri="http://a/m", model=None)  # the failed one asked for again
        agent._remember(retry)
        agent._remember(Job(sha256=f"{MAX_JOBS_KEPT:064x}", uri="http://a/m", model=None))
        assert agent.jobs.get(first) is retry  # in flight: its waiters and its prefetch state need it
        assert len(agent.jobs) == MAX_JOBS_KEPT
    finally:
        agent.stop()
