"""A counting artifact origin: every byte it sends, with the time and the site that asked for it.

The site is the `site` query parameter of the URI (the test, playing the operator, gives each
site's agents a URI tagged with their site; the digest is what names the artifact). The origin
writes in small pieces into a small socket buffer, so what it logs as sent is close to what the
agent has read: the budget is measured at the origin, as an uplink would see it.
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


class CountingOrigin:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sent: list[tuple[float, str, int]] = []  # (monotonic time, site, bytes) per piece written
        self.gets: list[str] = []  # the site of every GET
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    def uri(self, site: str) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_port}/model.onnx?site={site}"

    def start(self) -> CountingOrigin:
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
                super().setup()

            def do_GET(self) -> None:
                site = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("site", [""])[0]
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

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

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
