"""TensorRT plans checked before they load (issue 16): the agent's own plan key, generated on the node once, and
`edgewise fetch --trusted-plan-keys`, which loads a plan from the agent only with the agent's attestation naming
the pod's ONNX and TensorRT version, else builds its own — with real agent processes and the fake trtexec of
test_fetch.py (no GPU here)."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cache_support import AgentProcess, SourceServer, artifact_url, sha256
from cache_support import pod_http as http
from fetch_models_support import mlp
from test_fetch import request, run_fetch

from edgewise import contract
from edgewise.node import fetch as fetch_mod
from edgewise.node import trtexec as trt
from edgewise.shared.trust.keys import Signer, TrustedKeys, generate_ec, public_key_path
from edgewise.shared.trust.statement import Statement, TensorRTPlan, sign_statement

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


# ---- `edgewise fetch --trusted-plan-keys` ------------------------------------------------------------------

class Node:
    """A node: its agent (with its own plan key), the source of MODEL, trtexec, and pods that fetch MODEL as
    triton-tensorrt, each with the node's public plan key."""

    def __init__(self, agents: Callable[..., AgentProcess], source: SourceServer, tmp_path: Path,
                 fake_trtexec: tuple[Path, Path]) -> None:
        self.tmp_path, self.start_agent = tmp_path, agents
        self.key_path = _key_path(tmp_path)
        self.agent = agents("--plan-signing-key", str(self.key_path))
        self.uri = source.add("/m.onnx", MODEL)
        self.trtexec, self.builds = fake_trtexec
        self.pods = 0

    @property
    def cache(self) -> Path:
        return self.tmp_path / "cache"

    def fetch(self, plan_keys: Path | None = None) -> tuple[fetch_mod.FetchResult, bytes]:
        """A new pod's fetch (in this process: its log goes to caplog); its result and the plan it laid out."""
        self.pods += 1
        keys = public_key_path(self.key_path) if plan_keys is None else plan_keys
        req = request(self.uri, self.tmp_path / f"pod-{self.pods}", self.agent.url,
                      layout=contract.Layout.TRITON_TENSORRT, precision="fp16", trusted_plan_keys=str(keys))
        env = {trt.TRTEXEC_ENV: str(self.trtexec), contract.GPU_COMPUTE_CAPABILITY_ENV: "8.7"}
        result = fetch_mod.fetch(req, env=env, attempts=1)
        return result, (result.model_dir / "1" / contract.PLAN_FILENAME).read_bytes()

    def build_count(self) -> int:
        return len(self.builds.read_text().splitlines())

    def cached_plan(self) -> str:
        """The digest of the plan the agent keeps for this pod's namespace."""
        index = json.loads((self.cache / "index.json").read_text())
        return index["plans"][f"{PLAN_KEY}-ns.vision"]

    def attestation_file(self, digest: str) -> Path:
        return self.cache / "attestations" / f"{digest}.intoto.json"

    def restart(self) -> None:
        self.agent.stop()
        self.agent = self.start_agent("--plan-signing-key", str(self.key_path))


@pytest.fixture
def node(agents, source: SourceServer, tmp_path: Path, fake_trtexec) -> Node:
    return Node(agents, source, tmp_path, fake_trtexec)


def _statement(digest: str, onnx: str = DIGEST, version: str = TRT_VERSION) -> Statement:
    return Statement(contract.PLAN_FILENAME, digest, TensorRTPlan(onnx_sha256=onnx, tensorrt_version=version,
                                                                 compute_capability="8.7", precision="fp16",
                                                                 node="node-a"))


def test_a_plan_with_the_nodes_attestation_is_loaded_and_not_built_again(node: Node, caplog) -> None:
    caplog.set_level(logging.INFO, "edgewise.fetch")
    first, built = node.fetch()
    assert first.plan_from == "built" and node.build_count() == 1
    assert node.attestation_file(sha256(built)).exists()  # the agent attested what the first pod handed it
    second, loaded = node.fetch()
    assert second.plan_from == "agent" and loaded == built and node.build_count() == 1
    assert "plan built on node-a from ONNX sha256" in caplog.text
    status, _, body = http("PUT", f"{node.agent.url}/v1/artifacts/{PLAN_KEY}", b"another engine",
                           {contract.AGENT_SHA256_HEADER: sha256(b"another engine")})
    assert status == 409 and node.cached_plan() == sha256(built), body  # an attested plan is never replaced


def _no_attestation(node: Node, digest: str) -> None:
    node.attestation_file(digest).unlink()


def _resign(node: Node, digest: str, signer: Signer | None = None, **kw: str) -> None:
    """The attestation beside the plan replaced by one signed with `signer` (the node's own key by default)."""
    signer = signer or Signer.load(node.key_path)
    node.attestation_file(digest).write_bytes(sign_statement(_statement(digest, **kw), signer))


def _flipped_byte(node: Node, digest: str) -> None:
    """The plan edited behind the agent's back, stored under its new digest with the index pointing there and the
    genuine attestation moved beside it: the agent serves it with a digest header it matches."""
    node.agent.stop()
    blob = node.cache / "sha256" / digest
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    new = sha256(bytes(data))
    (node.cache / "sha256" / new).write_bytes(bytes(data))
    blob.unlink()
    os.rename(node.attestation_file(digest), node.attestation_file(new))
    index = json.loads((node.cache / "index.json").read_text())
    index["plans"][f"{PLAN_KEY}-ns.vision"] = new
    index["blobs"][new] = index["blobs"].pop(digest)
    (node.cache / "index.json").write_text(json.dumps(index))
    node.restart()
    assert node.cached_plan() == new


@pytest.mark.parametrize(("case", "tamper", "reason"), [
    ("no attestation", _no_attestation, "no_attestation"),
    ("another node's key", lambda node, d: _resign(node, d, generate_ec()), "untrusted_key"),
    ("another ONNX", lambda node, d: _resign(node, d, onnx=sha256(b"another model")), "source_mismatch"),
    ("another TensorRT", lambda node, d: _resign(node, d, version="10.3.0"), "source_mismatch"),
    ("a flipped plan byte", _flipped_byte, "subject_mismatch"),
])
def test_a_plan_whose_attestation_does_not_hold_is_never_loaded_and_is_built_here(
        node: Node, caplog, case: str, tamper: Callable[[Node, str], None], reason: str) -> None:
    _, built = node.fetch()
    tamper(node, sha256(built))
    served = (node.cache / "sha256" / node.cached_plan()).read_bytes()  # what the agent would hand a pod now
    caplog.set_level(logging.INFO, "edgewise.fetch")
    result, laid_out = node.fetch()
    assert result.plan_from == "built" and node.build_count() == 2
    assert laid_out != served and laid_out.startswith(b"FAKE-PLAN")  # the pod's own build, not the agent's plan
    assert f"refused ({reason})" in caplog.text and "building it here" in caplog.text
    assert [p.name for p in result.model_dir.parent.iterdir() if p.name.startswith(".")] == []
    # The agent took the fresh plan in place of the one its key does not vouch for: the next pod loads it.
    assert node.cached_plan() == sha256(laid_out) and node.attestation_file(sha256(laid_out)).exists()
    third, loaded = node.fetch()
    assert third.plan_from == "agent" and loaded == laid_out and node.build_count() == 2


def test_without_plan_keys_the_fetch_takes_the_agents_plan_by_digest_as_before(node: Node) -> None:
    _, built = node.fetch()
    _no_attestation(node, sha256(built))
    node.pods += 1
    req = request(node.uri, node.tmp_path / "pod-plain", node.agent.url, layout=contract.Layout.TRITON_TENSORRT,
                  precision="fp16")
    result = fetch_mod.fetch(req, env={trt.TRTEXEC_ENV: str(node.trtexec),
                                       contract.GPU_COMPUTE_CAPABILITY_ENV: "8.7"}, attempts=1)
    assert result.plan_from == "agent" and node.build_count() == 1


def test_the_fetch_command_takes_the_flag_and_says_why_it_refused(node: Node) -> None:
    _, built = node.fetch()
    _resign(node, sha256(built), generate_ec())
    req = request(node.uri, node.tmp_path / "pod-cli", node.agent.url, layout=contract.Layout.TRITON_TENSORRT,
                  precision="fp16", trusted_plan_keys=str(public_key_path(node.key_path)))
    assert "--trusted-plan-keys" in req.to_args()
    proc = run_fetch(*req.to_args(), env={trt.TRTEXEC_ENV: str(node.trtexec),
                                          contract.GPU_COMPUTE_CAPABILITY_ENV: "8.7"})
    assert proc.returncode == 0, proc.stderr
    assert "refused (untrusted_key)" in proc.stderr and node.build_count() == 2


def test_plan_keys_that_cannot_be_loaded_fail_the_fetch_before_any_download(node: Node, source: SourceServer
                                                                           ) -> None:
    with pytest.raises(ValueError, match="cannot read trusted keys"):
        node.fetch(plan_keys=node.tmp_path / "missing.pub")
    assert not any(path == "/m.onnx" for path, _ in source.requests)

