"""The KServe-V2 / Triton HTTP front end (aiohttp).

Thin handlers: parse the path, call `InferenceService`, render JSON. Errors leave as
Triton does, `{"error": "<message>"}` with a 4xx/5xx status, so tritonclient raises an
`InferenceServerException` carrying the message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from edgewise.node.serve import http_codec
from edgewise.node.serve.errors import HTTP_CODES, InferError, Status
from edgewise.node.serve.model import ModelSpec
from edgewise.node.serve.service import Decoded, InferenceService

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(doc).encode(), status=status, content_type="application/json")


def _error(status: Status, message: str) -> web.Response:
    return _json({"error": message}, HTTP_CODES[status])


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except InferError as err:
        return _error(err.status, err.message)
    except web.HTTPRequestEntityTooLarge as err:
        return _error(Status.TOO_LARGE, f"request body too large: {err.text}; "
                      f"the server accepts at most {request.app['max_request_bytes']} bytes")
    except web.HTTPException:
        raise  # aiohttp's own 404/405 for unknown paths and methods
    except Exception as err:  # noqa: BLE001 - one request's bug must not take the server down
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(Status.INTERNAL, f"internal error: {err}")


class HttpApi:
    def __init__(self, service: InferenceService, max_request_bytes: int) -> None:
        self.service = service
        self.max_request_bytes = max_request_bytes

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_errors], client_max_size=self.max_request_bytes)
        app["max_request_bytes"] = self.max_request_bytes
        model = "/v2/models/{name}"
        versioned = "/v2/models/{name}/versions/{version}"
        app.router.add_get("/v2/health/live", self.live)
        app.router.add_get("/v2/health/ready", self.ready)
        app.router.add_get("/v2", self.server_metadata)
        app.router.add_get("/v2/models/stats", self.statistics)  # before {name} so it wins
        app.router.add_post("/v2/repository/index", self.repository_index)
        for base in (model, versioned):
            app.router.add_get(base, self.model_metadata)
            app.router.add_get(base + "/ready", self.model_ready)
            app.router.add_get(base + "/config", self.model_config)
            app.router.add_get(base + "/stats", self.statistics)
            app.router.add_post(base + "/infer", self.infer)
        return app

    async def live(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.service.ready else 503)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return _json(self.service.server_metadata())

    async def model_metadata(self, request: web.Request) -> web.Response:
        m = request.match_info
        return _json(self.service.model_metadata(m["name"], m.get("version", "")))

    async def model_ready(self, request: web.Request) -> web.Response:
        m = request.match_info
        return web.Response(status=200 if self.service.model_ready(m["name"], m.get("version", "")) else 400)

    async def model_config(self, request: web.Request) -> web.Response:
        m = request.match_info
        return _json(self.service.model_config(m["name"], m.get("version", "")))

    async def statistics(self, request: web.Request) -> web.Response:
        m = request.match_info
        return _json(self.service.statistics(m.get("name", ""), m.get("version", "")))

    async def repository_index(self, request: web.Request) -> web.Response:
        return _json(self.service.repository_index())

    async def infer(self, request: web.Request) -> web.Response:
        m = request.match_info
        if request.content_length is not None and request.content_length > self.max_request_bytes:
            raise InferError(Status.TOO_LARGE, f"request body of {request.content_length} bytes exceeds "
                             f"the limit of {self.max_request_bytes} bytes")
        body = await request.read()
        length_header = request.headers.get(http_codec.HEADER_LENGTH)

        def decode(spec: ModelSpec) -> Decoded:
            header_length = http_codec.parse_header_length(length_header, len(body))
            return http_codec.decode_request(spec, body, header_length)

        out, header_length = await self.service.infer(m["name"], m.get("version", ""), decode,
                                                      http_codec.encode_response)
        if header_length is None:
            return web.Response(body=out, content_type="application/json")
        return web.Response(body=out, content_type="application/octet-stream",
                            headers={http_codec.HEADER_LENGTH: str(header_length)})
