"""`edgewise agent` as a real process on loopback, filling its cache from a real HTTP source."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from typing import Any

from cache_support import AgentProcess, artifact_url, get_json, sha256
from cache_support import pod_http as http

from edgewise.contract import AGENT_SHA256_HEADER, plan_cache_key
from wait_support import wait_for

V1, V2, V3 = (f"model version {i} ".encode() * 50_000 for i in (1, 2, 3))  # ~800 KB each


def fetch(agent: AgentProcess, data: bytes, uri: str, model: str = "m") -> bytes:
    status, headers, body = http("GET", artifact_url(agent, sha256(data), uri, model))
    assert status == 200, body
    assert headers[AGENT_SHA256_HEADER] == sha256(body) == sha256(data)
    return body


def test_a_miss_is_filled_once_from_the_source_then_served_from_cache(source, agents) -> None:
    agent = agents()
    uri = source.add("/v1.onnx", V1)
    fetch(agent, V1, uri, model="detector")
    fetch(agent, V1, uri, model="detector")
    assert source.count("/v1.onnx") == 1
    [entry] = agent.artifacts()
    assert entry["sha256"] == sha256(V1) and entry["size"] == len(V1) and entry["models"] == ["vision/detector"]
    status, _, metrics = http("GET", agent.url + "/metrics")
    assert status == 200
    assert "edgewise_agent_cache_hits_total 2.0" in metrics.decode()
    assert "edgewise_agent_cache_misses_total 1.0" in metrics.decode()


def test_a_digest_mismatch_is_refused_never_served_never_cached(source, agents) -> None:
    agent = agents()
    uri = source.add("/tampered.onnx", b"not the model the spec names")
    expected = sha256(V1)
    status, _, body = http("GET", artifact_url(agent, expected, uri, "m"))
    assert status == 502 and json.loads(body)["kind"] == "digest_mismatch"
    # The digest of what the source sent is never told: it would let anyone cache (and read) any URL.
    assert sha256(b"not the model the spec names").encode() not in body
    assert agent.artifacts() == []
    assert http("GET", artifact_url(agent, expected))[0] == 404
    assert http("GET", artifact_url(agent, sha256(b"not the model the spec names")))[0] == 404
    assert os.listdir(agent.cache_dir / "sha256") == [] and os.listdir(agent.cache_dir / "tmp") == []


def test_an_interrupted_download_leaves_no_cached_file_and_a_retry_succeeds(source, agents) -> None:
    agent = agents("--attempts", "1")
    source.cut["/v1.onnx"] = 1
    uri = source.add("/v1.onnx", V1)
    status, _, body = http("GET", artifact_url(agent, sha256(V1), uri, "m"))
    assert status == 502 and json.loads(body)["kind"] == "transient"
    assert agent.artifacts() == [] and os.listdir(agent.cache_dir / "tmp") == []
    assert fetch(agent, V1, uri) == V1
    assert [e["sha256"] for e in agent.artifacts()] == [sha256(V1)]


def test_an_agent_killed_mid_download_leaves_no_half_file_and_downloads_again(source, agents) -> None:
    agent = agents()
    source.stall.add("/v1.onnx")
    uri = source.add("/v1.onnx", V1)
    def doomed_request() -> None:
        with contextlib.suppress(OSError):  # its agent gets killed
            http("GET", artifact_url(agent, sha256(V1), uri, "m"))

    threading.Thread(target=doomed_request, daemon=True).start()
    assert source.half_sent.wait(30)
    tmp = agent.cache_dir / "tmp"
    wait_for(lambda: any(p.stat().st_size > 0 for p in tmp.iterdir()), 30, "a partial file in tmp/")
    agent.kill()
    assert any(p.name.endswith(".part") for p in tmp.iterdir())  # the half file the crash left
    source.stall.clear()
    source.release.set()
    restarted = agents(cache=agent.cache_dir)
    assert restarted.artifacts() == []
    assert list(tmp.iterdir()) == [] and list((agent.cache_dir / "sha256").iterdir()) == []
    assert fetch(restarted, V1, uri) == V1
    assert [e["sha256"] for e in restarted.artifacts()] == [sha256(V1)]


def test_eviction_keeps_the_last_two_digests_of_each_model(source, agents) -> None:
    agent = agents("--max-cache-bytes", "1M")  # one artifact fits; every second fill is over budget
    uris = [source.add(f"/v{i}.onnx", data) for i, data in enumerate((V1, V2, V3), 1)]
    other = b"another model " * 1000
    fetch(agent, other, source.add("/other.onnx", other), model="classifier")
    for data, uri in zip((V1, V2, V3), uris, strict=True):
        fetch(agent, data, uri, model="detector")
    cached = {e["sha256"]: e["models"] for e in agent.artifacts()}
    assert cached == {sha256(V2): ["vision/detector"], sha256(V3): ["vision/detector"],
                      sha256(other): ["vision/classifier"]}
    source.stop()
    assert fetch(agent, V2, uris[1], model="detector") == V2  # a rollback needs no download


def test_cached_artifacts_are_served_with_the_source_unreachable_also_after_a_restart(source, agents) -> None:
    agent = agents()
    uri = source.add("/v1.onnx", V1)
    fetch(agent, V1, uri)
    source.stop()
    assert fetch(agent, V1, uri) == V1
    agent.stop()
    restarted = agents("--attempts", "2", cache=agent.cache_dir)  # the node rebooted while offline
    assert fetch(restarted, V1, uri) == V1
    missing = b"never cached"
    status, _, body = http("GET", artifact_url(restarted, sha256(missing), uri))
    assert status == 502 and json.loads(body)["kind"] == "transient"


def test_a_blob_corrupted_on_disk_is_never_served(source, agents) -> None:
    agent = agents()
    uri = source.add("/v1.onnx", V1)
    fetch(agent, V1, uri)
    agent.stop()
    blob = agent.cache_dir / "sha256" / sha256(V1)
    os.chmod(blob, 0o644)
    blob.write_bytes(b"bit rot")
    restarted = agents("--no-verify-on-start", cache=agent.cache_dir)  # verified on first request instead
    assert http("GET", artifact_url(restarted, sha256(V1)))[0] == 404
    assert fetch(restarted, V1, uri) == V1  # refilled from the source
    assert source.count("/v1.onnx") == 2


def test_prefetch_stages_an_artifact_in_the_background(source, agents) -> None:
    agent = agents()
    uri = source.add("/v2.onnx", V2)
    digest = sha256(V2)
    body = json.dumps({"uri": uri, "sha256": digest, "model": "detector"}).encode()
    status, headers, _ = http("POST", agent.url + "/v1/prefetch", body, {"Content-Type": "application/json"})
    assert status == 202 and headers["Location"] == f"/v1/prefetch/{digest}"
    state: Any = wait_for(lambda: (s := get_json(agent.url + headers["Location"]))["state"] in ("ready", "failed")
                          and s, 60, "prefetch to finish")
    assert state["state"] == "ready", state
    assert [(e["sha256"], e["models"]) for e in agent.artifacts()] == [(digest, ["vision/detector"])]
    source.stop()
    assert fetch(agent, V2, uri, model="detector") == V2  # staged: the switch needs no uplink
    status, _, _ = http("POST", agent.url + "/v1/prefetch", body, {"Content-Type": "application/json"})
    assert status == 200  # already cached


def test_a_prefetch_with_a_wrong_digest_reports_failure(source, agents) -> None:
    agent = agents()
    uri = source.add("/v2.onnx", V2)
    wrong = sha256(V1)
    body = json.dumps({"uri": uri, "sha256": wrong, "model": "m"}).encode()
    assert http("POST", agent.url + "/v1/prefetch", body)[0] == 202
    state: Any = wait_for(lambda: (s := get_json(f"{agent.url}/v1/prefetch/{wrong}"))["state"] == "failed" and s,
                          60, "prefetch to fail")
    assert state["errorKind"] == "digest_mismatch" and agent.artifacts() == []
    assert http("POST", agent.url + "/v1/prefetch", b"{not json")[0] == 400
    assert http("GET", f"{agent.url}/v1/prefetch/{sha256(b'unknown')}")[0] == 404


def test_plans_are_accepted_under_their_key_only_with_a_matching_digest(source, agents) -> None:
    agent = agents()
    model = sha256(V1)
    fetch(agent, V1, source.add("/v1.onnx", V1))
    key = plan_cache_key(model, "8.7", "8.6.1", "fp16")
    plan = b"serialized engine " * 1000
    url = f"{agent.url}/v1/artifacts/{key}"
    assert http("GET", url)[0] == 404
    assert http("PUT", url, b"tampered", {AGENT_SHA256_HEADER: sha256(b"other")})[0] == 422
    assert http("PUT", url, plan)[0] == 400  # no digest header
    assert http("PUT", url, plan, {AGENT_SHA256_HEADER: sha256(plan)})[0] == 201
    status, headers, body = http("GET", url)
    assert status == 200 and body == plan and headers[AGENT_SHA256_HEADER] == sha256(plan)
    x_url = f"{agent.url}/v1/artifacts/{sha256(b'x')}"
    status, _, _ = http("PUT", x_url, b"x", {AGENT_SHA256_HEADER: sha256(b"x")})
    assert status == 405  # model artifacts only come from their source
    [entry] = [e for e in agent.artifacts() if e["sha256"] == sha256(plan)]
    assert entry["plan_keys"] == [f"{key}-ns.vision"]  # plans are kept per namespace


def test_file_sources_only_below_the_configured_root(agents, tmp_path) -> None:
    allowed = tmp_path / "models"
    allowed.mkdir()
    (allowed / "m.onnx").write_bytes(V1)
    outside = tmp_path / "secret"
    outside.write_bytes(b"host file")
    closed = agents(cache=tmp_path / "c1")
    status, _, body = http("GET", artifact_url(closed, sha256(V1), (allowed / "m.onnx").as_uri()))
    assert status == 403 and json.loads(body)["kind"] == "refused"
    opened = agents("--file-root", str(allowed), cache=tmp_path / "c2")
    assert fetch(opened, V1, (allowed / "m.onnx").as_uri()) == V1
    assert http("GET", artifact_url(opened, sha256(b"host file"), outside.as_uri()))[0] == 403


def test_bad_keys_are_rejected(agents) -> None:
    agent = agents()
    assert http("GET", f"{agent.url}/v1/artifacts/not-a-digest")[0] == 400
    assert http("GET", f"{agent.url}/healthz")[0] == 200


def test_concurrent_requests_share_one_download_which_resumes_after_a_cut(source, agents) -> None:
    agent = agents()
    source.stall.add("/v1.onnx")
    uri = source.add("/v1.onnx", V1)
    body = json.dumps({"uri": uri, "sha256": sha256(V1), "model": "m"}).encode()
    assert http("POST", agent.url + "/v1/prefetch", body)[0] == 202
    assert source.half_sent.wait(30)
    status, _, second = http("POST", agent.url + "/v1/prefetch", body)  # joins the download in flight
    assert status == 202 and json.loads(second)["state"] == "downloading"
    source.stall.clear()
    source.release.set()  # the stalled transfer ends short; the agent resumes it
    assert fetch(agent, V1, uri) == V1
    assert source.requests == [("/v1.onnx", None), ("/v1.onnx", f"bytes={len(V1) // 2}-")]
