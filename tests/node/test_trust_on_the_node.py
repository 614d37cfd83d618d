"""Verification on the node, with the real agent process and `edgewise fetch`: every refusal the trust issue
lists, first with the source up (the fill is refused) and then with the source unreachable (what is cached is
refused, offline, from the pinned keys alone); each time the model that was serving keeps serving."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cache_support import OPERATOR, POD, AgentProcess, SourceServer, artifact_url, get_json
from cache_support import pod_http as http

from edgewise import contract
from edgewise.devcluster.processes import free_port
from edgewise.node import fetch as fetch_mod
from edgewise.node.trust import TrustRefused
from edgewise.shared.trust.keys import Signer, generate_ec, public_pem
from edgewise.shared.trust.statement import DerivedModel, Gate, SourceSignature, Statement, sign_statement
from wait_support import wait_for

SOURCE_SHA = hashlib.sha256(b"the signed fp32 source").hexdigest()
OTHER_SOURCE = hashlib.sha256(b"another model's source").hexdigest()
V1, V2, V3 = (f"int8 artifact version {i} ".encode() * 20_000 for i in (1, 2, 3))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def attestation(artifact: bytes, signer: Signer, source: str = SOURCE_SHA, signed: bool = True) -> bytes:
    return sign_statement(Statement("model.onnx", sha256(artifact), DerivedModel(
        source_uri="https://models.example/m.onnx", source_sha256=source,
        source_signature=SourceSignature("key 0123456789abcdef", "e" * 64) if signed else None,
        technique="int8 dynamic", precision="int8", runtime="onnxruntime",
        gates={"accuracy": Gate(True, {"minCosine": 0.999})}, versions={"edgewise": "0.1.0"})), signer)


def publish(source: SourceServer, name: str, artifact: bytes, envelope: bytes | None) -> str:
    """The artifact at /<name>, its attestation beside it (contract.attestation_uri), as a store serves them."""
    uri = source.add(f"/{name}", artifact)
    if envelope is not None:
        source.add(f"/{name}{contract.ATTESTATION_SUFFIX}", envelope)
    return uri


def trusted(tmp_path: Path, *signers: Signer, name: str = "keys") -> Path:
    """A directory of PEM public keys, as a ConfigMap mounted on the node would be."""
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    for f in d.iterdir():
        f.unlink()
    for s in signers:
        (d / f"{s.key_id[:12]}.pem").write_bytes(public_pem(s.public_key()))
    return d


def get(agent: AgentProcess, data: bytes, uri: str = "", source: str = SOURCE_SHA) -> tuple[int, bytes]:
    url = artifact_url(agent, sha256(data), uri, "detector") + f"&source={source}"  # model= is always there
    status, _, body = http("GET", url)
    return status, body


def metrics_text(agent: AgentProcess) -> str:
    status, _, body = http("GET", agent.url + "/metrics")
    assert status == 200
    return body.decode()


def refusals(agent: AgentProcess) -> dict[str, float]:
    out = {}
    for line in metrics_text(agent).splitlines():
        if line.startswith("edgewise_agent_trust_refusals_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = float(line.rsplit(" ", 1)[1])
    return out


def assert_refused(agent: AgentProcess, data: bytes, uri: str, kind: str, source: str = SOURCE_SHA) -> None:
    status, body = get(agent, data, uri, source)
    assert status == 403, (status, body[:300])
    assert json.loads(body)["kind"] == kind, body
    assert refusals(agent).get(kind, 0) >= 1


def assert_still_serving(agent: AgentProcess, data: bytes = V1) -> None:
    """V1, cached before, is still served, from the cache (no source needed)."""
    status, body = get(agent, data)
    assert status == 200 and body == data


@pytest.fixture
def key() -> Signer:
    return generate_ec()


@pytest.fixture
def serving(source: SourceServer, agents: Callable[..., AgentProcess], tmp_path: Path, key: Signer
            ) -> Callable[..., AgentProcess]:
    """An agent trusting `key` (and the keys given), already serving V1 (attested, from SOURCE_SHA)."""
    def start(*signers: Signer, flags: tuple[str, ...] = ()) -> AgentProcess:
        agent = agents("--trusted-keys", str(trusted(tmp_path, key, *signers)), *flags)
        uri = publish(source, "v1.onnx", V1, attestation(V1, key))
        assert get(agent, V1, uri) == (200, V1)
        return agent
    return start


# ---- the fill is refused (the source is up) ---------------------------------------------------------------

def test_an_attested_artifact_is_cached_with_its_attestation(serving, source: SourceServer, key: Signer) -> None:
    agent = serving()
    [entry] = agent.artifacts()
    assert entry["sha256"] == sha256(V1)
    status, _, body = http("GET", agent.url + contract.AGENT_ATTESTATION_PATH.format(sha256=sha256(V1)))
    assert status == 200 and body == source.files[f"/v1.onnx{contract.ATTESTATION_SUFFIX}"]
    assert refusals(agent) == {}


@pytest.mark.parametrize(("case", "kind"), [
    ("flipped byte", "digest_mismatch"),
    ("another model's attestation", "subject_mismatch"),
    ("untrusted key", "untrusted_key"),
    ("another source", "source_mismatch"),
    ("no attestation", "no_attestation"),
])
def test_a_broken_chain_is_refused_when_filling_and_v1_keeps_serving(serving, source: SourceServer, key: Signer,
                                                                    case: str, kind: str) -> None:
    agent = serving()
    artifact, envelope = {
        "flipped byte": (bytes([V2[0] ^ 1]) + V2[1:], attestation(V2, key)),
        "another model's attestation": (V2, attestation(V3, key)),
        "untrusted key": (V2, attestation(V2, generate_ec())),
        "another source": (V2, attestation(V2, key, source=OTHER_SOURCE)),
        "no attestation": (V2, None),
    }[case]
    uri = publish(source, "v2.onnx", artifact, envelope)
    status, body = get(agent, V2, uri)  # V2 is what the EdgeModel names
    assert status == (502 if kind == "digest_mismatch" else 403) and json.loads(body)["kind"] == kind, body
    if kind == "digest_mismatch":  # bytes that hash wrong are counted as before trust: a failed fill
        assert refusals(agent) == {}
        assert 'edgewise_agent_download_failures_total{kind="digest_mismatch"} 1.0' in metrics_text(agent)
    else:
        assert refusals(agent) == {kind: 1.0}
    assert [e["sha256"] for e in agent.artifacts()] == [sha256(V1)]  # nothing of V2 was cached
    assert not any(p.name.startswith(sha256(V2)) for p in (agent.cache_dir / "attestations").iterdir())
    assert_still_serving(agent)


def test_an_unsigned_source_is_refused_where_signed_sources_are_required(serving, source: SourceServer,
                                                                        key: Signer) -> None:
    agent = serving(flags=("--require-signed-source",))
    uri = publish(source, "v2.onnx", V2, attestation(V2, key, signed=False))
    assert_refused(agent, V2, uri, "unsigned_source")
    assert_still_serving(agent)


def test_a_key_rotated_out_signs_nothing_new_and_both_keys_count_during_the_rotation(
        source: SourceServer, agents: Callable[..., AgentProcess], tmp_path: Path) -> None:
    old, new = generate_ec(), generate_ec()
    during = agents("--trusted-keys", str(trusted(tmp_path, old, new)), cache=tmp_path / "during")
    assert get(during, V1, publish(source, "v1.onnx", V1, attestation(V1, old)))[0] == 200
    assert get(during, V2, publish(source, "v2.onnx", V2, attestation(V2, new)))[0] == 200
    after = agents("--trusted-keys", str(trusted(tmp_path, new, name="after")), cache=tmp_path / "after")
    assert get(after, V2, source.url("/v2.onnx"))[0] == 200
    assert_refused(after, V3, publish(source, "v3.onnx", V3, attestation(V3, old)), "untrusted_key")


def test_a_prefetch_that_pins_no_source_caches_and_each_use_must_pin_the_right_one(
        serving, source: SourceServer, key: Signer) -> None:
    agent = serving()
    uri = publish(source, "v2.onnx", V2, attestation(V2, key))
    status, _, body = http("POST", agent.url + contract.AGENT_PREFETCH_PATH, json.dumps(
        {"uri": uri, "sha256": sha256(V2), "model": "detector", "namespace": "vision"}).encode(), token=OPERATOR)
    assert status in (200, 202), body
    wait_for(lambda: sha256(V2) in [e["sha256"] for e in agent.artifacts()], 30, "V2 staged")
    status, _, body = http("GET", artifact_url(agent, sha256(V2), model="detector"))
    assert status == 403 and json.loads(body)["kind"] == "source_not_pinned"
    assert_refused(agent, V2, "", "source_mismatch", source=OTHER_SOURCE)
    assert get(agent, V2) == (200, V2)


def test_without_trusted_keys_the_agent_checks_digests_only_as_before(source: SourceServer,
                                                                     agents: Callable[..., AgentProcess]) -> None:
    agent = agents()
    uri = publish(source, "v2.onnx", V2, None)  # no attestation anywhere
    assert get(agent, V2, uri, source=OTHER_SOURCE) == (200, V2)
    assert refusals(agent) == {}


# ---- the source is unreachable: what is cached is judged offline ------------------------------------------

@pytest.fixture
def offline(source: SourceServer, agents: Callable[..., AgentProcess], tmp_path: Path, key: Signer):
    """V1 and V2 cached (attested by `key`, V2 from an unsigned source), then the source stopped; returns a
    function restarting the agent on the same cache with other trust flags, and the dead URI of V2."""
    cache = tmp_path / "cache"
    first = agents("--trusted-keys", str(trusted(tmp_path, key)), cache=cache)
    for name, data, signed in (("v1.onnx", V1, True), ("v2.onnx", V2, False)):
        assert get(first, data, publish(source, name, data, attestation(data, key, signed=signed)))[0] == 200
    dead = f"http://127.0.0.1:{free_port()}/v2.onnx"  # nothing listens there
    source.stop()
    first.stop()

    def restart(*signers: Signer, flags: tuple[str, ...] = ()) -> AgentProcess:
        keys = trusted(tmp_path, *(signers or (key,)), name=f"keys-{len(os.listdir(tmp_path))}")
        return agents("--trusted-keys", str(keys), "--attempts", "1", *flags, cache=cache)
    return restart, dead


def test_offline_a_cached_artifact_verifies_and_is_served_from_pinned_keys_alone(offline) -> None:
    restart, dead = offline
    agent = restart()
    assert get(agent, V2, dead) == (200, V2)
    assert_still_serving(agent)


def test_offline_a_flipped_byte_in_the_cache_is_dropped_and_v1_keeps_serving(offline, tmp_path: Path) -> None:
    restart, dead = offline
    blob = tmp_path / "cache" / "sha256" / sha256(V2)
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[100] ^= 1
    blob.write_bytes(bytes(data))
    agent = restart(flags=("--no-verify-on-start",))
    status, body = get(agent, V2, dead)
    assert status != 200 and body != V2  # the bad blob is deleted and the source is unreachable
    assert not blob.exists()
    assert_still_serving(agent)


def test_offline_another_models_attestation_beside_the_artifact_is_refused(offline, tmp_path: Path,
                                                                          key: Signer) -> None:
    restart, dead = offline
    (tmp_path / "cache" / "attestations" / f"{sha256(V2)}.intoto.json").write_bytes(attestation(V3, key))
    agent = restart()
    assert_refused(agent, V2, dead, "subject_mismatch")
    assert_still_serving(agent)


def test_offline_an_untrusted_key_is_refused(offline) -> None:
    restart, dead = offline
    agent = restart(generate_ec())  # the node now trusts another key only
    assert_refused(agent, V2, dead, "untrusted_key")


def test_offline_a_key_rotated_out_is_refused_and_nothing_is_re_attested(offline, key: Signer) -> None:
    restart, dead = offline
    during = restart(key, generate_ec())
    assert get(during, V2, dead) == (200, V2)
    during.stop()
    after = restart(generate_ec())
    assert_refused(after, V2, dead, "untrusted_key")
    assert_refused(after, V1, "", "untrusted_key")  # the old key's attestations are still the old key's


def test_offline_another_pinned_source_is_refused(offline) -> None:
    restart, dead = offline
    agent = restart()
    assert_refused(agent, V2, dead, "source_mismatch", source=OTHER_SOURCE)
    assert_still_serving(agent)


def test_offline_an_unsigned_source_is_refused_under_require_signed(offline) -> None:
    restart, dead = offline
    agent = restart(flags=("--require-signed-source",))
    assert_refused(agent, V2, dead, "unsigned_source")
    assert_still_serving(agent)  # V1's source was signed


# ---- `edgewise fetch`: a refused artifact never replaces the laid-out model -------------------------------

def _request(tmp_path: Path, uri: str, data: bytes, keys: Path, agent: AgentProcess | None = None,
             source: str = SOURCE_SHA, **kw: object) -> contract.FetchRequest:
    token = tmp_path / "pod-token"
    token.write_text(POD)
    return contract.FetchRequest(uri=uri, sha256=sha256(data), model_name="detector", dest=str(tmp_path / "models"),
                                 agent=agent.url if agent else "", agent_token_file=str(token), source_sha256=source,
                                 trusted_keys=str(keys), **kw)  # type: ignore[arg-type]


def _laid_out(tmp_path: Path) -> bytes:
    return (tmp_path / "models" / "detector" / "1" / contract.ONNX_FILENAME).read_bytes()


@pytest.mark.parametrize(("case", "kind"), [
    ("another model's attestation", "subject_mismatch"),
    ("untrusted key", "untrusted_key"),
    ("another source", "source_mismatch"),
])
def test_fetch_from_the_source_refuses_and_keeps_the_laid_out_model(source: SourceServer, tmp_path: Path,
                                                                   key: Signer, case: str, kind: str) -> None:
    keys = trusted(tmp_path, key)
    fetch_mod.fetch(_request(tmp_path, publish(source, "v1.onnx", V1, attestation(V1, key)), V1, keys))
    assert _laid_out(tmp_path) == V1
    envelope = {"another model's attestation": attestation(V3, key), "untrusted key": attestation(V2, generate_ec()),
                "another source": attestation(V2, key, source=OTHER_SOURCE)}[case]
    with pytest.raises(TrustRefused) as refused:
        fetch_mod.fetch(_request(tmp_path, publish(source, "v2.onnx", V2, envelope), V2, keys), attempts=1)
    assert refused.value.kind == kind
    assert _laid_out(tmp_path) == V1
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".detector.staging")]


def test_fetch_with_the_source_unreachable_takes_the_agents_refusal_and_keeps_the_laid_out_model(
        offline, tmp_path: Path) -> None:
    restart, dead = offline
    agent = restart(generate_ec())  # V1 and V2 are cached, attested by a key this node no longer trusts
    keys = trusted(tmp_path, generate_ec(), name="pod-keys")
    (tmp_path / "models" / "detector" / "1").mkdir(parents=True)
    (tmp_path / "models" / "detector" / "1" / contract.ONNX_FILENAME).write_bytes(V1)  # what serves now
    with pytest.raises(TrustRefused) as refused:
        fetch_mod.fetch(_request(tmp_path, dead, V2, keys, agent), attempts=1)
    assert refused.value.kind == "untrusted_key"
    assert _laid_out(tmp_path) == V1


def test_fetch_with_the_source_unreachable_verifies_what_the_agent_cached_and_lays_it_out(
        offline, tmp_path: Path, key: Signer) -> None:
    restart, dead = offline
    agent = restart()
    result = fetch_mod.fetch(_request(tmp_path, dead, V2, trusted(tmp_path, key, name="pod-keys"), agent), attempts=1)
    assert result.artifact_from == "agent" and _laid_out(tmp_path) == V2
    assert get_json(agent.url + "/healthz")["status"] == "ok"


def test_fetch_under_require_signed_refuses_an_unsigned_source_offline(offline, tmp_path: Path, key: Signer) -> None:
    restart, dead = offline
    agent = restart()  # this agent does not require signed sources: the pod does, and checks for itself
    with pytest.raises(TrustRefused) as refused:
        fetch_mod.fetch(_request(tmp_path, dead, V2, trusted(tmp_path, key, name="pod-keys"), agent,
                                 require_signed_source=True), attempts=1)
    assert refused.value.kind == "unsigned_source"
    assert not (tmp_path / "models" / "detector").exists()


@pytest.mark.parametrize(("flags", "says"), [
    (("--trusted-keys", "/nonexistent/keys.pem"), "cannot read trusted keys"),
    (("--require-signed-source",), "--require-signed-source needs --trusted-keys"),
])
def test_a_misconfigured_trust_stops_the_agent_at_start_with_a_clear_message(tmp_path: Path, flags: tuple[str, ...],
                                                                            says: str) -> None:
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != contract.TRUSTED_KEYS_ENV}
    proc = subprocess.run([sys.executable, "-m", "edgewise", "agent", "--node-name", "n", "--cache-dir",
                           str(tmp_path / "cache"), *flags], capture_output=True, text=True, timeout=60, env=env,
                          check=False)
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr


@pytest.mark.parametrize(("kind", "raised"), [("untrusted_key", TrustRefused), ("source_mismatch", TrustRefused),
                                              ("digest_mismatch", fetch_mod.dl.PermanentError)])
def test_fetch_believes_an_agents_attestation_refusal_but_goes_around_its_bad_bytes(kind: str, raised: type) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Agent(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # the prefetch: it failed, for `kind`
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.dumps({"sha256": "a" * 64, "state": "failed", "errorKind": kind, "error": "no"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Agent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(raised) as err:
            fetch_mod.stage_in_agent(f"http://127.0.0.1:{server.server_port}", "a" * 64, "http://s/m", "m")
        assert not (raised is fetch_mod.dl.PermanentError and isinstance(err.value, TrustRefused))
    finally:
        server.shutdown()
        server.server_close()


# ---- a site's nodes fill from its source node: the attestation comes from the peer, checked again ----------

def _site(source: SourceServer, agents: Callable[..., AgentProcess], tmp_path: Path, key: Signer,
          second_trusts: Signer | None = None) -> tuple[AgentProcess, AgentProcess, str]:
    """The site's source node with V2 cached (attested by `key`), another node of the site, and the URI of V2 at
    a source nobody can reach any more (the site's uplink is gone)."""
    from cache_support import AGENT_USER, PEER

    token = tmp_path / "peer-token"
    token.write_text(PEER)
    flags = ("--peer-user", AGENT_USER, "--peer-token-file", str(token), "--attempts", "1")
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
    first = agents("--trusted-keys", str(trusted(tmp_path, key)), *flags, cache=tmp_path / "first" / "cache")
    assert get(first, V2, publish(source, "v2.onnx", V2, attestation(V2, key))) == (200, V2)
    source.stop()
    second_keys = trusted(tmp_path, second_trusts or key, name="second-keys")
    second = agents("--trusted-keys", str(second_keys), *flags, cache=tmp_path / "second" / "cache")
    return first, second, f"http://127.0.0.1:{free_port()}/v2.onnx"


def _stage_via_peer(agent: AgentProcess, peer: AgentProcess, uri: str) -> dict:
    status, _, body = http("POST", agent.url + contract.AGENT_PREFETCH_PATH, json.dumps(
        {"uri": uri, "sha256": sha256(V2), "model": "detector", "namespace": "vision", "peers": [peer.url]}).encode(),
        token=OPERATOR)
    assert status in (200, 202), body
    return wait_for(lambda: (j := get_json(f"{agent.url}{contract.AGENT_PREFETCH_PATH}/{sha256(V2)}", OPERATOR))[
        "state"] in ("ready", "failed") and j, 60, "the peer fill")


def test_offline_a_sites_node_fills_from_its_peer_with_the_peers_attestation(source: SourceServer, agents,
                                                                           tmp_path: Path, key: Signer) -> None:
    first, second, dead = _site(source, agents, tmp_path, key)
    state = _stage_via_peer(second, first, dead)
    assert state["state"] == "ready" and state["via"] == f"peer {first.url}", state
    assert get(second, V2, dead) == (200, V2)
    assert (second.cache_dir / "attestations" / f"{sha256(V2)}.intoto.json").exists()


def test_offline_a_peers_attestation_of_another_artifact_is_refused_and_nothing_is_cached(
        source: SourceServer, agents, tmp_path: Path, key: Signer) -> None:
    first, second, dead = _site(source, agents, tmp_path, key)
    (first.cache_dir / "attestations" / f"{sha256(V2)}.intoto.json").write_bytes(attestation(V3, key))
    state = _stage_via_peer(second, first, dead)
    assert state["state"] == "failed", state  # the peer refused to stage it; the source, tried next, is gone
    assert second.artifacts() == []
    assert refusals(first) == {"subject_mismatch": 1.0}


def test_offline_a_peers_attestation_by_a_key_this_node_does_not_trust_is_refused(
        source: SourceServer, agents, tmp_path: Path, key: Signer) -> None:
    first, second, dead = _site(source, agents, tmp_path, key, second_trusts=generate_ec())
    state = _stage_via_peer(second, first, dead)
    assert state["state"] == "failed", state  # this node refused the peer's; the source, tried next, is gone
    assert second.artifacts() == []
    assert refusals(second) == {"untrusted_key": 1.0} and refusals(first) == {}


# ---- TensorRT plans: attested by the agent of the node that keeps them -------------------------------------

def test_a_plan_the_agent_keeps_is_attested_by_its_node_key_naming_the_onnx_and_tensorrt(
        source: SourceServer, agents: Callable[..., AgentProcess], tmp_path: Path) -> None:
    from edgewise.shared.trust.keys import TrustedKeys, private_pem
    from edgewise.shared.trust.verify import ExpectedPlan, Reason, check_plan

    node_key = generate_ec()
    (tmp_path / "node.pem").write_bytes(private_pem(node_key))
    agent = agents("--plan-signing-key", str(tmp_path / "node.pem"))
    assert get(agent, V1, publish(source, "v1.onnx", V1, None)) == (200, V1)
    key = contract.plan_cache_key(sha256(V1), "8.7", "10.3.0", "fp16")
    plan = b"serialized engine " * 1000
    status, _, body = http("PUT", f"{agent.url}/v1/artifacts/{key}", plan,
                           {contract.AGENT_SHA256_HEADER: sha256(plan)})
    assert status == 201 and json.loads(body)["attestedBy"] == node_key.key_id
    status, _, envelope = http("GET", agent.url + contract.AGENT_ATTESTATION_PATH.format(sha256=sha256(plan)))
    assert status == 200
    keys = TrustedKeys.of([node_key.public_key()])
    verdict = check_plan(sha256(plan), envelope, keys, ExpectedPlan(sha256(plan), sha256(V1), "10.3.0"))
    assert verdict.reason is Reason.VERIFIED and "plan built on node-a" in verdict.message
    plan_of = verdict.statement.predicate  # type: ignore[union-attr]
    assert (plan_of.compute_capability, plan_of.precision) == ("8.7", "fp16")  # type: ignore[union-attr]
    # Another ONNX, another TensorRT, or another node's key: each is refused.
    assert check_plan(sha256(plan), envelope, keys, ExpectedPlan(sha256(plan), sha256(V2), "10.3.0")
                      ).reason is Reason.SOURCE_MISMATCH
    assert check_plan(sha256(plan), envelope, keys, ExpectedPlan(sha256(plan), sha256(V1), "8.6.1")
                      ).reason is Reason.SOURCE_MISMATCH
    assert check_plan(sha256(plan), envelope, TrustedKeys.of([generate_ec().public_key()]),
                      ExpectedPlan(sha256(plan), sha256(V1), "10.3.0")).reason is Reason.UNTRUSTED_KEY


def test_without_a_plan_key_plans_are_kept_as_before_and_not_attested(source: SourceServer, agents) -> None:
    agent = agents()
    assert get(agent, V1, publish(source, "v1.onnx", V1, None)) == (200, V1)
    key = contract.plan_cache_key(sha256(V1), "8.7", "10.3.0", "fp16")
    plan = b"serialized engine " * 1000
    status, _, body = http("PUT", f"{agent.url}/v1/artifacts/{key}", plan,
                           {contract.AGENT_SHA256_HEADER: sha256(plan)})
    assert status == 201 and "attestedBy" not in json.loads(body)
    assert http("GET", agent.url + contract.AGENT_ATTESTATION_PATH.format(sha256=sha256(plan)))[0] == 404
