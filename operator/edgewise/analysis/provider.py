"""The analysis provider interface: what the rollout asks, and what it gets back.

Shaped like Flagger's metrics providers: this small interface module, one module per
provider (`runtime`, `prometheus`), and a factory (`factory.make_provider`) that alone
knows them all. `measure.CanaryAnalysis` builds an `AnalysisTarget` from what was observed
(the class's canary and stable pods, with what Kubernetes says about them), calls `measure`
once per interval, and judges the returned `Measurement` with `edgewise.core.analysis.judge`.
Providers only measure; they never decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from edgewise import contract
from edgewise.core.analysis import Measurement, PodHealth, Thresholds


@dataclass(frozen=True)
class PodEndpoint:
    """One runtime pod: where it answers, and what Kubernetes says about it."""

    name: str
    uid: str
    ip: str
    http_port: int = contract.HTTP_PORT
    grpc_port: int = contract.GRPC_PORT
    metrics_port: int = contract.METRICS_PORT
    ready: bool = True
    restarts: int = 0  # container restarts of the pod (cumulative; canary pods are new per step)
    node: str = ""
    node_ready: bool = True  # False: the node is disconnected, the pod is deferred
    reason: str = ""  # last termination (OOMKilled) or waiting (CrashLoopBackOff) reason

    @property
    def http_url(self) -> str:
        return f"{_host(self.ip)}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{_host(self.ip)}:{self.metrics_port}/metrics"

    def health(self) -> PodHealth:
        return PodHealth(pod=self.name, ready=self.ready, restarts=self.restarts,
                         node_ready=self.node_ready, reason=self.reason)


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


@dataclass(frozen=True)
class GoldenFile:
    """spec.rollout.analysis.goldenInputs, fetched: a local .npz, digest-verified (golden_file.py).

    Arrays named after the model's inputs are sent as one request; arrays named
    `expected__<output>` (optional) are the outputs the canary must reproduce, in which
    case no stable pod is needed as reference.
    """

    path: str
    min_cosine: float  # spec.rollout.analysis.goldenInputs.minCosine (its default lives there)


@dataclass(frozen=True)
class AnalysisTarget:
    """One class of one model, at one step: who to measure and against which limits."""

    model: str  # the EdgeModel's name
    class_name: str
    canary_revision: str
    stable_revision: str
    interval_s: float
    canary: tuple[PodEndpoint, ...]
    stable: tuple[PodEndpoint, ...]
    thresholds: Thresholds = Thresholds()
    namespace: str = ""
    served_model: str = ""  # name in /v2/models/<name>; defaults to `model`
    golden: GoldenFile | None = None
    sample_size: int = 10  # at most this many canary and this many stable pods are read

    @property
    def model_name(self) -> str:
        return self.served_model or self.model

    @property
    def key(self) -> str:
        """Identity of the analysed class; also the sampling seed, so classes spread their load."""
        return f"{self.namespace}/{self.model}/{self.class_name}"


@runtime_checkable
class AnalysisProvider(Protocol):
    """Where canary measurements come from."""

    name: str

    async def measure(self, target: AnalysisTarget) -> Measurement:
        """Measure canary and stable pods of one class over the last interval.

        Never raises for a pod that does not answer: such pods are deferred in the
        Measurement. Raises only when the provider itself is unusable (e.g. Prometheus
        is down), which the caller turns into an inconclusive interval.
        """
        ...
