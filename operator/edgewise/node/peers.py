"""Fetching an artifact from a peer agent of the same site (its source node) instead of the source.

The peer is asked to stage the artifact (POST /v1/prefetch: it downloads it from the source
once, within the site's budget, however many of its site's nodes ask), polled until it has it,
then read by digest. The caller's own cache verifies the digest as it does for any source. Any
failure — the peer unreachable, refusing, its download failed — is a `PeerError`: the caller
falls back to the source. Runs in a download thread (blocking I/O).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgewise import contract
from edgewise.node.trust import fetch_attestation
from edgewise.shared import download as dl

POLL_SECONDS = 0.5  # between questions to the peer while it downloads
CALL_TIMEOUT = 10.0


class PeerError(Exception):
    """The peer could not deliver; fetch from the source instead."""


def peer_url(peer: str) -> str:
    """A peer as the operator names it (the node's address), or a full base URL (tests, odd ports)."""
    return peer.rstrip("/") if peer.startswith(("http://", "https://")) else contract.agent_url(peer)


def read_token(path: Path | None) -> str:
    """The agent's own token for its peers (re-read every time: the kubelet rotates it)."""
    if path is None:
        raise PeerError("no --peer-token-file: this agent cannot authenticate to its peers")
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise PeerError(f"cannot read the peer token {path}: {err}") from err


def _call(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=CALL_TIMEOUT) as resp:  # noqa: S310 - a peer agent's URL
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        with err:
            try:
                return err.code, json.loads(err.read() or b"{}")
            except ValueError:
                return err.code, {}
    except (OSError, ValueError) as err:
        raise PeerError(f"{url}: {err}") from err


def fetch(peer: str, token_file: Path | None, *, sha256: str, uri: str, model: str, sink: dl.Sink,
          stop: threading.Event, timeout: float, waited: Callable[[float], None] = lambda _s: None) -> None:
    """Copy `sha256` from the agent `peer` into `sink`, asking it to stage it first.

    While the peer's download is queued or running — paced by the site's budget, possibly
    waiting for the daily cap until the next day — this waits too (`waited` is told each pause,
    which the caller does not count against its deadline): giving up would download a second
    copy from the source, beyond the site's budget. The peer's own deadline ends a stuck download."""
    base = peer_url(peer)
    namespace, _, name = model.rpartition("/")
    body = {"uri": uri, "sha256": sha256, "model": name or None, "namespace": namespace or None}
    status, answer = _call("POST", base + contract.AGENT_PREFETCH_PATH, read_token(token_file), body)
    while status in (200, 202) and answer.get("state") not in ("ready", "failed"):
        if stop.wait(POLL_SECONDS):
            raise PeerError(f"stopped waiting for {base} to stage {sha256}")
        waited(POLL_SECONDS)
        status, answer = _call("GET", f"{base}{contract.AGENT_PREFETCH_PATH}/{sha256}", read_token(token_file))
    if status not in (200, 202) or answer.get("state") != "ready":
        raise PeerError(f"{base} could not stage {sha256}: HTTP {status} {answer.get('errorKind') or ''} "
                        f"{answer.get('error') or ''}".strip())
    opener = dl.http_opener(headers={"Authorization": f"Bearer {read_token(token_file)}"}, follow_redirects=False)
    try:
        dl.download(f"{base}/v1/artifacts/{sha256}", sink, attempts=3, base_delay=0.5, timeout=timeout,
                    openers={"http": opener, "https": opener}, sleep=lambda s: stop.wait(s))
    except dl.DownloadError as err:
        raise PeerError(str(err)) from err


def attestation(peer: str, token_file: Path | None, sha256: str, timeout: float) -> bytes | None:
    """The attestation the peer cached with `sha256` (it verified it when it filled), or None."""
    opener = dl.http_opener(headers={"Authorization": f"Bearer {read_token(token_file)}"}, follow_redirects=False)
    try:
        return fetch_attestation(peer_url(peer) + contract.AGENT_ATTESTATION_PATH.format(sha256=sha256),
                                 openers={"http": opener, "https": opener}, attempts=2, timeout=timeout,
                                 base_delay=0.2)
    except dl.DownloadError as err:
        raise PeerError(str(err)) from err
