"""The node agent under attack and under load: no open proxy, no plan overwrite, no starvation,
no budget escape, no adopted symlinks. The real agent as a process on loopback (issue 15 §1)."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from cache_support import OPERATOR, OTHER_NODE_POD, POD, TENANT, UNBOUND, AgentProcess, get_json, sha256
from cache_support import artifact_url as url
from cache_support import pod_http as http

from edgewise.contract import AGENT_SHA256_HEADER, plan_cache_key
from wait_support import wait_for

MODEL = b"the model " * 80_000  # 800 KB
SECRET = b"root:x:0:0:something only the node should read\n"


def prefetch(agent: AgentProcess, uri: str, digest: str, token: str = POD, **extra: str) -> tuple[int, Any]:
    body = json.dumps({"uri": uri, "sha256": digest, "model": "detector", **extra}).encode()
    status, _, answer = http("POST", agent.url + "/v1/prefetch", body, token=token)
    return status, json.loads(answer)


# ---- SSRF and cache poisoning ----------------------------------------------------------------------


def test_the_agent_fills_and_serves_only_authenticated_callers_of_its_own_node(source, agents) -> None:
    agent = agents()
    secret_uri = source.add("/secret", SECRET)
    digest = sha256(SECRET)
    for token in (None, "forged", OTHER_NODE_POD, UNBOUND, OPERATOR):
        status, _, body = http("GET", url(agent, digest, secret_uri), token=token)
        assert status == (401 if token in (None, "forged") else 403), (token, status, body)
    assert source.count("/secret") == 0  # nobody but the node's pods makes the agent download
    assert http("GET", agent.url + "/v1/artifacts", token=None)[0] == 401
    assert http("GET", f"{agent.url}/v1/prefetch/{digest}", token=OTHER_NODE_POD)[0] == 403
    assert prefetch(agent, secret_uri, digest, token=OTHER_NODE_POD)[0] == 403
    # The operator may stage and watch; the listing shows the model under its namespace.
    status, _ = prefetch(agent, source.add("/m.onnx", MODEL), sha256(MODEL), token=OPERATOR, namespace="vision")
    assert status == 202
    wait_for(lambda: get_json(f"{agent.url}/v1/prefetch/{sha256(MODEL)}", token=OPERATOR)["state"] == "ready",
             60, "the operator's prefetch")
    assert [e["models"] for e in get_json(agent.url + "/v1/artifacts", token=OPERATOR)["artifacts"]] == [
        ["vision/detector"]]
    assert http("GET", url(agent, sha256(MODEL)), token=OPERATOR)[0] == 403  # it stages, it does not read
    assert http("GET", url(agent, sha256(MODEL)))[0] == 200
    assert http("GET", agent.url + "/healthz", token=None)[0] == 200  # the kubelet's probe needs no token


def test_a_mismatch_never_tells_the_digest_of_what_was_fetched(source, agents) -> None:
    agent = agents()
    secret_uri = source.add("/secret", SECRET)
    status, _, body = http("GET", url(agent, "0" * 64, secret_uri))
    assert status == 502 and json.loads(body)["kind"] == "digest_mismatch"
    assert sha256(SECRET).encode() not in body
    status, view = prefetch(agent, secret_uri, "0" * 64)
    state = wait_for(lambda: (v := get_json(f"{agent.url}/v1/prefetch/{'0' * 64}"))["state"] == "failed" and v,
                     60, "the prefetch to fail")
    assert sha256(SECRET) not in json.dumps(state)


def test_loopback_link_local_and_redirects_there_are_refused_unless_allowed(source, agents) -> None:
    agent = agents(allow_loopback=False)
    secret_uri = source.add("/secret", SECRET)
    status, _, body = http("GET", url(agent, sha256(SECRET), secret_uri))
    assert status == 403 and json.loads(body)["kind"] == "refused", body
    assert b"--allow-host" in body  # the error says how to allow a host on purpose
    for uri in ("http://169.254.169.254/latest/meta-data/", "http://[::1]:1/x", "http://0.0.0.0:1/x"):
        status, _, body = http("GET", url(agent, sha256(uri.encode()), uri))
        assert status == 403 and json.loads(body)["kind"] == "refused", (uri, body)
    assert source.count("/secret") == 0
    # A host allowed by name may not redirect to one that is not: every connection is vetted.
    named = agents("--allow-host", "localhost", cache=agent.cache_dir.parent / "named", allow_loopback=False)
    model_uri = source.add("/m.onnx", MODEL)
    assert http("GET", url(named, sha256(MODEL), source.url("/m.onnx", host="localhost")))[0] == 200
    source.redirects["/bounce"] = secret_uri
    status, _, body = http("GET", url(named, sha256(SECRET), source.url("/bounce", host="localhost")))
    assert status == 403 and json.loads(body)["kind"] == "refused", body
    assert source.count("/secret") == 0
    assert model_uri  # served above through the allowed name


# ---- TensorRT plans ---------------------------------------------------------------------------------


def test_a_plan_is_written_once_by_a_pod_of_the_node_and_records_its_uploader(source, agents) -> None:
    agent = agents()
    model_uri = source.add("/m.onnx", MODEL)
    key = plan_cache_key(sha256(MODEL), "8.7", "10.3.0", "fp16")
    plan, evil = b"good engine " * 1000, b"evil engine " * 1000
    assert http("PUT", url(agent, key), plan, {AGENT_SHA256_HEADER: sha256(plan)})[0] == 409  # model not here
    assert http("GET", url(agent, sha256(MODEL), model_uri))[0] == 200
    assert http("PUT", url(agent, key), evil, {AGENT_SHA256_HEADER: sha256(evil)}, token=None)[0] == 401
    assert http("PUT", url(agent, key), evil, {AGENT_SHA256_HEADER: sha256(evil)}, token=OTHER_NODE_POD)[0] == 403
    assert http("PUT", url(agent, key), evil, {AGENT_SHA256_HEADER: sha256(evil)}, token=OPERATOR)[0] == 403
    assert http("PUT", url(agent, key), plan, {AGENT_SHA256_HEADER: sha256(plan)})[0] == 201
    status, _, body = http("PUT", url(agent, key), evil, {AGENT_SHA256_HEADER: sha256(evil)})
    assert status == 409 and json.loads(body)["uploadedBy"] == "vision/detector-abcde"
    status, headers, served = http("GET", url(agent, key))
    assert status == 200 and served == plan and headers[AGENT_SHA256_HEADER] == sha256(plan)
    [entry] = [e for e in agent.artifacts() if e["sha256"] == sha256(plan)]
    assert entry["plan_keys"] == [f"{key}-ns.vision"] and entry["uploaded_by"] == ["vision/detector-abcde"]
    agent.stop()
    restarted = agents(cache=agent.cache_dir)  # the uploader survives a restart, and so does the rule
    assert http("PUT", url(restarted, key), evil, {AGENT_SHA256_HEADER: sha256(evil)})[0] == 409
    assert [e["uploaded_by"] for e in restarted.artifacts() if e["sha256"] == sha256(plan)] == [
        ["vision/detector-abcde"]]


def test_another_namespace_neither_loads_nor_blocks_a_tenants_plan_nor_sees_its_sources(source, agents) -> None:
    agent = agents()
    model_uri = source.add("/m.onnx", MODEL)
    assert http("GET", url(agent, sha256(MODEL), model_uri + "?signature=vision-secret"))[0] == 200
    key = plan_cache_key(sha256(MODEL), "8.7", "10.3.0", "fp16")
    theirs, ours = b"retail's engine " * 1000, b"vision's engine " * 1000
    # Another tenant on the same node uploads first: that does not decide what vision loads.
    assert http("PUT", url(agent, key), theirs, {AGENT_SHA256_HEADER: sha256(theirs)}, token=TENANT)[0] == 201
    assert http("GET", url(agent, key))[0] == 404
    assert http("PUT", url(agent, key), ours, {AGENT_SHA256_HEADER: sha256(ours)})[0] == 201
    assert http("GET", url(agent, key))[2] == ours and http("GET", url(agent, key), token=TENANT)[2] == theirs
    # Nor does it see vision's sources (a URI may hold a presigned credential) or the cache listing.
    assert http("GET", agent.url + "/v1/artifacts", token=TENANT)[0] == 403
    bad = source.add("/bad.onnx", b"not it")
    status, _, body = http("GET", url(agent, "1" * 64, bad + "?signature=vision-secret"))
    assert status == 502 and b"vision-secret" not in body  # (its own error quotes no source either way)
    status, _, body = http("GET", f"{agent.url}/v1/prefetch/{'1' * 64}", token=TENANT)
    assert status == 200 and b"vision-secret" not in body and b"/bad.onnx" not in body
    assert json.loads(body)["errorKind"] == "digest_mismatch"
    assert b"/bad.onnx" in http("GET", f"{agent.url}/v1/prefetch/{'1' * 64}")[2]  # vision sees its own


def test_a_trickling_plan_upload_ends_at_the_deadline_and_leaves_nothing(source, agents) -> None:
    filled = agents()
    assert http("GET", url(filled, sha256(MODEL), source.add("/m.onnx", MODEL)))[0] == 200
    filled.stop()  # the short deadline below is for the upload only, not for this fill
    agent = agents("--download-deadline", "2", cache=filled.cache_dir)
    key = plan_cache_key(sha256(MODEL), "8.7", "10.3.0", "fp16")
    head = (f"PUT /v1/artifacts/{key} HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer {POD}\r\n"
            f"{AGENT_SHA256_HEADER}: {'2' * 64}\r\nContent-Length: 1000000\r\n\r\n")
    with socket.create_connection(("127.0.0.1", agent.port), timeout=60) as conn:
        conn.sendall(head.encode() + b"the first bytes, and then nothing")
        answer = conn.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    wait_for(lambda: os.listdir(agent.cache_dir / "tmp") == [], 30, "the partial upload to be deleted")
    assert http("GET", url(agent, key))[0] == 404


# ---- starvation -------------------------------------------------------------------------------------


def test_stalled_downloads_never_hold_cached_reads_and_make_health_fail(source, agents) -> None:
    filled = agents()
    assert http("GET", url(filled, sha256(MODEL), source.add("/cached.onnx", MODEL)))[0] == 200
    filled.stop()  # the short deadline below is for the stalled downloads only, not for this fill
    agent = agents("--download-workers", "2", "--download-deadline", "3", "--attempts", "1",
                   cache=filled.cache_dir)
    # More stalled downloads than any default thread pool has threads (at most 32).
    slow = [source.add(f"/slow-{i}.onnx", b"slow %d " % i * 10_000) for i in range(34)]
    for path in (f"/slow-{i}.onnx" for i in range(34)):
        source.stall.add(path)
    for i, uri in enumerate(slow):
        assert prefetch(agent, uri, sha256(b"slow %d " % i * 10_000))[0] == 202
    assert source.half_sent.wait(30)
    for _ in range(3):  # cached reads answer at once, however long the downloads hang
        status, _, body = http("GET", url(agent, sha256(MODEL)), timeout=30)
        assert status == 200 and body == MODEL
    wait_for(lambda: http("GET", agent.url + "/healthz", token=None, timeout=30)[0] == 503, 60,
             "health to report the download workers stuck past their deadline")
    source.stall.clear()
    source.release.set()
    wait_for(lambda: http("GET", agent.url + "/healthz", token=None, timeout=30)[0] == 200, 120,
             "health to recover once the stuck downloads end")
    state = get_json(f"{agent.url}/v1/prefetch/{sha256(b'slow 0 ' * 10_000)}")
    assert state["state"] == "failed" and state["errorKind"] in ("deadline", "transient"), state


# ---- budget -----------------------------------------------------------------------------------------


def test_a_download_larger_than_the_budget_stops_at_the_budget(source, agents) -> None:
    agent = agents("--max-cache-bytes", "1M")
    big = b"x" * (3 << 20)
    status, _, body = http("GET", url(agent, "0" * 64, source.add("/big", big)))
    assert status == 507 and json.loads(body)["kind"] == "too_large", body
    assert os.listdir(agent.cache_dir / "tmp") == [] and agent.artifacts() == []


def test_made_up_model_names_are_bounded_and_checked(source, agents) -> None:
    agent = agents("--max-cache-bytes", "1M", "--max-models", "2")
    versions = [b"version %d " % i * 80_000 for i in range(3)]  # 880 KB each: any two overflow the budget
    for i, data in enumerate(versions):
        uri = source.add(f"/v{i}.onnx", data)
        assert http("GET", url(agent, sha256(data), uri, model=f"made-up-{i}"))[0] == 200
    cached = {e["sha256"]: e["models"] for e in agent.artifacts()}
    # Only the two most recent names pin their blobs: the first name's blob was evicted.
    assert cached == {sha256(versions[1]): ["vision/made-up-1"], sha256(versions[2]): ["vision/made-up-2"]}
    status, _, body = http("GET", url(agent, sha256(versions[2]), model="../../etc"))
    assert status == 400 and b"not a model name" in body


def test_reads_do_not_rewrite_the_index(source, agents) -> None:
    agent = agents("--index-flush", "3600")  # no periodic flush during the test, however slow the machine
    assert http("GET", url(agent, sha256(MODEL), source.add("/m.onnx", MODEL), model="m"))[0] == 200
    index = agent.cache_dir / "index.json"
    before, seq = index.stat(), json.loads(index.read_text())["seq"]
    for _ in range(20):
        assert http("GET", url(agent, sha256(MODEL), model="m"))[0] == 200
    after = index.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    agent.stop()  # uses are persisted at shutdown
    assert json.loads(index.read_text())["seq"] > seq


# ---- adoption ---------------------------------------------------------------------------------------


def test_symlinks_in_the_cache_are_never_adopted(agents, tmp_path) -> None:
    host_file = tmp_path / "shadow"
    host_file.write_bytes(SECRET)
    cache = tmp_path / "cache"
    (cache / "sha256").mkdir(parents=True)
    (cache / "sha256" / sha256(SECRET)).symlink_to(host_file)
    agent = agents(cache=cache)
    assert http("GET", url(agent, sha256(SECRET)))[0] == 404
    assert agent.artifacts() == [] and os.listdir(cache / "sha256") == []
    assert host_file.read_bytes() == SECRET  # the link went, not its target
