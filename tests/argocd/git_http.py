"""Git repositories served over smart HTTP on loopback, by git's own `git http-backend` (CGI).

Argo CD's repo server lists refs with go-git, which speaks only the smart protocol: a static
file server (the "dumb" protocol) would not do.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

BACKEND = ["git", "http-backend"]


class GitHttp:
    """Bare repositories under `root`, at http://127.0.0.1:<port>/<name>.git."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(root))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}.git"

    def __enter__(self) -> GitHttp:
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(root: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            self._cgi()

        def do_POST(self) -> None:  # noqa: N802
            self._cgi()

        def log_message(self, format: str, *args: object) -> None:  # quiet: the test's output stays readable
            pass

        def _cgi(self) -> None:
            url = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            env = {"PATH": "/usr/bin:/bin", "GIT_PROJECT_ROOT": str(root), "GIT_HTTP_EXPORT_ALL": "1",
                   "REQUEST_METHOD": self.command, "PATH_INFO": url.path, "QUERY_STRING": url.query,
                   "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
                   "REMOTE_ADDR": self.client_address[0], "GIT_PROTOCOL": self.headers.get("Git-Protocol", "")}
            if self.headers.get("Content-Encoding"):
                env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
            out = subprocess.run(BACKEND, input=body, capture_output=True, env=env, check=False).stdout
            head, sep, payload = out.partition(b"\r\n\r\n")  # CGI headers, a blank line, the body
            if not sep:
                head, sep, payload = out.partition(b"\n\n")
            headers = [line.split(":", 1) for line in head.decode().splitlines() if ":" in line]
            status = next((v.strip() for k, v in headers if k.lower() == "status"), "200 OK")
            self.send_response(int(status.split()[0]), status.partition(" ")[2])
            for key, value in headers:
                if key.lower() != "status":
                    self.send_header(key, value.strip())
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def commit_tree(repo: Path, work: Path, files: dict[str, str], message: str) -> str:
    """Commit `files` (path → text, the whole tree) to the bare `repo`'s main branch; the commit's sha."""
    if not repo.exists():
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(repo)], check=True)
    git = ["git", "-C", str(work), "-c", "user.name=edgewise-test", "-c", "user.email=test@edgewise.invalid"]
    if not work.exists():
        work.mkdir(parents=True)
        subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    for old in work.iterdir():
        if old.name != ".git":
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", message], check=True)
    subprocess.run([*git, "push", "-q", str(repo), "main"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
