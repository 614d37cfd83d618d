"""The one place that knows every analysis provider: spec.rollout.analysis.provider → a provider."""

from __future__ import annotations

from edgewise.analysis.prometheus import PrometheusProvider, address_allowed
from edgewise.analysis.provider import AnalysisProvider
from edgewise.analysis.runtime import RuntimeProvider
from edgewise.api.model import Analysis


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
        if analysis.prometheus is None:
            raise ValueError("the prometheus provider needs analysis.prometheus.address")
        if not address_allowed(analysis.prometheus.address, prometheus_addresses):
            raise ProviderNotAllowed(
                "analysis.prometheus.address is not one of the Prometheus addresses the operator's settings "
                "allow (EDGEWISE_PROMETHEUS_ADDRESSES, chart value security.prometheusAddresses"
                + ("" if prometheus_addresses else ", empty: the prometheus provider is off")
                + "); nothing was asked")
        return PrometheusProvider(analysis.prometheus.address)
    return RuntimeProvider()
