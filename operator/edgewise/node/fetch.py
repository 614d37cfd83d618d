"""`edgewise fetch`: the runtime pods' init container.

Gets the model from the node agent (or straight from its source when no agent
answers), verifies its digest again — and, with trusted keys (`--trusted-keys`), its
attestation against them and the pinned source (`--source-sha256`), offline — and lays
out the model directory (a plan from the agent, with its plan keys (`--trusted-plan-keys`),
loads only with the agent's attestation naming this ONNX and TensorRT version):

    onnxruntime      <dest>/<model>/1/model.onnx                 (edgewise serve)
    triton-onnx      <dest>/<model>/config.pbtxt + 1/model.onnx  (onnxruntime_onnx + TensorRT accelerator)
    triton-tensorrt  <dest>/<model>/config.pbtxt + 1/model.plan  (plan from the agent, or built here)

The directory is assembled next to its final place and renamed into it, so a
restarted init container never leaves a half layout that a server could load, and a
refused artifact never replaces the model that is there.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgewise import contract
from edgewise.node import triton_config as tc
from edgewise.node import trtexec as trt
from edgewise.node.trust import (
    ATTESTATION_KINDS,
    TrustRefused,
    attestation_of,
    fetch_attestation,
    judge,
    load_trust,
)
from edgewise.shared import download as dl
from edgewise.shared.digest import CHUNK, DigestMismatch, Writer, file_sha256, normalize_digest
from edgewise.shared.tensors import TensorSpec
from edgewise.shared.trust.keys import TrustedKeys
from edgewise.shared.trust.verify import ExpectedPlan, NodeTrust, Reason, Verdict, check_plan

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

log = logging.getLogger("edgewise.fetch")

_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


@dataclass(frozen=True)
class TensorRTOptions:
    """How to get a plan on this node; each None falls back to env (see edgewise.node.trtexec)."""

    compute_capability: str | None = None
    tensorrt_version: str | None = None
    trtexec: str | None = None
    instance_count: int = 1


@dataclass(frozen=True)
class FetchResult:
    model_dir: Path
    artifact_from: str  # "agent" or "source"
    plan_from: str = ""  # "agent" or "built" for triton-tensorrt


def agent_headers(token_file: str) -> dict[str, str]:
    """`Authorization: Bearer` with the pod's projected token, read anew each call (the kubelet
    rotates it). Without one the agent answers 401 and the artifact comes from its source."""
    try:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    except OSError as err:
        log.warning("no token for the node agent at %s (%s): the agent will refuse this pod", token_file, err)
        return {}
    return {"Authorization": f"Bearer {token}"} if token else {}


def _agent_openers(headers: dict[str, str]) -> dict[str, dl.Opener]:
    opener = dl.http_opener(headers=headers, follow_redirects=False)  # the token goes to the agent only
    return {"http": opener, "https": opener}


def artifact_url(agent: str, sha256: str, uri: str, model: str, source: str = "") -> str:
    path = contract.AGENT_ARTIFACT_PATH.format(key=sha256)
    query = {"uri": uri, "model": model} | ({"source": source} if source else {})
    return f"{agent.rstrip('/')}{path}?{urllib.parse.urlencode(query)}"


def plan_url(agent: str, key: str) -> str:
    return agent.rstrip("/") + contract.AGENT_ARTIFACT_PATH.format(key=key)


def get_artifact(req: contract.FetchRequest, w: Writer, *, attempts: int, trust: NodeTrust | None = None) -> str:
    """Fill `w` with the verified artifact from the agent, else from the source; say which.

    The agent's bytes are hashed again here: a broken agent costs a download, never a wrong model.
    With `trust`, the attestation is checked here too (TrustRefused); an agent that refused the
    artifact for its attestation is believed: the source would give the same bytes and attestation.
    """
    expected = normalize_digest(req.sha256)
    if req.agent:
        try:
            headers = agent_headers(req.agent_token_file)
            stage_in_agent(req.agent, expected, req.uri, req.model_name, headers=headers, source=req.source_sha256)
            # The agent is on this node: two quick tries, then go around it.
            dl.download(artifact_url(req.agent, expected, req.uri, req.model_name, req.source_sha256), w,
                        attempts=2, base_delay=0.2, timeout=120, openers=_agent_openers(headers))
            w.check_digest(expected)
            if trust is not None:
                envelope = fetch_attestation(req.agent.rstrip("/") + contract.AGENT_ATTESTATION_PATH.format(
                    sha256=expected), openers=_agent_openers(headers), attempts=2, base_delay=0.2)
                judge(trust, w.hexdigest(), envelope, expected, req.source_sha256)
            return "agent"
        except (dl.DownloadError, DigestMismatch) as err:
            log.warning("node agent could not deliver %s (%s); fetching from the source", expected, err)
            w.reset()
    dl.download(req.uri, w, attempts=attempts,
                on_retry=lambda n, err: log.info("retry %d of %s: %s", n, req.uri, err))
    w.check_digest(expected)
    if trust is not None:
        judge(trust, w.hexdigest(), attestation_of(req.uri, attempts=attempts), expected, req.source_sha256)
    return "source"


def _agent_json(method: str, url: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as err:
        with err:
            raise dl.PermanentError(f"{method} {url}: HTTP {err.code} {err.read()[:500]!r}") from err
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise dl.TransientError(f"{method} {url}: {err}") from err


def stage_in_agent(
    agent: str, sha256: str, uri: str, model: str, *, sleep: Callable[[float], None] = time.sleep,
    headers: Mapping[str, str] | None = None, source: str = "",
) -> None:
    """Have the agent cache the artifact (a prefetch) and wait until it is there.

    Waiting on the prefetch status rather than on a GET keeps no connection idle
    while the agent downloads a large model over a slow uplink.
    """
    base = agent.rstrip("/") + contract.AGENT_PREFETCH_PATH
    body = {"uri": uri, "sha256": sha256, "model": model} | ({"sourceSha256": source} if source else {})
    view = _agent_json("POST", base, json.dumps(body).encode(), headers)
    delay, logged = 0.1, time.monotonic()
    while view.get("state") not in ("ready", "failed"):
        sleep(delay)
        delay = min(delay * 2, 2.0)
        view = _agent_json("GET", f"{base}/{sha256}", headers=headers)
        if time.monotonic() - logged > 10:
            logged = time.monotonic()
            log.info("node agent is downloading %s: %s bytes so far", sha256, view.get("bytes"))
    if view["state"] == "failed":
        if view.get("errorKind") in ATTESTATION_KINDS:  # the agent's verdict on the attestation, by the same rules
            raise TrustRefused(Verdict(Reason(view["errorKind"]), f"the node agent refused it: {view.get('error')}"))
        raise dl.PermanentError(f"node agent could not stage it: {view.get('error')}")


@dataclass(frozen=True)
class PlanCheck:
    """What a plan from the agent must be attested as: by one of the node's plan keys, built from this (verified)
    ONNX with the TensorRT this node runs. Without one (no --trusted-plan-keys) a plan's digest is all that counts."""

    keys: TrustedKeys
    onnx_sha256: str
    tensorrt_version: str


def get_plan(agent: str, key: str, path: Path, headers: Mapping[str, str] | None = None,
             check: PlanCheck | None = None) -> bool:
    """Copy the plan cached under `key` to `path`, verified against the agent's digest header (and its
    attestation with `check`). False, with nothing at `path`, when the plan must be built here instead."""
    try:
        resp = urllib.request.urlopen(urllib.request.Request(plan_url(agent, key), headers=dict(headers or {})),
                                      timeout=60)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code != 404:
            log.warning("node agent answered %d for plan %s; building it here", err.code, key)
        return False
    except (urllib.error.URLError, OSError) as err:
        log.warning("node agent unreachable for plan %s (%s); building it here", key, err)
        return False
    w = Writer(path)
    try:
        with resp:
            expected = resp.headers.get(contract.AGENT_SHA256_HEADER, "")
            while chunk := resp.read(CHUNK):
                w.write(chunk)
        w.finish()
        w.check_digest(expected)
    except (DigestMismatch, OSError) as err:
        log.warning("plan %s from the agent is unusable (%s); building it here", key, err)
        w.abort()
        return False
    if check is not None and not _plan_attested(agent, key, w.hexdigest(), expected, headers, check):
        w.abort()  # never loaded: the caller builds its own at `path`
        return False
    return True


def _plan_attested(agent: str, key: str, actual: str, expected: str, headers: Mapping[str, str] | None,
                   check: PlanCheck) -> bool:
    """The agent's attestation of the plan (hex sha256 `expected`, as its header said), judged by
    verify.check_plan; a refusal is logged with its reason."""
    url = agent.rstrip("/") + contract.AGENT_ATTESTATION_PATH.format(sha256=expected)
    try:
        envelope = fetch_attestation(url, openers=_agent_openers(dict(headers or {})), attempts=2, base_delay=0.2)
    except dl.TransientError as err:
        log.warning("plan %s: its attestation could not be read from the node agent (%s); building it here",
                    key, err)
        return False
    verdict = check_plan(actual, envelope, check.keys, ExpectedPlan(expected, check.onnx_sha256,
                                                                    check.tensorrt_version))
    if not verdict.ok:
        log.warning("plan %s from the node agent refused (%s): %s; building it here", key, verdict.reason.value,
                    verdict.message)
        return False
    log.info("plan %s: %s", key, verdict.message)
    return True


def put_plan(agent: str, key: str, path: Path, sha256: str, auth: Mapping[str, str] | None = None) -> bool:
    """Hand a built plan to the agent so the next pod on this node skips the build."""
    headers = {contract.AGENT_SHA256_HEADER: sha256, "Content-Type": "application/octet-stream",
               "Content-Length": str(path.stat().st_size), **(auth or {})}
    try:
        with open(path, "rb") as body:
            request = urllib.request.Request(plan_url(agent, key), data=body, method="PUT", headers=headers)
            with urllib.request.urlopen(request, timeout=600):
                pass
    except (urllib.error.URLError, OSError) as err:
        log.warning("could not store plan %s in the node agent: %s", key, err)
        return False
    return True


def build_plan(command: list[str]) -> None:
    log.info("building TensorRT plan: %s", " ".join(command))
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise RuntimeError(f"trtexec failed with exit code {proc.returncode}:\n{tail}")


def _write_config(model_dir: Path, cfg: ModelConfig) -> None:
    (model_dir / contract.TRITON_CONFIG).write_text(tc.render(cfg), encoding="utf-8")


@dataclass(frozen=True)
class _PlanTarget:
    """Everything the plan depends on besides the model: resolved before any long build."""

    trtexec: str
    key: str
    tensorrt_version: str
    tensorrt_major: int | None


def _plan_target(req: contract.FetchRequest, options: TensorRTOptions, env: Mapping[str, str]) -> _PlanTarget:
    cc = trt.compute_capability(options.compute_capability, env)
    executable = trt.find_trtexec(options.trtexec, env)
    version = trt.detect_tensorrt_version(executable, options.tensorrt_version, env)
    major = version.split(".")[0]
    return _PlanTarget(executable, contract.plan_cache_key(req.sha256, cc, version, req.precision), version,
                       int(major) if major.isdigit() else None)


def _get_or_build_plan(
    req: contract.FetchRequest, target: _PlanTarget, onnx_path: Path, inputs: list[TensorSpec],
    plan_path: Path, plan_keys: TrustedKeys | None = None,
) -> str:
    """Put the plan at `plan_path`: from the agent (attested, with `plan_keys`), or built here and handed to it."""
    headers = agent_headers(req.agent_token_file) if req.agent else {}
    check = None if plan_keys is None else PlanCheck(plan_keys, req.sha256, target.tensorrt_version)
    if req.agent and get_plan(req.agent, target.key, plan_path, headers, check):
        log.info("plan %s from the node agent", target.key)
        return "agent"
    build_plan(trt.trtexec_command(target.trtexec, onnx_path, plan_path, precision=req.precision,
                                   inputs=inputs, max_batch_size=req.max_batch_size))
    if not plan_path.is_file() or plan_path.stat().st_size == 0:
        raise RuntimeError(f"trtexec exited 0 but wrote no plan at {plan_path}")
    if req.agent:
        put_plan(req.agent, target.key, plan_path, file_sha256(plan_path), agent_headers(req.agent_token_file))
    return "built"


def _publish(staging: Path, final: Path) -> None:
    """Swap the assembled directory into place; what was there (a previous try) goes."""
    trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex}")
    if final.exists():
        os.rename(final, trash)
    os.rename(staging, final)
    shutil.rmtree(trash, ignore_errors=True)


def fetch(
    req: contract.FetchRequest, *, options: TensorRTOptions = TensorRTOptions(),
    env: Mapping[str, str] | None = None, attempts: int = 5,
) -> FetchResult:
    env = os.environ if env is None else env
    if not _MODEL_NAME_RE.match(req.model_name):
        raise ValueError(f"model name {req.model_name!r} is not a plain directory name")
    req = dataclasses.replace(req, sha256=normalize_digest(req.sha256),  # 'sha256:<hex>' too
                              source_sha256=normalize_digest(req.source_sha256) if req.source_sha256 else "")
    trust = load_trust(req.trusted_keys, req.require_signed_source, env)
    # Read before any download: keys that cannot be loaded are a configuration error, said at once.
    plan_keys = TrustedKeys.load(req.trusted_plan_keys) if req.trusted_plan_keys else None
    dest = Path(req.dest)
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / f".{req.model_name}.staging-{uuid.uuid4().hex}"
    version_dir = staging / contract.MODEL_VERSION_DIR
    version_dir.mkdir(parents=True)
    try:
        onnx_path = version_dir / contract.ONNX_FILENAME
        w = Writer(onnx_path)
        try:
            origin = get_artifact(req, w, attempts=attempts, trust=trust)
            w.finish()
        except BaseException:
            w.abort()
            raise
        batching = tc.Batching(req.max_batch_size, req.max_queue_delay_us)
        plan_from = ""
        if req.layout is contract.Layout.TRITON_ONNX:
            inputs, outputs = tc.load_onnx_io(onnx_path)
            _write_config(staging, tc.onnx_tensorrt_config(
                req.model_name, inputs, outputs, batching=batching,
                instance_count=options.instance_count, precision=req.precision))
        elif req.layout is contract.Layout.TRITON_OPENVINO:
            inputs, outputs = tc.load_onnx_io(onnx_path)
            _write_config(staging, tc.openvino_config(
                req.model_name, inputs, outputs, batching=batching,
                instance_count=options.instance_count, device=req.device))
        elif req.layout is contract.Layout.TRITON_TENSORRT:
            inputs, outputs = tc.load_onnx_io(onnx_path)
            target = _plan_target(req, options, env)
            # The config first: a model Triton can't batch fails now, not after a long build.
            _write_config(staging, tc.tensorrt_plan_config(
                req.model_name, inputs, outputs, batching=batching,
                instance_count=options.instance_count, tensorrt_major=target.tensorrt_major))
            plan_path = version_dir / contract.PLAN_FILENAME
            plan_from = _get_or_build_plan(req, target, onnx_path, inputs, plan_path, plan_keys)
            onnx_path.unlink()  # Triton loads model.plan; the ONNX is not part of this repo
        final = dest / req.model_name
        _publish(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("laid out %s (%s) in %s from the %s", req.model_name, req.layout.value, final, origin)
    return FetchResult(model_dir=final, artifact_from=origin, plan_from=plan_from)
