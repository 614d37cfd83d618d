"""A counting artifact origin: every byte it sends, with the time and the site that asked for it.

The site is the `site` query parameter of the URI (the test, playing the operator, gives each
site's agents a URI tagged with their site; the digest is what names the artifact), or, where the
real operator gives every node the same URI, the port the request came in on: `site_proxy(site)`
is an address of the origin itself that the site's agents use as their HTTP proxy (`http_proxy`),
as a site's uplink would carry them; the origin serves the artifact there as it does directly.
The origin writes in small pieces into a small socket buffer, so what it logs as sent is close to
what the agent has read: the budget is measured at the origin, as an uplink would see it.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.parse
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PIECE = 8 << 10
SNDBUF = 32 << 10
# What may arrive in a window beyond rate × window: the bucket's burst, plus what sits in the
# origin's send buffer and the agent's receive buffer when a window starts (loopback TCP).
SLACK = 384 << 10


class CountingOrigin:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sent: list[tuple[float, str, int]] = []  # (monotonic time, site, bytes) per piece written
        self.gets: list[str] = []  # the site of every GET
        self.strays: list[str] = []  # requests a site's proxy took for another host (e.g. a peer agent): refused
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._proxies: dict[str, ThreadingHTTPServer] = {}  # site → its listener (site_proxy)

    def uri(self, site: str) -> str:
        return f"http://{self.netloc()}/model.onnx?site={site}"

    def netloc(self) -> str:
        assert self._httpd is not None
        return f"127.0.0.1:{self._httpd.server_port}"

    def site_proxy(self, site: str) -> str:
        """An address of this origin that counts whatever comes in on it as `site`'s: the proxy of the
        site's agents (`http_proxy`); the request names the origin's URI in full, as to any proxy."""
        if site not in self._proxies:
            self._proxies[site] = self._listen(site)
        return f"http://127.0.0.1:{self._proxies[site].server_port}"

    def start(self) -> CountingOrigin:
        self._httpd = self._listen(None)
        return self

    def _listen(self, fixed_site: str | None) -> ThreadingHTTPServer:
        """A listener; `fixed_site`: every request it takes is that site's, else the URI's `site`."""
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
                super().setup()

            def do_POST(self) -> None:  # the origin serves GETs only: a POST came through a proxy by mistake
                with origin._lock:
                    origin.strays.append(f"POST {self.path}")
                self.send_error(502, "the origin serves GET only")

            def do_GET(self) -> None:
                # The path is absolute-form ("http://host:port/model.onnx") when the request came as to a proxy.
                target = urllib.parse.urlsplit(self.path)
                if fixed_site is not None and target.netloc != origin.netloc():
                    with origin._lock:
                        origin.strays.append(self.path)
                    self.send_error(502, "this proxy reaches only the origin")
                    return
                site = fixed_site if fixed_site is not None else \
                    urllib.parse.parse_qs(target.query).get("site", [""])[0]
                with origin._lock:
                    origin.gets.append(site)
                start = 0
                rng = self.headers.get("Range", "")
                if rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[len("bytes="):-1])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(origin.data) - 1}/{len(origin.data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(origin.data) - start))
                self.end_headers()
                for i in range(start, len(origin.data), PIECE):
                    piece = origin.data[i:i + PIECE]
                    self.wfile.write(piece)
                    with origin._lock:
                        origin.sent.append((time.monotonic(), site, len(piece)))

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return httpd

    def stop(self) -> None:
        for httpd in (self._httpd, *self._proxies.values()):
            if httpd is not None:
                httpd.shutdown()
                httpd.server_close()

    def bytes_by_site(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for _, site, n in self.sent:
            out[site] += n
        return dict(out)

    def busiest_window(self, site: str, seconds: float) -> int:
        """The most bytes sent to `site` within any `seconds`-long window (sliding over every piece)."""
        times = [(t, n) for t, s, n in self.sent if s == site]
        best, lo, total = 0, 0, 0
        for hi in range(len(times)):
            total += times[hi][1]
            while times[hi][0] - times[lo][0] > seconds:
                total -= times[lo][1]
                lo += 1
            best = max(best, total)
        return best
