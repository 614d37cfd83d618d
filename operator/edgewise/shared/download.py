"""Download an artifact by URI into a sink, with retries, backoff and resumption.

Schemes are pluggable through `register_opener`: `http(s)://` and `file://` are
built in; `oci://` delegates to `edgewise.shared.oci.pull`.

The sink hashes what it receives (see `digest.Writer`); whoever owns the sink
checks the digest. A transfer cut mid-body is retried from where it stopped
when the server honours `Range`, from the start otherwise.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from edgewise.shared import oci
from edgewise.shared.destinations import Destinations, RefusedDestination
from edgewise.shared.digest import Writer

CHUNK = 1 << 20
USER_AGENT = "edgewise-node"


class DownloadError(Exception):
    """The artifact could not be fetched."""


class TransientError(DownloadError):
    """Worth retrying: the network, a timeout, a cut body, a 5xx, 408 or 429."""


class PermanentError(DownloadError):
    """Not worth retrying: 4xx, a missing file, an unsupported scheme."""


class RefusedError(PermanentError):
    """The destination is not one this process downloads from (see edgewise.shared.destinations)."""


class Throttle(Protocol):
    """Paces reads (edgewise.shared.bandwidth.Limiter): how many of `n` bytes may be read now."""

    def acquire(self, n: int) -> int: ...
    def refund(self, n: int) -> None: ...


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...
    def reset(self) -> None: ...
    def tell(self) -> int: ...


@dataclass
class Opened:
    """An open source stream starting at byte `offset` of the artifact."""

    stream: BinaryIO
    offset: int  # where this stream starts; 0 when a Range request was not honoured
    length: int | None  # bytes this stream should deliver, when the source says


Opener = Callable[[str, int, float], Opened]  # (uri, wanted offset, timeout) -> Opened
_OPENERS: dict[str, Opener] = {}


def register_opener(scheme: str, opener: Opener) -> None:
    """Plug in a scheme (the OCI artifact store registers `oci`)."""
    _OPENERS[scheme] = opener


def scheme_of(uri: str) -> str:
    return urllib.parse.urlsplit(uri).scheme.lower()


def backoff_delays(attempts: int, base: float = 0.5, cap: float = 30.0, jitter: float = 0.2) -> list[float]:
    """Sleeps between `attempts` tries: exponential from `base`, capped, ±`jitter` so nodes don't sync up."""
    steps = range(max(0, attempts - 1))
    return [min(cap, base * 2**i) * (1 + random.uniform(-jitter, jitter)) for i in steps]


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    """Connections only to addresses the guard vetted (redirects open new connections: vetted too)."""

    def __init__(self, guard: Destinations) -> None:
        super().__init__()
        self.guard = guard

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_connection_class(http.client.HTTPConnection, self.guard), req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, guard: Destinations) -> None:
        super().__init__()
        self.guard = guard

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_connection_class(http.client.HTTPSConnection, self.guard), req,
                            context=self._context)  # type: ignore[attr-defined]


def _connection_class(base: type[http.client.HTTPConnection], guard: Destinations) -> Any:
    def make(host: str, **kwargs: Any) -> http.client.HTTPConnection:
        conn = base(host, **kwargs)
        conn._create_connection = guard.create_connection  # type: ignore[attr-defined]
        return conn
    return make


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl} refused", headers, fp)


class _HttpRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only (urllib would also follow ftp://), to hosts the guard allows."""

    def __init__(self, guard: Destinations | None = None) -> None:
        super().__init__()
        self.guard = guard

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if scheme_of(newurl) not in ("http", "https"):
            raise RefusedDestination(f"{req.full_url} redirects to {newurl}: only http(s) redirects are followed")
        if self.guard is not None:
            self.guard.check_url(newurl)  # also when a proxy makes the connection (it is vetted itself)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _vet(guard: Destinations, url: str, uri: str) -> None:
    """The host of `url` (a download of `uri`) checked by `guard`, its refusal as a RefusedError."""
    try:
        guard.check_url(url)
    except RefusedDestination as err:
        raise RefusedError(f"{uri}: {err}") from err
    except OSError as err:
        raise TransientError(f"{uri}: {err}") from err


def http_opener(guard: Destinations | None = None, headers: Mapping[str, str] | None = None,
                follow_redirects: bool = True) -> Opener:
    """An http(s) opener: connections vetted by `guard`, `headers` sent to the first host only."""
    handlers: list[Any] = [_HttpRedirects(guard) if follow_redirects else _NoRedirects()]
    if guard is not None:
        handlers += [_GuardedHTTPHandler(guard), _GuardedHTTPSHandler(guard)]
    director = urllib.request.build_opener(*handlers)

    def open_http(uri: str, offset: int, timeout: float) -> Opened:
        if guard is not None:
            # The connection is vetted below; the named host is vetted here too, because with a
            # proxy (http_proxy in the environment) the connection goes to the proxy instead.
            _vet(guard, uri, uri)
        request = urllib.request.Request(uri, headers={"User-Agent": USER_AGENT})
        for name, value in (headers or {}).items():
            request.add_unredirected_header(name, value)  # never forwarded to a redirect's host
        return _open_http_request(director, request, uri, offset, timeout)

    return open_http


def _open_http_request(director: urllib.request.OpenerDirector, request: urllib.request.Request, uri: str,
                       offset: int, timeout: float) -> Opened:
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        resp = director.open(request, timeout=timeout)
    except RefusedDestination as err:
        raise RefusedError(f"{uri}: {err}") from err
    except urllib.error.HTTPError as err:
        err.close()
        kind = TransientError if err.code >= 500 or err.code in (408, 429) else PermanentError
        raise kind(f"{uri}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, RefusedDestination):
            raise RefusedError(f"{uri}: {reason}") from err
        raise TransientError(f"{uri}: {reason}") from err
    length_header = resp.headers.get("Content-Length")
    length = int(length_header) if length_header and length_header.isdigit() else None
    start = 0
    if resp.status == 206:
        content_range = resp.headers.get("Content-Range", "")
        if not content_range.startswith(f"bytes {offset}-"):
            resp.close()
            raise TransientError(f"{uri}: asked for bytes {offset}-, got Content-Range {content_range!r}")
        start = offset
    return Opened(stream=resp, offset=start, length=length)


def _open_file(uri: str, offset: int, timeout: float) -> Opened:
    parts = urllib.parse.urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise PermanentError(f"{uri}: file:// URIs must name a local path")
    path = urllib.request.url2pathname(parts.path)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the caller
    except FileNotFoundError as err:
        raise PermanentError(f"{uri}: no such file") from err
    except OSError as err:
        raise PermanentError(f"{uri}: {err}") from err
    f.seek(offset)
    return Opened(stream=f, offset=offset, length=None)  # type: ignore[arg-type]


def _open_oci(uri: str, offset: int, timeout: float) -> Opened:
    """The OCI puller's verified `pull` fills an anonymous temp file that is streamed from
    here, so the sink still hashes every byte itself."""
    with tempfile.TemporaryDirectory(prefix="edgewise-oci-") as tmp:
        path = Path(tmp) / "layer"
        try:
            oci.pull(uri, path, timeout=timeout)
        except ModuleNotFoundError as err:  # the puller's own libraries are missing from this image
            raise PermanentError(f"{uri}: oci:// needs the {err.name!r} package, not installed here") from err
        except oci.OciNotFound as err:  # the registry answered: no such manifest or blob
            raise PermanentError(str(err)) from err
        except Exception as err:  # noqa: BLE001 - unreachable, failing, or cut off mid-body: try again
            raise TransientError(f"{uri}: {err}") from err
        f = open(path, "rb")  # noqa: SIM115 - closed by the caller; the name goes with the directory
    f.seek(offset)
    return Opened(stream=f, offset=offset, length=None)


def guarded_oci(guard: Destinations) -> Opener:
    """oci:// with the registry host vetted first (the OCI client's own connections are not pinned)."""
    def open_oci(uri: str, offset: int, timeout: float) -> Opened:
        _vet(guard, "https://" + uri.split("://", 1)[-1], uri)
        return _open_oci(uri, offset, timeout)
    return open_oci


def guarded_openers(guard: Destinations) -> dict[str, Opener]:
    """Openers for every built-in scheme whose network connections only go where `guard` allows
    (the node agent's; `file://` is the caller's to restrict)."""
    guarded_http = http_opener(guard)
    return {"http": guarded_http, "https": guarded_http, "oci": guarded_oci(guard), "file": _open_file}


_http = http_opener()
register_opener("http", _http)
register_opener("https", _http)
register_opener("file", _open_file)
register_opener("oci", _open_oci)


RCVBUF_PACED = 64 << 10  # a paced download's socket receive buffer (see _bound_receive_buffer)


def _bound_receive_buffer(stream: Any) -> None:
    """A paced download reads slowly on purpose; left alone, the kernel's receive buffer (tuned
    up to megabytes) would take in that much beyond the budget at once. Bounding it keeps what
    the sender may push ahead of the reader small. Best effort: a stream without a socket (a
    file, an OCI pull) is left as it is."""
    sock = getattr(getattr(getattr(stream, "fp", None), "raw", None), "_sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_PACED)


def _chunks(opened: Opened, uri: str, throttle: Throttle | None = None) -> Iterator[bytes]:
    received = 0
    if throttle is not None:
        _bound_receive_buffer(opened.stream)
    # read1 returns what has arrived instead of waiting for a full chunk, so a stalled
    # transfer still lands on disk progressively (and prefetch progress moves).
    read = getattr(opened.stream, "read1", opened.stream.read)
    try:
        while True:
            # Throttled, a read takes only what the budget grants: the bytes stay in the socket,
            # so TCP slows the sender down (the budget is on the link, not only on the disk).
            want = throttle.acquire(CHUNK) if throttle is not None else CHUNK
            chunk = b""
            try:
                chunk = read(want)
            except (TimeoutError, http.client.IncompleteRead, ConnectionError, OSError) as err:
                raise TransientError(f"{uri}: transfer cut after {received} bytes: {err}") from err
            finally:
                if throttle is not None:
                    throttle.refund(want - len(chunk))
            if not chunk:
                break
            received += len(chunk)
            yield chunk
    finally:
        opened.stream.close()
    # urllib returns a short body silently when the server closes early: check the length.
    if opened.length is not None and received < opened.length:
        raise TransientError(f"{uri}: transfer cut after {received} of {opened.length} bytes")


def copy_once(uri: str, sink: Sink, timeout: float = 30.0, openers: Mapping[str, Opener] | None = None,
              throttle: Throttle | None = None) -> None:
    """One attempt: continue from `sink.tell()` if the source allows, else start over.

    `openers` replaces the registered ones (the agent passes guarded openers); `throttle` paces reads."""
    table = _OPENERS if openers is None else openers
    opener = table.get(scheme_of(uri))
    if opener is None:
        raise PermanentError(f"{uri}: unsupported scheme (supported: {', '.join(sorted(table))})")
    opened = opener(uri, sink.tell(), timeout)
    if opened.offset != sink.tell():
        sink.reset()
    for chunk in _chunks(opened, uri, throttle):
        sink.write(chunk)


def download(
    uri: str,
    sink: Sink,
    *,
    attempts: int = 5,
    base_delay: float = 0.5,
    timeout: float = 30.0,
    sleep: Callable[[float], object] = time.sleep,
    on_retry: Callable[[int, Exception], None] | None = None,
    openers: Mapping[str, Opener] | None = None,
    throttle: Throttle | None = None,
) -> None:
    """Copy `uri` into `sink`, retrying transient failures with exponential backoff; `throttle` paces reads."""
    delays = backoff_delays(attempts, base_delay)
    for attempt in range(attempts):
        try:
            copy_once(uri, sink, timeout, openers, throttle)
            return
        except TransientError as err:
            if attempt == attempts - 1:
                raise
            if on_retry:
                on_retry(attempt + 1, err)
            sleep(delays[attempt])


def download_file(uri: str, dest: Path, sha256: str = "", *, attempts: int = 4, timeout: float = 30.0) -> None:
    """`uri` into the file `dest`, with retries; `dest` exists only if the bytes match `sha256` (when given)."""
    part = dest.with_name(dest.name + ".part")
    writer = Writer(part)
    try:
        download(uri, writer, attempts=attempts, timeout=timeout)
        writer.finish()
        if sha256:
            writer.check_digest(sha256)  # DigestMismatch: the bytes arrived whole but are not the named ones
        part.rename(dest)
    finally:
        writer.abort()
