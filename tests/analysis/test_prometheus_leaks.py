"""A Prometheus address comes from a namespace user's spec: nothing a server answers comes back.

The address `http://<internal host>/path#` once made the operator GET any internal URL and
write the answer into the model's status and Events. Here a real HTTP server plays that
internal service, answering every way it can (JSON errors, plain pages, redirects, huge
bodies); the provider's errors name the HTTP status and a fixed reason, never the body. And
the operator asks only addresses its settings allow.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web
from analysis_support import target

from edgewise.analysis.prometheus import PrometheusError, PrometheusProvider, address_allowed
from edgewise.analysis.provider import ProviderNotAllowed, make_provider
from edgewise.api.model import Analysis

SECRET = "s3cr3t-internal-token-4711"


class InternalService:
    """A loopback HTTP server that answers with the secret in every shape; counts what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def _start(self) -> web.AppRunner:
        routes = {
            "/json-error": lambda: web.json_response({"status": "error", "errorType": SECRET, "error": SECRET},
                                                     status=400),
            "/json-object": lambda: web.json_response({"token": SECRET}),
            "/json-list": lambda: web.json_response([SECRET]),
            "/page": lambda: web.Response(text=f"<html>{SECRET}</html>"),
            "/server-error": lambda: web.Response(status=500, text=SECRET, reason="Internal " + SECRET),
            "/redirect": lambda: web.HTTPFound("/page", text=SECRET),
            "/huge": lambda: web.Response(text=json.dumps({"status": "success", "pad": SECRET * 100_000})),
            "/bad-data": lambda: web.json_response({"status": "success", "data": {"resultType": SECRET}}),
        }

        async def handle(request: web.Request) -> web.StreamResponse:
            self.asked.append(request.path)
            base = request.path.removesuffix("/api/v1/query")
            answer = routes.get(base)
            if answer is None:
                return web.Response(status=404, text=SECRET)
            result = answer()
            if isinstance(result, web.HTTPException):
                raise result
            return result

        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


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
