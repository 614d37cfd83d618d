"""A loopback HTTP server playing an internal service that must never be echoed back to a user.

Shared by the tests of the Prometheus analysis provider (tests/analysis) and of the operator
end to end (tests/cluster): it answers with SECRET in every shape (JSON errors, plain pages,
redirects, huge bodies) and records every path it was asked.
"""

from __future__ import annotations

import asyncio
import json
import threading

from aiohttp import web

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
