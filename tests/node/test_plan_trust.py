"""TensorRT plans (issue 16): the agent's own plan key, generated on the node once — with real agent processes."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cache_support import AgentProcess, SourceServer, artifact_url, sha256
from cache_support import pod_http as http
from fetch_models_support import mlp

from edgewise import contract
from edgewise.shared.trust.keys import Signer, TrustedKeys, public_key_path

MODEL = mlp()
DIGEST = sha256(MODEL)
TRT_VERSION = "8.6.1"  # what the fake trtexec's banner says
PLAN_KEY = contract.plan_cache_key(DIGEST, "8.7", TRT_VERSION, "fp16")


def _key_path(tmp_path: Path) -> Path:
    return tmp_path / "cache" / contract.PLAN_KEY_SUBDIR / contract.PLAN_KEY_FILE  # as the operator renders it


# ---- the node's plan key ----------------------------------------------------------------------------------

def _upload_plan(agent: AgentProcess, source: SourceServer, plan: bytes) -> dict:
    """Cache MODEL in the agent (a plan is accepted only for a model it delivered) and upload a plan of it."""
    assert http("GET", artifact_url(agent, DIGEST, source.add("/m.onnx", MODEL), "detector"))[0] == 200
    status, _, body = http("PUT", f"{agent.url}/v1/artifacts/{PLAN_KEY}", plan,
                           {contract.AGENT_SHA256_HEADER: sha256(plan)})
    assert status == 201, body
    return json.loads(body)


def test_the_agent_generates_its_plan_key_once_and_keeps_it_across_restarts(
        source: SourceServer, agents: Callable[..., AgentProcess], tmp_path: Path) -> None:
    path = _key_path(tmp_path)
    assert not path.parent.exists()
    first = agents("--plan-signing-key", str(path))
    pub = public_key_path(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644 and stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    [key_id] = TrustedKeys.load(pub).ids()  # what a pod of the node verifies with: the public key, in PEM
    assert Signer.load(path).key_id == key_id
    assert b"PRIVATE" not in pub.read_bytes()
    assert _upload_plan(first, source, b"engine one " * 500)["attestedBy"] == key_id
    first.stop()
    private = path.read_bytes()
    pub.unlink()  # a public key lost or edited is written again from the private key
    second = agents("--plan-signing-key", str(path))
    assert path.read_bytes() == private and TrustedKeys.load(pub).ids() == [key_id]
    status, _, envelope = http("GET", second.url + contract.AGENT_ATTESTATION_PATH.format(
        sha256=sha256(b"engine one " * 500)))
    assert status == 200 and json.loads(envelope)["signatures"][0]["keyid"] == key_id
    assert "generated this node's plan key" in first.log.read_text()
    assert second.log.read_text().count("loaded this node's plan key") == 1


@pytest.mark.parametrize(("make", "says"), [
    (lambda p: p.mkdir(parents=True), "cannot read the plan signing key"),
    (lambda p: (p.parent.mkdir(parents=True), p.write_text("not a key")), "not a PEM private key"),
])
def test_a_plan_key_that_is_there_but_unusable_stops_the_agent_with_a_clear_message(
        tmp_path: Path, make: Callable[[Path], object], says: str) -> None:
    path = _key_path(tmp_path)
    make(path)
    proc = subprocess.run([sys.executable, "-m", "edgewise", "agent", "--node-name", "n", "--cache-dir",
                           str(tmp_path / "cache"), "--plan-signing-key", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    assert not public_key_path(path).exists()
