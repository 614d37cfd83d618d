"""EdgeModel: one model, one version, shipped to every hardware class of a profile."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from edgewise.api.base import (
    DNS_SUBDOMAIN_PATTERN,
    LABEL_VALUE_PATTERN,
    ApiModel,
    Duration,
    LabelKey,
    Memory,
    Sha256,
    cel,
    duration_bounds,
    nested,
    validations,
)
from edgewise.api.windows import Windows
from edgewise.contract import DEFAULT_MAX_SAMPLES, Quantization

# Rules shared by every reference to a downloadable file.
_DIGEST_RULES = validations(
    cel("!(self.uri.startsWith('http://') || self.uri.startsWith('https://')) || has(self.sha256)",
        "an http(s) uri needs sha256: nodes verify every download against it", field_path=".sha256",
        reason="FieldValueRequired"),
    cel("!self.uri.startsWith('file://') || has(self.sha256)",
        "a file:// uri needs sha256: nodes verify every file against it", field_path=".sha256",
        reason="FieldValueRequired"),
    cel("!self.uri.startsWith('oci://') || has(self.sha256) || self.uri.contains('@sha256:')",
        "an oci:// uri needs sha256 or a reference pinned by digest (…@sha256:<hex>)",
        field_path=".uri"),
)

# Printable ASCII without spaces (percent-encode the rest, as URLs do): a uri goes into container
# arguments and request lines as it is, and the server-side apply of a DaemonSet that carries it is
# parsed as YAML, which refuses the escapes JSON writes for some characters (found by the admission
# property test: a file:// uri with U+10000 made every apply of its DaemonSet fail).
URI_PATTERN = r"^(https?|file|oci)://[!-~]+$"

# An OCI registry repository as an artifact store reference (artifacts/factory.py reads it).
ARTIFACT_STORE_PATTERN = r"^oci://[-a-zA-Z0-9.:]+/[a-z0-9]+([._/-][a-z0-9]+)*$"


class SourceSignature(ApiModel):
    """A detached OpenSSF model-signing bundle of the source model, pinned by digest (docs/security.md)."""

    model_config = {"json_schema_extra": _DIGEST_RULES}

    uri: str = Field(max_length=2048, pattern=URI_PATTERN,
                     description="Location of the model-signing bundle (the JSON file `model_signing sign` writes "
                                 "with a key or a certificate): http(s)://, file:// or oci://. It is verified "
                                 "offline against the trust policy's keys and certificate chains; no transparency "
                                 "log is asked.")
    sha256: Sha256 | None = Field(
        default=None,
        description="Hex sha256 of the bundle file, so the signature checked is the one named here.")


class Source(ApiModel):
    """Where the original model comes from, pinned by digest."""

    model_config = {"json_schema_extra": _DIGEST_RULES}

    uri: str = Field(max_length=2048, pattern=URI_PATTERN,
                     description="Location of the ONNX model: http(s)://, file:// (on the node agent's "
                                 "host) or oci:// (an OCI artifact).")
    sha256: Sha256 | None = Field(
        default=None,
        description="Hex sha256 of the file. Every node verifies it before serving; required except for "
                    "an oci:// reference pinned by digest.")
    signature: SourceSignature | None = Field(
        default=None,
        description="The model's detached model-signing bundle. Checked against the trust policy (the profile's "
                    "spec.trustPolicy, else the operator's): a bad signature or a signer the policy does not name "
                    "deploys nothing; without a signature the model is Unsigned, which the policy allows unless "
                    "it sets requireSigned. The operator fetches the bundle and the model (each pinned by its "
                    "sha256; file:// only where the operator may read it) and reports the verdict in the "
                    "SourceTrusted condition.")

    def digest(self) -> str:
        """The sha256 nodes verify: explicit, or the one pinned in an oci:// reference."""
        if self.sha256:
            return self.sha256
        _, _, pinned = self.uri.partition("@sha256:")
        return pinned


class Calibration(ApiModel):
    """Representative inputs for static quantization and for the accuracy gate."""

    model_config = {"json_schema_extra": _DIGEST_RULES}

    uri: str = Field(max_length=2048, pattern=URI_PATTERN,
                     description="Location of a .npz file whose arrays are named after the model's inputs.")
    sha256: Sha256 | None = Field(default=None, description="Hex sha256 of the file.")
    max_samples: int = Field(default=DEFAULT_MAX_SAMPLES, ge=1, le=100_000,
                             description="At most this many samples are used.")


class AccuracyGate(ApiModel):
    """How close an optimized artifact's outputs must stay to the original's."""

    min_cosine: float = Field(default=0.99, ge=0, le=1,
                              description="Minimum cosine similarity of outputs, per sample, against the "
                                          "original model.")
    max_top1_drop_percent: float = Field(
        default=1.0, ge=0, le=100,
        description="For classifiers: largest allowed drop of top-1 agreement with the original, in "
                    "percentage points.")


class Optimization(ApiModel):
    """How artifacts are produced per class from the original model."""

    model_config = {"json_schema_extra": validations(
        cel("self.quantization != 'static' || has(self.calibration)",
            "static int8 quantization needs calibration data: set optimization.calibration",
            field_path=".calibration", reason="FieldValueRequired"),
        cel("!has(self.jobMemory) || self.runIn == 'Job'",
            "jobMemory sizes a Kubernetes Job: set runIn: Job, or remove jobMemory (a worker process "
            "gets the operator's limit)", field_path=".jobMemory"),
    )}

    quantization: Quantization = Field(
        default="auto",
        description="How int8 artifacts are made: auto (static QDQ for convolutional models when "
                    "calibration is given, dynamic per-channel for MatMul-heavy ones), dynamic, static "
                    "(needs calibration), or none (int8 classes get the float model).")
    calibration: Calibration | None = Field(default=None, description="Calibration and validation inputs.")
    accuracy_gate: AccuracyGate = nested(AccuracyGate, "Gate every optimized artifact must pass.")
    fallback: bool = Field(
        default=True,
        description="When an artifact fails the accuracy gate: true falls back to the next precision "
                    "(int8 → fp16 → fp32); false rejects the class (condition OptimizationRejected).")
    keep_float: list[Annotated[str, StringConstraints(min_length=1, max_length=256)]] | None = Field(
        default=None, max_length=64,
        description="ONNX node names or operator types (e.g. Softmax) left in float when quantizing.")
    artifact_store: str | None = Field(
        default=None, max_length=512, pattern=ARTIFACT_STORE_PATTERN,
        description="Where this model's optimized artifacts are kept and fetched from: unset for the operator's "
                    "built-in store, or oci://host[:port]/repository to push them to an OCI registry as "
                    "artifacts, from which nodes pull them (verified by digest either way).")
    run_in: Literal["Process", "Job"] = Field(
        default="Process",
        description="Where optimization runs: Process (a worker process of the operator, under the operator's "
                    "memory and time limits) or Job (a Kubernetes Job in the operator's namespace, sized by "
                    "jobMemory: for models too big for the operator's pod). The artifact is the same either way.")
    job_memory: Memory | None = Field(
        default=None, json_schema_extra=validations(cel(
            "quantity(self).compareTo(quantity('256Mi')) >= 0 && quantity(self).compareTo(quantity('1Ti')) <= 0",
            "jobMemory must be between 256Mi and 1Ti, e.g. 16Gi")),
        description="Memory request and limit of the optimization Job, e.g. 16Gi (runIn: Job only; default: "
                    "the operator's optimization memory limit).")


class Pause(ApiModel):
    """Wait before the next step."""

    duration: Duration | None = Field(
        default=None, description="How long to wait, e.g. 10m (at most 720h); without it the rollout waits "
                                  "until promoted.",
        json_schema_extra=duration_bounds("0s", "720h", "a pause"))


SiteName = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=LABEL_VALUE_PATTERN)]


class Step(ApiModel):
    """One rollout step: move a share of each class's nodes (a percentage of nodes, a number or a percentage of
    sites) to the new version, or pause."""

    model_config = {"json_schema_extra": validations(
        cel("[has(self.percent), has(self.sites), has(self.sitesPercent), has(self.pause)]"
            ".filter(x, x).size() == 1",
            "a step sets exactly one of percent, sites, sitesPercent or pause, e.g. {sites: 1} or {percent: 100}"),
        cel("!has(self.canarySites) || !has(self.pause)",
            "canarySites pins sites to a step that moves nodes: use it with percent, sites or sitesPercent, "
            "not with pause", field_path=".canarySites"),
        cel("!has(self.canarySites) || self.canarySites.all(a, self.canarySites.filter(b, b == a).size() == 1)",
            "canarySites must not repeat a site", field_path=".canarySites"),
    )}

    percent: int | None = Field(default=None, ge=1, le=100,
                                description="Percentage of each class's nodes that run the new version "
                                            "(at least one node). When the rollout has site steps, nodes are "
                                            "taken site by site (canary sites first, then sites in a stable "
                                            "hashed order).")
    sites: int | None = Field(default=None, ge=1, le=10_000,
                              description="Number of each class's sites whose nodes all run the new version, "
                                          "counting the canary sites (the implicit site of nodes without the "
                                          "site label counts as one, and comes last).")
    sites_percent: int | None = Field(default=None, ge=1, le=100,
                                      description="Percentage of each class's sites whose nodes all run the new "
                                                  "version (at least one site), counting the canary sites.")
    canary_sites: list[SiteName] | None = Field(
        default=None, min_length=1, max_length=32,
        description="Sites (values of the site label) that are in this step whatever its size, before any "
                    "other site: mandatory canary groups. They stay on the new version in later steps, and "
                    "must pass this step's analysis like every other site.")
    pause: Pause | None = Field(default=None, description="Pause the rollout.")

    @property
    def moves(self) -> bool:
        """A step that places nodes (not a pause)."""
        return self.pause is None


class PrometheusSettings(ApiModel):
    """Where the prometheus analysis provider reads metrics."""

    address: str = Field(max_length=2048, pattern=r"^https?://.+",
                         description="Base URL of the Prometheus HTTP API.")


class GoldenInputs(ApiModel):
    """Stored inputs whose outputs a new version must reproduce."""

    model_config = {"json_schema_extra": _DIGEST_RULES}

    uri: str = Field(max_length=2048, pattern=URI_PATTERN, description="Location of a .npz of inputs.")
    sha256: Sha256 | None = Field(default=None, description="Hex sha256 of the file.")
    min_cosine: float = Field(default=0.99, ge=0, le=1,
                              description="Minimum cosine similarity of canary outputs against stable.")


class Analysis(ApiModel):
    """How a canary is judged against the stable nodes of its class."""

    model_config = {"json_schema_extra": validations(
        cel("self.provider != 'prometheus' || has(self.prometheus)",
            "the prometheus provider needs analysis.prometheus.address", field_path=".prometheus",
            reason="FieldValueRequired"),
    )}

    interval: Duration = Field(default="1m", description="How often the canary is measured (1s to 24h).",
                               json_schema_extra=duration_bounds("1s", "24h", "analysis.interval"))
    failure_limit: int = Field(default=2, ge=0, le=100,
                               description="Failed measurements tolerated before the canary is rolled back.")
    max_error_rate: float = Field(
        default=0.01, ge=0, le=1,
        description="Largest fraction of failed inference requests on canary nodes.")
    max_p95_latency_ms: float | None = Field(
        default=None, gt=0, le=600_000,
        description="Largest absolute p95 latency in milliseconds; defaults to the class's "
                    "slo.p95LatencyMs.")
    max_latency_increase_percent: float | None = Field(
        default=20, ge=0, le=10_000,
        description="Largest p95 latency increase of canary over stable nodes, in percent.")
    max_memory_increase_percent: float | None = Field(
        default=None, ge=0, le=10_000,
        description="Largest resident-memory increase of canary over stable pods, in percent.")
    max_power_increase_percent: float | None = Field(
        default=None, ge=0, le=10_000,
        description="Largest increase of the mean power (W) of canary nodes over stable nodes of the class, in "
                    "percent, as the node agents read it (Jetson INA3221 input rail, Intel RAPL). Nodes "
                    "whose hardware gives no reading are left out; with none on a side the interval is "
                    "inconclusive. Unset: power is not compared.")
    max_temperature_c: float | None = Field(
        default=None, gt=0, le=200, alias="maxTemperatureC",
        description="Highest temperature (°C, the hottest thermal zone or hwmon sensor) allowed on any "
                    "canary node. Nodes without a sensor are left out; with none the interval is "
                    "inconclusive. Unset: temperature is not checked.")
    min_ready_ratio: float = Field(
        default=1.0, ge=0, le=1, description="Smallest fraction of reachable canary pods that must be ready.")
    max_restarts: int = Field(default=0, ge=0, le=1000,
                              description="Container restarts (including OOMKilled and CrashLoopBackOff) "
                                          "tolerated on canary pods during a step.")
    sample_pods: int = Field(default=10, ge=1, le=1000,
                             description="At most this many canary and stable pods are measured per class, "
                                         "so analysis cost does not grow with the fleet.")
    provider: Literal["runtime", "prometheus", "none"] = Field(
        default="runtime",
        description="Where measurements come from: runtime (Triton-protocol statistics read from the pods; "
                    "needs nothing else), prometheus, or none (steps wait only for ready pods and pauses).")
    prometheus: PrometheusSettings | None = Field(default=None, description="Settings of the prometheus "
                                                                            "provider.")
    golden_inputs: GoldenInputs | None = Field(
        default=None, description="Inputs whose outputs canary and stable must agree on, which catches a "
                                  "model that is fast and healthy but wrong.")


class AbortRule(ApiModel):
    """A fleet-wide abort: too many nodes failing the new version rolls every class back."""

    max_failed_percent: float = Field(
        ge=0, le=100,
        description="Largest share of the nodes that tried the new version (every class together) that may "
                    "fail, in percent; above it every class rolls back (0: the first failure aborts). A node "
                    "failed when its canary pod is Failed, restarted more than analysis.maxRestarts times, its "
                    "class failed analysis beyond failureLimit, or it timed out (nodeTimeout).")
    min_nodes: int = Field(
        default=1, ge=1, le=100_000,
        description="The rule is judged only once at least this many nodes have tried the new version (a canary "
                    "pod was scheduled there, or the node timed out), so one early failure of a few does not "
                    "abort the fleet.")


def _default_steps() -> list[Step]:
    return [Step(percent=10), Step(pause=Pause(duration="5m")), Step(percent=50),
            Step(pause=Pause(duration="5m")), Step(percent=100)]


class Rollout(ApiModel):
    """How a new version reaches each class: canary steps, analysis, rollback."""

    site_label: LabelKey | None = Field(
        default=None,
        description="Node label naming each node's site, for steps in sites and per-site analysis, e.g. "
                    "edgewise.io/site; wins over the profile's siteLabel (default topology.kubernetes.io/zone).",
        json_schema_extra=validations(cel("!self.contains('/') || self.indexOf('/') <= 253",
                                          "the prefix of a label key (before '/') is a DNS subdomain of at "
                                          "most 253 characters")))

    steps: list[Step] = Field(
        default_factory=_default_steps, min_length=1, max_length=32,
        description="Steps in order; percents strictly increase and the last step is {percent: 100}. A step "
                    "may also count sites ({sites: N}, {sitesPercent: P}) and pin canarySites; a step never "
                    "takes nodes back from an earlier one. Default: 10%, pause 5m, 50%, pause 5m, 100%.",
        json_schema_extra={
            "default": [s.to_api() for s in _default_steps()],
            **validations(
                cel("self.filter(s, has(s.percent)).map(s, s.percent).isSorted() && "
                    "self.filter(s, has(s.percent)).all(a, "
                    "self.filter(s, has(s.percent) && s.percent == a.percent).size() == 1)",
                    "step percents must strictly increase, e.g. 10, 50, 100"),
                cel("has(self[size(self) - 1].percent) && self[size(self) - 1].percent == 100",
                    "the last step must be {percent: 100} so every node ends on the new version"),
            ),
        })
    analysis: Analysis = nested(Analysis, "How canaries are measured and judged.")
    progress_deadline: Duration = Field(
        default="10m", json_schema_extra=duration_bounds("1m", "720h", "progressDeadline"),
        description="How long a class may take to make progress before it is marked Degraded (and rolled "
                    "back when autoRollback is set).")
    auto_rollback: bool = Field(default=True, description="Roll a failing canary back without a person.")
    class_policy: Literal["Independent", "AllOrNothing"] = Field(
        default="Independent",
        description="Independent: each class progresses and rolls back on its own; AllOrNothing: one "
                    "class failing rolls every class back.")
    abort: AbortRule | None = Field(
        default=None,
        description="Fleet-wide abort rule, across every class: e.g. {maxFailedPercent: 25, minNodes: 5}. When it "
                    "fires every class with a canary rolls back (as classPolicy AllOrNothing does) and the "
                    "Degraded condition says which rule fired, with its numbers. Unset: no fleet rule.")
    node_timeout: Duration | None = Field(
        default=None, json_schema_extra=duration_bounds("10s", "720h", "nodeTimeout"),
        description="How long a node may stay offline (NotReady, or its canary pod never Ready) after a step "
                    "asked it to take the new version. Past it the node counts as timed out: a failure for the "
                    "abort rule, and its step goes on without it. Unset: such a node is deferred (a NotReady "
                    "node) or holds its step until progressDeadline (a Ready node whose pod never gets Ready).")
    min_success_time: Duration = Field(
        default="0s", json_schema_extra=duration_bounds("0s", "720h", "minSuccessTime"),
        description="Soak time after a step passed (its canary pods Ready and an analysis passed) before the next "
                    "step starts, or before promotion after the last one; analysis goes on meanwhile, so a "
                    "failure during the soak still rolls back. The class's status says until when it soaks.")
    switch: Literal["Auto", "MakeBeforeBreak", "Replace"] = Field(
        default="Auto",
        description="How a node changes version. MakeBeforeBreak: the new version's pod starts beside the "
                    "old one and the old one leaves only once the new one is Ready, so the node's address "
                    "drops no request (needs room for two copies). Replace: the old pod leaves first (one "
                    "copy at a time, for devices too small for two; requests are refused while the node "
                    "switches). Auto picks per class: Replace when two copies do not fit the nodes' memory or "
                    "a runtime needs a GPU and the nodes have one, MakeBeforeBreak otherwise.")
    windows: Windows = nested(
        Windows, "Maintenance windows: when artifacts may be staged to the nodes and when steps may switch "
                 "them (cron + duration + time zone, as Argo CD sync windows). Unset: any time.")


    def uses_sites(self) -> bool:
        """Does a step count sites or pin canary sites? Then nodes are ordered site by site
        (core/rollout/sites.py); otherwise by their hashed bucket alone, as before sites existed."""
        return any(s.sites is not None or s.sites_percent is not None or s.canary_sites for s in self.steps)


class EdgeModelSpec(ApiModel):
    """The desired state: which model version runs on which hardware classes, and how it rolls out."""

    profile_ref: str | None = Field(
        default=None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN,
        description="Name of a DeploymentProfile in the same namespace. Without it the built-in profile "
                    "applies: Jetson → triton-tensorrt fp16, other arm64 → onnxruntime int8, amd64 → "
                    "onnxruntime int8.")
    version: str = Field(
        min_length=1, max_length=63, pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        description="Version of the model, e.g. 2.1.0; changing it (with the source) starts a rollout.")
    source: Source = Field(description="The original model, pinned by digest.")
    optimization: Optimization = nested(Optimization, "How per-class artifacts are produced and gated.")
    rollout: Rollout = nested(Rollout, "How a new version reaches each class.")
