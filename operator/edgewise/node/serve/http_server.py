"""HTTP/1.1 for the inference port: asyncio's Protocol with httptools' parser (llhttp, as Node's).

Why not aiohttp, which the metrics port uses: on a 2-core edge box the server's per-request
CPU is taken from the model. aiohttp's request machinery (request objects, middleware,
routing, a task per request, a future per hop) measured ~0.2 ms of event-loop CPU per
inference more than this protocol, and as much MiniLM latency (docs/benchmarks.md). Here a
request is parsed into a `Request` and handed to one `Handler` call with a `respond`
callback: an answer that is ready at once (an error, metadata, a model run on the loop) is
written in the same callback, with no task and no extra pass of the event loop.

What it does of HTTP/1.1: keep-alive (and `Connection: close`, HTTP/1.0), pipelined requests
answered in order, chunked request bodies, `Expect: 100-continue`, gzip/deflate request
bodies (inflated on a worker thread), limits on the body (413, before reading it when
Content-Length says so) and on the header block (431), 400 and close on bytes that are not
HTTP; a connection that sends nothing for the idle timeout while no answer is due (an idle
keep-alive, a request stalled halfway) is closed. Graceful shutdown: stop accepting, close
idle connections, let in-flight requests answer (requests whose bodies are still arriving
too), then close the rest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import httptools

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
PIPELINE_DEPTH = 8  # parsed requests a connection may queue before reading pauses
IDLE_TIMEOUT_S = 75.0  # as aiohttp's keep-alive: a silent connection not waiting for an answer is closed


@dataclass
class Request:
    method: str
    path: str  # percent-decoded, without the query
    headers: dict[str, str]  # names lower-cased
    body: bytes
    connection: object = None  # identifies the client connection it came on


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def json_response(doc: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(doc).encode(), "application/json")


def error_response(status: int, message: str) -> Response:
    """Triton's error body, which tritonclient turns into an InferenceServerException."""
    return json_response({"error": message}, status)


Respond = Callable[[Response], None]
# A handler calls `respond` once, now or later; for later it may return a canceller, called
# if the client goes away first. It raises only for bugs (answered 500).
Handler = Callable[[Request, Respond], Callable[[], None] | None]


class HttpError(Exception):
    """A request refused before the handler sees it (too large, not decodable)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def render(response: Response, keep_alive: bool) -> bytes:
    reason = HTTPStatus(response.status).phrase
    lines = [f"HTTP/1.1 {response.status} {reason}", f"Content-Length: {len(response.body)}"]
    if response.content_type:
        lines.append(f"Content-Type: {response.content_type}")
    lines += [f"{k}: {v}" for k, v in response.headers.items()]
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Inflate a gzip/deflate body, refusing one that inflates beyond `limit` bytes."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise HttpError(415, f"unsupported Content-Encoding '{encoding}'; send identity, gzip or deflate")
    # wbits: 16+ wants a gzip wrapper; 32+ takes a zlib wrapper (what tritonclient sends for
    # deflate); negative is raw deflate, which some clients send for "deflate" too.
    tries = [16 + zlib.MAX_WBITS] if encoding == "gzip" else [32 + zlib.MAX_WBITS, -zlib.MAX_WBITS]
    for wbits in tries:
        try:
            out = zlib.decompressobj(wbits).decompress(body, limit + 1)
            break
        except zlib.error as err:
            error = err
    else:
        raise HttpError(400, f"the {encoding} request body does not inflate: {error}")
    if len(out) > limit:
        raise HttpError(413, f"request body inflates beyond the limit of {limit} bytes")
    return out


class _Exchange:
    """One request's answer slot: `respond` may be called once, now or later."""

    __slots__ = ("conn", "keep_alive", "cancel", "answered")

    def __init__(self, conn: _Connection, keep_alive: bool) -> None:
        self.conn = conn
        self.keep_alive = keep_alive
        self.cancel: Callable[[], None] | None = None
        self.answered = False

    def respond(self, response: Response) -> None:
        if not self.answered:
            self.answered = True
            self.conn.answered(self, response)


class _Connection(asyncio.Protocol):
    """One client connection: parse, hand requests to the handler in order, write answers."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.pending: deque[tuple[Request, bool]] = deque()  # parsed, waiting for their turn
        self.current: _Exchange | None = None  # the request being answered
        self.dispatching = False
        self.closing = False
        self.receiving = False  # a request has begun and its body is not complete
        self.last_data = time.monotonic()  # when the last bytes arrived
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.header_bytes = 0
        self.body: list[bytes] = []
        self.body_size = 0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True
        self.pending.clear()
        self._cancel_current()  # the client is gone: don't spend the model on it
        self.server.connection_closed()

    def data_received(self, data: bytes) -> None:
        self.last_data = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(HttpError(400, "protocol upgrades are not supported; speak HTTP/1.1"))
        except httptools.HttpParserError as err:
            refused = err.__context__  # an HttpError raised by one of the callbacks below
            self._fail(refused if isinstance(refused, HttpError) else HttpError(400, f"malformed HTTP request: {err}"))

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._reset()
        self.receiving = True

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count_header(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header(len(name) + len(value))
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        length = self.headers.get("content-length")
        limit = self.server.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            # Refuse before reading the body; the connection closes after the answer.
            raise HttpError(413, f"request body of {length} bytes exceeds the limit of {limit} bytes")
        if self.headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        self.body_size += len(chunk)
        if self.body_size > self.server.max_body_bytes:
            raise HttpError(413, f"request body exceeds the limit of {self.server.max_body_bytes} bytes")
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        self.receiving = False
        parsed = httptools.parse_url(self.url)
        request = Request(self.parser.get_method().decode("latin-1"), unquote(parsed.path.decode("latin-1")),
                          self.headers, b"".join(self.body), self)
        self.pending.append((request, self.parser.should_keep_alive()))
        if len(self.pending) >= PIPELINE_DEPTH and self.transport is not None:
            self.transport.pause_reading()
        if self.current is None and not self.dispatching:
            self._next()

    # answering

    def _count_header(self, n: int) -> None:
        self.header_bytes += n
        if self.header_bytes > MAX_HEADER_BYTES:
            raise HttpError(431, f"request line and headers exceed {MAX_HEADER_BYTES} bytes")

    def _next(self) -> None:
        """Answer queued requests in order; stop at one whose answer comes later."""
        self.dispatching = True
        try:
            while self.pending and self.current is None and not self.closing:
                request, keep_alive = self.pending.popleft()
                if self.transport is not None and len(self.pending) < PIPELINE_DEPTH:
                    self.transport.resume_reading()
                exchange = self.current = _Exchange(self, keep_alive)
                encoding = request.headers.get("content-encoding", "").strip().lower()
                if encoding in ("", "identity"):
                    self._handle(request, exchange)
                else:
                    self._inflate(request, exchange, encoding)
        finally:
            self.dispatching = False

    def _handle(self, request: Request, exchange: _Exchange) -> None:
        try:
            exchange.cancel = self.server.handler(request, exchange.respond)
        except HttpError as err:
            exchange.respond(error_response(err.status, err.message))
        except Exception as err:  # noqa: BLE001 - one request's bug must not take the server down
            log.exception("unhandled error on %s %s", request.method, request.path)
            exchange.respond(error_response(500, f"internal error: {err}"))

    def _inflate(self, request: Request, exchange: _Exchange, encoding: str) -> None:
        """Inflate on a worker thread (zlib lets go of the interpreter lock): a small body can
        inflate to the whole body limit, and the loop keeps answering meanwhile."""
        inflating = asyncio.get_running_loop().run_in_executor(
            None, decompress, request.body, encoding, self.server.max_body_bytes)

        def inflated(done: asyncio.Future[bytes]) -> None:
            if exchange.answered or exchange is not self.current:
                return  # the client went away meanwhile
            try:
                request.body = done.result()
            except HttpError as err:
                exchange.respond(error_response(err.status, err.message))
                return
            self._handle(request, exchange)

        inflating.add_done_callback(inflated)

    def answered(self, exchange: _Exchange, response: Response) -> None:
        if exchange is not self.current:
            return  # answered after the connection failed or closed
        self.current = None
        self._write(response, exchange.keep_alive)
        if not self.dispatching:
            self._next()

    def _write(self, response: Response, keep_alive: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        keep_alive = keep_alive and not self.server.draining
        self.transport.write(render(response, keep_alive))
        if not keep_alive:
            self.closing = True
            self.transport.close()

    def _cancel_current(self) -> None:
        exchange, self.current = self.current, None
        if exchange is not None and not exchange.answered:
            exchange.answered = True
            if exchange.cancel is not None:
                exchange.cancel()

    def _fail(self, err: HttpError) -> None:
        """Answer a request that cannot be parsed or read, then close: the stream is out of step."""
        self.pending.clear()
        self._cancel_current()
        self.closing = True
        self._write(error_response(err.status, err.message), keep_alive=False)

    def close_if_idle(self, silent_since: float | None = None) -> None:
        """Close unless an answer is due; with `silent_since`, only if nothing arrived after it.

        Without `silent_since` (draining) a request whose body is still arriving is let finish:
        it is answered, then the connection closes (or the drain timeout aborts it).
        """
        if silent_since is not None and self.last_data > silent_since:
            return
        if silent_since is None and self.receiving:
            return
        if self.current is None and not self.pending and self.transport is not None:
            self.closing = True
            self.transport.close()


class HttpServer:
    def __init__(self, handler: Handler, max_body_bytes: int, idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.idle_timeout_s = idle_timeout_s
        self.connections: set[_Connection] = set()
        self.draining = False
        self._server: asyncio.Server | None = None
        self._all_closed: asyncio.Event | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, backlog: int = 1024) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, backlog=backlog)
        self._sweeper = loop.create_task(self._sweep(), name="http-idle-sweeper")

    async def _sweep(self) -> None:
        """Close connections silent for the idle timeout (checked a few times per timeout:
        one timer for the server instead of one per request)."""
        while True:
            await asyncio.sleep(min(self.idle_timeout_s / 4, 15.0))
            silent_since = time.monotonic() - self.idle_timeout_s
            for conn in list(self.connections):
                conn.close_if_idle(silent_since)

    def connection_closed(self) -> None:
        if self._all_closed is not None and not self.connections:
            self._all_closed.set()

    async def shutdown(self, timeout: float) -> None:
        """Stop accepting; idle connections close now, busy ones after their answer (or at `timeout`)."""
        self.draining = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        self._all_closed = asyncio.Event()
        for conn in list(self.connections):
            conn.close_if_idle()
        if self.connections:
            try:
                await asyncio.wait_for(self._all_closed.wait(), timeout)
            except TimeoutError:
                log.warning("%d connections still open after %.0fs; closing them", len(self.connections), timeout)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
