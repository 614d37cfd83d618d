"""The KServe-V2 / Triton HTTP front end: routes, and the service's answers as HTTP responses.

Thin: match the path, call `InferenceService`, render JSON. Errors leave as Triton's do,
`{"error": "<message>"}` with a 4xx/5xx status, so tritonclient raises an
`InferenceServerException` carrying the message. An inference answers when the model has
(at once when it ran on the event loop); every other route answers at once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from edgewise.node.serve import http_codec
from edgewise.node.serve.errors import HTTP_CODES, InferError
from edgewise.node.serve.http_server import Request, Respond, Response, error_response, json_response
from edgewise.node.serve.model import ModelSpec
from edgewise.node.serve.service import Decoded, InferenceService

log = logging.getLogger(__name__)

_LENGTH_HEADER = http_codec.HEADER_LENGTH.lower()  # the server lower-cases header names
# /v2/models/<name>[/versions/<version>][/ready|/config|/stats|/infer]
_MODEL_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(?:/(ready|config|stats|infer))?/?")


def _error(err: InferError) -> Response:
    return error_response(HTTP_CODES[err.status], err.message)


class HttpApi:
    def __init__(self, service: InferenceService) -> None:
        self.service = service
        self._fixed: dict[str, tuple[str, Callable[[], Response]]] = {
            "/v2/health/live": ("GET", lambda: Response(200)),
            "/v2/health/ready": ("GET", lambda: Response(200 if self.service.ready else 503)),
            "/v2": ("GET", lambda: json_response(self.service.server_metadata())),
            "/v2/models/stats": ("GET", lambda: json_response(self.service.statistics())),
            "/v2/repository/index": ("POST", lambda: json_response(self.service.repository_index())),
        }

    def handle(self, request: Request, respond: Respond) -> Callable[[], None] | None:
        try:
            return self._route(request, respond)
        except InferError as err:
            respond(_error(err))
            return None

    def _route(self, request: Request, respond: Respond) -> Callable[[], None] | None:
        path = request.path.rstrip("/") or "/"
        fixed = self._fixed.get(path)
        if fixed is not None:
            method, answer = fixed
            respond(answer() if request.method == method else _not_allowed(request, method))
            return None
        match = _MODEL_PATH.fullmatch(path)
        if match is None:
            respond(error_response(404, f"no route for {request.method} {request.path}; this is a KServe-V2 "
                                   "(Triton) server: /v2/health/ready, /v2/models/<name>/infer, ..."))
            return None
        name, version, action = match.group(1), match.group(2) or "", match.group(3)
        method = "POST" if action == "infer" else "GET"
        if request.method != method:
            respond(_not_allowed(request, method))
        elif action == "infer":
            return self._infer(request, name, version, respond)
        elif action == "ready":
            respond(Response(200 if self.service.model_ready(name, version) else 400))
        elif action == "config":
            respond(json_response(self.service.model_config(name, version)))
        elif action == "stats":
            respond(json_response(self.service.statistics(name, version)))
        else:
            respond(json_response(self.service.model_metadata(name, version)))
        return None

    def _infer(self, request: Request, name: str, version: str, respond: Respond) -> Callable[[], None]:
        body = request.body
        length_header = request.headers.get(_LENGTH_HEADER)

        bounds = self.service.settings.limits

        def decode(spec: ModelSpec) -> Decoded:
            header_length = http_codec.parse_header_length(length_header, len(body))
            return http_codec.decode_request(spec, body, header_length, bounds)

        def reply(result: tuple[bytes, int | None] | BaseException) -> None:
            if isinstance(result, InferError):
                respond(_error(result))
            elif isinstance(result, BaseException):
                log.error("inference failed", exc_info=result)
                respond(error_response(500, f"internal error: {result}"))
            elif result[1] is None:
                respond(Response(200, result[0], "application/json"))
            else:
                respond(Response(200, result[0], "application/octet-stream",
                                 {http_codec.HEADER_LENGTH: str(result[1])}))

        return self.service.submit(name, version, decode, http_codec.encode_response, reply, request.connection,
                                   self._decode_cost(body, length_header))

    def _decode_cost(self, body: bytes, length_header: str | None) -> int:
        """The bytes decoding walks: the JSON, and binary BYTES tensors; binary numbers are a
        view of the body, free to decode however large (the service offloads costly decodes)."""
        spec = self.service.spec
        if spec is not None and any(t.datatype == "BYTES" for t in spec.inputs):
            return len(body)
        try:
            return min(int(length_header or len(body)), len(body))
        except ValueError:
            return len(body)  # decoding refuses it at once


def _not_allowed(request: Request, allowed: str) -> Response:
    response = error_response(405, f"{request.method} is not allowed on {request.path}; use {allowed}")
    response.headers["Allow"] = allowed
    return response
