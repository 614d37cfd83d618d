"""A Prometheus address comes from a namespace user's spec: nothing a server answers comes back.

The address `http://<internal host>/path#` once made the operator GET any internal URL and
write the answer into the model's status and Events. Here a real HTTP server plays that
internal service, answering every way it can (JSON errors, plain pages, redirects, huge
bodies); the provider's errors name the HTTP status and a fixed reason, never the body. And
the operator asks only addresses its settings allow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from analysis_support import target

from edgewise.analysis.factory import ProviderNotAllowed, make_provider
from edgewise.analysis.prometheus import PrometheusError, PrometheusProvider, address_allowed
from edgewise.api.model import Analysis
from leak_server_support import SECRET, InternalService


@pytest.fixture(scope="module")
def internal() -> Iterator[InternalService]:
    service = InternalService()
    yield service
    service.stop()


@pytest.mark.parametrize("path", ["/json-error", "/json-object", "/json-list", "/page", "/server-error",
                                  "/redirect", "/huge", "/bad-data", "/missing"])
def test_no_answer_of_the_server_appears_in_the_error(internal: InternalService, path: str) -> None:
    provider = PrometheusProvider(internal.url + path, timeout_s=10)
    with pytest.raises(PrometheusError) as err:
        asyncio.run(provider.measure(target("cpu", interval_s=30)))
    assert SECRET not in str(err.value)
    assert str(err.value).startswith(f"querying {internal.url}{path}: ")
    assert "/page" not in internal.asked or path == "/page"  # a redirect is not followed


def test_errors_name_the_http_status(internal: InternalService) -> None:
    with pytest.raises(PrometheusError, match="HTTP 500$"):
        asyncio.run(PrometheusProvider(internal.url + "/server-error").measure(target("cpu")))
    with pytest.raises(PrometheusError, match="HTTP 302$"):
        asyncio.run(PrometheusProvider(internal.url + "/redirect").measure(target("cpu")))
    with pytest.raises(PrometheusError, match=r"HTTP 200: the answer is not a Prometheus API answer"):
        asyncio.run(PrometheusProvider(internal.url + "/page").measure(target("cpu")))


def _analysis(address: str) -> Analysis:
    return Analysis.model_validate({"provider": "prometheus", "prometheus": {"address": address}})


def test_the_operator_asks_only_the_addresses_its_settings_allow(internal: InternalService) -> None:
    before = len(internal.asked)
    leak = internal.url + "/page#"  # "#" would cut off /api/v1/query: a GET of any URL of the host
    with pytest.raises(ProviderNotAllowed, match="EDGEWISE_PROMETHEUS_ADDRESSES.*the prometheus provider is off"):
        make_provider(_analysis(leak))
    with pytest.raises(ProviderNotAllowed):
        make_provider(_analysis(leak), (internal.url + "/page",))
    with pytest.raises(ProviderNotAllowed):
        make_provider(_analysis(internal.url + "/other"), (internal.url + "/page",))
    assert len(internal.asked) == before  # refused before anything was sent
    provider = make_provider(_analysis(internal.url + "/page/"), (internal.url.upper() + "/page",))
    assert isinstance(provider, PrometheusProvider)


@pytest.mark.parametrize(("address", "allowed"), [
    ("http://prom:9090", True),
    ("http://PROM:9090/", True),
    ("http://prom:9090/prometheus", False),
    ("http://prom:9090#", False),
    ("http://prom:9090/#", False),
    ("http://prom:9090?x=1", False),
    ("http://user@prom:9090", False),
    ("http://prom:9091", False),
    ("https://prom:9090", False),
    ("file:///etc/passwd", False),
])
def test_address_allowed_compares_whole_base_urls(address: str, allowed: bool) -> None:
    assert address_allowed(address, ("http://prom:9090/",)) is allowed
