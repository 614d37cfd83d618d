"""The contract between the operator and the node runtime, in one place.

The operator renders pod templates from these names; the node side (`edgewise
fetch`, `edgewise agent`, `edgewise serve`) parses and serves them. Neither
side imports the other: both import this module, which imports nothing of
Edgewise.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

# Ports of every runtime container: Triton's defaults, so one probe, one client
# and one scrape config cover Triton on Jetson and `edgewise serve` on CPUs.
HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002

# The node agent listens on the node's own address (hostNetwork); pods find it
# through the downward API's status.hostIP.
AGENT_PORT = 9470
AGENT_HOST_ENV = "EDGEWISE_NODE_IP"
# The agent's hostPath: the node cache (sha256/, tmp/, index.json).
AGENT_CACHE_DIR = "/var/lib/edgewise/cache"

# Env of the triton-tensorrt init container: the operator sets the compute capability
# ("8.7") from the node's nvidia.com/gpu.compute.major/minor labels; the TensorRT version
# is detected from trtexec unless the image or the operator sets it.
GPU_COMPUTE_CAPABILITY_ENV = "EDGEWISE_GPU_COMPUTE_CAPABILITY"
TENSORRT_VERSION_ENV = "EDGEWISE_TENSORRT_VERSION"

# Where the init container lays out the model, in the pod's emptyDir.
MODEL_VOLUME = "models"
MODEL_ROOT = "/models"
MODEL_VERSION_DIR = "1"  # Triton-style numeric version directory
ONNX_FILENAME = "model.onnx"
PLAN_FILENAME = "model.plan"
TRITON_CONFIG = "config.pbtxt"

# Health endpoints of the KServe-V2 protocol, used for probes.
LIVE_PATH = "/v2/health/live"
READY_PATH = "/v2/health/ready"

# Agent HTTP API.
AGENT_ARTIFACT_PATH = "/v1/artifacts/{key}"  # GET (with ?uri= to fill a miss), PUT (built plans)
AGENT_PREFETCH_PATH = "/v1/prefetch"  # POST {"uri":…, "sha256":…, "model":…}
AGENT_HEALTH_PATH = "/healthz"
AGENT_TELEMETRY_PATH = "/v1/telemetry"  # GET: the node's power (W) and temperature (°C), or why not
# Hex sha256 of the body: sent with every artifact the agent serves, required on a plan PUT.
AGENT_SHA256_HEADER = "X-Edgewise-Sha256"
# Who may call the agent: a projected ServiceAccount token with this audience, sent as
# `Authorization: Bearer`. The agent checks it with a TokenReview. Runtime pods get one in the
# fetch init container only (bound to the pod, so it names the pod's node); the operator asks
# for its own through the TokenRequest API.
AGENT_AUDIENCE = "edgewise-agent"
AGENT_TOKEN_SECONDS = 600  # the shortest expiry the apiserver grants; the kubelet rotates it
AGENT_TOKEN_VOLUME = "agent-token"
AGENT_TOKEN_DIR = "/var/run/secrets/edgewise.io/agent"
AGENT_TOKEN_FILE = f"{AGENT_TOKEN_DIR}/token"
# The agent's own node (downward API spec.nodeName): a pod may use the agent only if its
# token is bound to this node.
AGENT_NODE_NAME_ENV = "NODE_NAME"


# What a hardware class names (DeploymentProfile spec.classes[].runtime, .precision), what the
# optimizer targets, and how int8 artifacts are made (EdgeModel spec.optimization.quantization):
# here, not in the API types, because the optimizer's command runs in images without pydantic.
Runtime = Literal["triton-tensorrt", "onnxruntime", "openvino"]
# The OpenVINO device plugin an `openvino` class runs on (`edgewise serve --backend openvino --device`).
Device = Literal["CPU", "GPU", "NPU", "AUTO"]
Precision = Literal["fp32", "fp16", "int8"]
Quantization = Literal["auto", "dynamic", "static", "none"]
# Calibration samples an optimization uses at most, unless spec.optimization.calibration.maxSamples says.
DEFAULT_MAX_SAMPLES = 256


class Layout(StrEnum):
    """How `edgewise fetch` lays out the model directory for a runtime."""

    ONNXRUNTIME = "onnxruntime"  # <root>/<model>/1/model.onnx, served by `edgewise serve`
    TRITON_TENSORRT = "triton-tensorrt"  # Triton repo; plan built on the node by trtexec
    TRITON_ONNX = "triton-onnx"  # Triton repo with onnxruntime_onnx + TensorRT accelerator
    TRITON_OPENVINO = "triton-openvino"  # Triton repo for Triton's OpenVINO backend (model.onnx), on Intel


# Callers of the agent are told apart by their Kubernetes user name; a ServiceAccount's is
# system:serviceaccount:<namespace>:<name> (the agent checks it, the operator names itself by it).
SA_PREFIX = "system:serviceaccount:"


def service_account(user: str) -> tuple[str, str] | None:
    """(namespace, name) of a ServiceAccount's user name; None for any other user."""
    if not user.startswith(SA_PREFIX):
        return None
    namespace, _, name = user[len(SA_PREFIX):].partition(":")
    return namespace, name


def model_dir(model_name: str, root: str = MODEL_ROOT) -> str:
    """The directory `edgewise serve --model-dir` points at (Triton layout)."""
    return f"{root}/{model_name}"


def agent_url(host: str) -> str:
    return f"http://{host}:{AGENT_PORT}"


def plan_cache_key(model_sha256: str, compute_capability: str, tensorrt_version: str, precision: str) -> str:
    """Key of a TensorRT plan in the node cache.

    A plan runs only on the GPU compute capability and TensorRT version that built
    it, so both are part of the key: a node never reuses another device's plan.
    """
    cc = compute_capability.replace(".", "")
    return f"plan-{model_sha256}-sm{cc}-trt{tensorrt_version}-{precision}"


@dataclass(frozen=True)
class FetchRequest:
    """Arguments of `edgewise fetch`, the runtime pods' init container."""

    uri: str
    sha256: str
    model_name: str
    layout: Layout = Layout.ONNXRUNTIME
    dest: str = MODEL_ROOT
    agent: str = ""  # http://<node-ip>:<port>; empty means go straight to the source
    agent_token_file: str = AGENT_TOKEN_FILE  # bearer token for the agent (projected SA token)
    precision: str = "fp32"
    max_batch_size: int = 0
    max_queue_delay_us: int = 0
    extra: dict[str, str] = field(default_factory=dict)
    # Trust (docs/security.md): the EdgeModel's pinned source digest, which the artifact's attestation must
    # name, and the operator's attestation keys (a mounted PEM file or directory). Empty: digest only.
    source_sha256: str = ""
    trusted_keys: str = ""
    require_signed_source: bool = False
    # triton-tensorrt: the node agent's plan public key(s) (a PEM file or directory). A plan from the agent then
    # loads only with the agent's attestation naming this ONNX and TensorRT version; else it is built here.
    trusted_plan_keys: str = ""
    # triton-openvino: the OpenVINO device Triton's OpenVINO backend runs the model on (its TARGET_DEVICE).
    device: str = "CPU"

    def to_args(self) -> list[str]:
        args = [
            "--uri", self.uri,
            "--sha256", self.sha256,
            "--model-name", self.model_name,
            "--layout", self.layout.value,
            "--dest", self.dest,
            "--precision", self.precision,
            "--max-batch-size", str(self.max_batch_size),
            "--max-queue-delay-us", str(self.max_queue_delay_us),
        ]
        if self.agent:
            args += ["--agent", self.agent, "--agent-token-file", self.agent_token_file]
        if self.source_sha256:
            args += ["--source-sha256", self.source_sha256]
        if self.trusted_keys:
            args += ["--trusted-keys", self.trusted_keys]
        if self.require_signed_source:
            args += ["--require-signed-source"]
        if self.trusted_plan_keys:
            args += ["--trusted-plan-keys", self.trusted_plan_keys]
        if self.layout is Layout.TRITON_OPENVINO:
            args += ["--device", self.device]
        return args

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--uri", required=True, help="source of the artifact (http(s)://, file://, oci://)")
        parser.add_argument("--sha256", required=True, help="expected hex sha256 of the artifact")
        parser.add_argument("--model-name", required=True)
        parser.add_argument("--layout", choices=[lay.value for lay in Layout], default=Layout.ONNXRUNTIME.value)
        parser.add_argument("--dest", default=MODEL_ROOT, help="root of the model directory to lay out")
        parser.add_argument("--agent", default="", help="node agent URL; empty: fetch from the source")
        parser.add_argument("--agent-token-file", default=AGENT_TOKEN_FILE,
                            help="bearer token for the agent: a projected ServiceAccount token with audience "
                                 f"{AGENT_AUDIENCE} (re-read on every call: the kubelet rotates it)")
        parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
        parser.add_argument("--max-batch-size", type=int, default=0)
        parser.add_argument("--max-queue-delay-us", type=int, default=0)
        parser.add_argument("--source-sha256", default="",
                            help="hex sha256 of the EdgeModel's source: the artifact's attestation must name it")
        parser.add_argument("--trusted-keys", default="",
                            help="the operator's attestation public keys (PEM file or directory); default "
                                 f"${TRUSTED_KEYS_ENV}; unset: the artifact is checked by digest only")
        parser.add_argument("--require-signed-source", action="store_true",
                            help="refuse an artifact derived from an unsigned source model")
        parser.add_argument("--trusted-plan-keys", default="",
                            help="triton-tensorrt: the node agent's plan public key(s) (PEM file or directory); a "
                                 "plan from the agent loads only with its attestation by one of them naming this "
                                 "ONNX and TensorRT version, else it is built here; unset: digest only")
        parser.add_argument("--device", default="CPU", choices=["CPU", "GPU", "NPU", "AUTO"],
                            help="triton-openvino: the OpenVINO device the config names (TARGET_DEVICE)")

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> FetchRequest:
        return cls(
            uri=ns.uri, sha256=ns.sha256, model_name=ns.model_name, layout=Layout(ns.layout),
            dest=ns.dest, agent=ns.agent, agent_token_file=ns.agent_token_file, precision=ns.precision,
            max_batch_size=ns.max_batch_size, max_queue_delay_us=ns.max_queue_delay_us,
            source_sha256=ns.source_sha256, trusted_keys=ns.trusted_keys,
            require_signed_source=ns.require_signed_source, trusted_plan_keys=ns.trusted_plan_keys,
            device=ns.device,
        )

# Request latency histogram of `edgewise serve` (seconds; labels model, version). Triton has
# no histogram under a stable name, so canary analysis of ONNX Runtime nodes queries this
# one for p95, next to Triton's own nv_inference_* counters on both kinds of node.
LATENCY_HISTOGRAM = "edgewise_inference_request_duration_seconds"

# oci:// artifacts: registries are reached over HTTPS, except loopback hosts and the hosts
# listed in this env var (comma-separated host[:port], or "*"), which use plain HTTP.
OCI_INSECURE_ENV = "EDGEWISE_OCI_INSECURE"
# Media type of a model layer pushed by the OCI artifact store; `edgewise fetch` pulls this layer.
OCI_MODEL_MEDIA_TYPE = "application/vnd.edgewise.model.onnx.v1"

# Optimization Jobs (spec.optimization.runIn: Job): the Job's pod gets its job spec and an upload
# token from the environment and PUTs its results to the operator's artifact store. The operator
# accepts an upload only for a job it started, with that job's token.
JOB_SPEC_ENV = "EDGEWISE_JOB_SPEC"
JOB_TOKEN_ENV = "EDGEWISE_UPLOAD_TOKEN"
JOB_UPLOAD_PATH = "/uploads/{key}/{part}"  # part: artifact (octet-stream, X-Edgewise-Sha256) | attestation | report
JOB_WORK_DIR = "/work"
JOB_FILE = "job.json"  # in the job's work directory: the job (api/optimization_job.py) as the operator hashed it
# A job report's field with an error's own words: the operator logs it and drops it before the report
# reaches a model's status, where a server's answer or a local path must never appear.
JOB_REPORT_DETAIL = "detail"

# Attestations (docs/security.md): each artifact the optimizer derives has a DSSE-wrapped in-toto
# statement next to it, signed with the operator's key. Where "next to it" is, for every kind of URI:
# http(s)/file: the artifact's URI + ATTESTATION_SUFFIX (the built-in store serves it there);
# oci: a manifest tagged OCI_ATTESTATION_TAG (whose `subject` is the artifact's manifest) with one layer.
ATTESTATION_SUFFIX = ".intoto.json"
OCI_ATTESTATION_TAG = "sha256-{hex}.att"
OCI_ATTESTATION_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"  # the layer: the envelope
OCI_ATTESTATION_ARTIFACT_TYPE = "application/vnd.in-toto+json"  # the referrer manifest's artifactType
# The optimizer's signing key (a PEM file, e.g. a Secret's key mounted into the operator); unset: no attestation.
ATTESTATION_KEY_ENV = "EDGEWISE_ATTESTATION_KEY_FILE"
# The node's pinned trust (`edgewise agent --trusted-keys`, `edgewise fetch --trusted-keys`): a PEM file or a
# directory of them (a ConfigMap volume); unset: artifacts are checked by digest only, as before.
TRUSTED_KEYS_ENV = "EDGEWISE_TRUSTED_KEYS"
# Where the operator mounts the nodes' trusted keys (a ConfigMap) into the agent and the fetch container.
TRUSTED_KEYS_DIR = "/etc/edgewise/trust"
TRUSTED_KEYS_VOLUME = "trusted-keys"
# The node's own plan key (`edgewise agent --plan-signing-key`): generated by the agent on first start under
# its cache (a hostPath, so it survives restarts), its public half beside it (shared.trust.keys.public_key_path,
# world-readable). The triton-tensorrt fetch reads that directory through a read-only hostPath.
PLAN_KEY_SUBDIR = "plan-key"
PLAN_KEY_FILE = "node.pem"
PLAN_PUBLIC_KEY_FILE = "node.pem.pub"
PLAN_KEYS_DIR = "/etc/edgewise/plan-key"  # where the fetch container mounts it
PLAN_KEYS_VOLUME = "plan-key"
# Beside the job file in a worker process's job directory: who signed the source, as the operator checked it
# ({"signer": ..., "bundleSha256": ...}); the attestation binds it. Absent: the source was not checked as signed.
SOURCE_SIGNATURE_FILE = "source-signature.json"
AGENT_ATTESTATION_PATH = "/v1/attestations/{sha256}"  # GET: the cached attestation of a cached artifact


def attestation_uri(artifact_uri: str) -> str:
    """Where the attestation of the artifact at `artifact_uri` is (see ATTESTATION_SUFFIX)."""
    if artifact_uri.startswith("oci://"):
        base, sep, digest = artifact_uri.rpartition("@sha256:")
        if not sep:
            raise ValueError(f"{artifact_uri}: an attested oci:// artifact is named by its digest (@sha256:<hex>)")
        return f"{base}:{OCI_ATTESTATION_TAG.format(hex=digest)}"
    path, sep, query = artifact_uri.partition("?")
    return f"{path}{ATTESTATION_SUFFIX}{sep}{query}"
