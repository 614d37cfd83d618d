"""The analysis provider interface: what the rollout asks, and what it gets back.

Flagger-sized on purpose: `measure` and `is_online`. The rollout state machine builds an
`AnalysisTarget` from what it observed (the class's canary and stable pods, with what
Kubernetes says about them), calls `measure` once per interval, and judges the returned
`Measurement` with `edgewise.core.analysis.judge`. Providers only measure; they never decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from edgewise import contract
from edgewise.core.analysis import Measurement, PodHealth, Thresholds

if TYPE_CHECKING:
    from edgewise.api.model import Analysis


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
class GoldenInputs:
    """A local .npz of golden inputs (already fetched and digest-verified by the caller).

    Arrays named after the model's inputs are sent as one request; arrays named
    `expected__<output>` (optional) are the outputs the canary must reproduce, in which
    case no stable pod is needed as reference.
    """

    path: str
    min_cosine: float = 0.99


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
    golden: GoldenInputs | None = None
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
        is down), which the caller treats like `is_online() == False`.
        """
        ...

    async def is_online(self) -> bool:
        """Whether the provider can measure at all right now."""
        ...


def thresholds_from_spec(analysis: Analysis, slo_p95_ms: float | None = None,
                         min_requests: int = Thresholds.min_requests) -> Thresholds:
    """The limits of an EdgeModel's `rollout.analysis`; absolute p95 defaults to the class SLO."""
    return Thresholds(
        max_error_rate=analysis.max_error_rate,
        max_p95_latency_ms=analysis.max_p95_latency_ms if analysis.max_p95_latency_ms is not None
        else slo_p95_ms,
        max_latency_increase_percent=analysis.max_latency_increase_percent,
        max_memory_increase_percent=analysis.max_memory_increase_percent,
        min_ready_ratio=analysis.min_ready_ratio,
        max_restarts=analysis.max_restarts,
        min_requests=min_requests,
        min_golden_cosine=analysis.golden_inputs.min_cosine if analysis.golden_inputs else 0.99,
    )


class ProviderNotAllowed(ValueError):
    """The spec names a provider the operator's settings do not allow; nothing was contacted."""


def make_provider(analysis: Analysis, prometheus_addresses: tuple[str, ...] = ()) -> AnalysisProvider:
    """The provider an EdgeModel's `rollout.analysis.provider` names.

    Providers keep state between intervals (the runtime one remembers each pod's last
    counters), so callers create one per provider kind and address and reuse it. A
    Prometheus address must be one of `prometheus_addresses` (the operator's settings):
    the operator never fetches a URL a namespace user wrote unless an admin listed it.
    """
    if analysis.provider == "prometheus":
        from edgewise.analysis.prometheus import PrometheusProvider, address_allowed

        if analysis.prometheus is None:
            raise ValueError("the prometheus provider needs analysis.prometheus.address")
        if not address_allowed(analysis.prometheus.address, prometheus_addresses):
            raise ProviderNotAllowed(
                "analysis.prometheus.address is not one of the Prometheus addresses the operator's settings "
                "allow (EDGEWISE_PROMETHEUS_ADDRESSES, chart value security.prometheusAddresses"
                + ("" if prometheus_addresses else ", empty: the prometheus provider is off")
                + "); nothing was asked")
        return PrometheusProvider(analysis.prometheus.address)
    from edgewise.analysis.runtime import RuntimeProvider

    return RuntimeProvider()
