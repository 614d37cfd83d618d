"""Nodes from one watch instead of one LIST per reconcile: an informer-style cache.

List every node once (in pages, so a 5,000-node fleet never sits in memory as one JSON
document), then watch from that list's resourceVersion and apply each event to a dict
of `NodeInfo`. When the apiserver no longer has the history the watch would resume from
(410 Gone, after a long disconnection or an apiserver restart), list again and report
what changed meanwhile. Reconciles read `snapshot()`: no request at all, so reads at rest
no longer grow with events × fleet size.

The cache is also where the operator learns that nodes changed: `on_event` is called after
the snapshot took the change, so a reconcile it triggers sees it. Only changes to what
planning sees (`NodeInfo`: labels, taints, readiness, address, memory) are reported, not
heartbeats.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

from edgewise.core.observed import NodeInfo
from edgewise.kube.convert import node_info

log = logging.getLogger("edgewise.kube")

NodeEvent = Callable[[str, NodeInfo], None]  # ("ADDED" | "MODIFIED" | "DELETED", the node)
PAGE = 500  # nodes per LIST page: bounds the memory one page of JSON takes
MAX_BACKOFF = 30.0


class Expired(Exception):
    """The watch's resourceVersion is older than the history the apiserver keeps (410 Gone)."""


@dataclass(frozen=True)
class Change:
    type: str
    node: NodeInfo


def diff(old: dict[str, NodeInfo], new: dict[str, NodeInfo]) -> list[Change]:
    """What a relist found: nodes that went, came, or changed while the cache was not watching."""
    gone = [Change("DELETED", n) for name, n in old.items() if name not in new]
    came = [Change("ADDED" if name not in old else "MODIFIED", n) for name, n in new.items()
            if old.get(name) != n]
    return gone + came


def apply_event(nodes: dict[str, NodeInfo], kind: str, obj: dict[str, Any]) -> Change | None:
    """Apply one watch event to `nodes` (in place); the change to report, if planning would see one."""
    name = (obj.get("metadata") or {}).get("name", "")
    if kind == "DELETED":
        gone = nodes.pop(name, None)
        return Change("DELETED", gone) if gone is not None else None
    info = node_info(obj)
    old = nodes.get(name)
    nodes[name] = info  # always keep the newest (fields NodeInfo does not compare, e.g. allocatable)
    if old == info:
        return None  # a heartbeat: nothing planning sees
    return Change("ADDED" if old is None else "MODIFIED", info)


class NodeCache:
    def __init__(self, api: client.ApiClient, on_event: NodeEvent | None = None,
                 watch_seconds: int = 300, backoff: float = 1.0) -> None:
        self.core = client.CoreV1Api(api)
        self.on_event = on_event
        self.watch_seconds = watch_seconds
        self.backoff = backoff
        self._nodes: dict[str, NodeInfo] = {}
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._rv = ""  # where the next watch resumes; empty: list first
        self._resp: Any = None  # the open watch response, closed to interrupt it
        self._thread: threading.Thread | None = None
        # What the cache asked the apiserver for, since start (tests and the bench read them).
        self.lists = 0
        self.watches = 0
        self.expired = 0

    # -- what reconciles use ------------------------------------------------------------------------

    def snapshot(self) -> list[NodeInfo] | None:
        """Every node as last seen; None until the first listing is complete."""
        if not self._synced.is_set():
            return None
        with self._lock:
            return list(self._nodes.values())

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> NodeCache:
        self._thread = threading.Thread(target=self._run, name="node-cache", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._close()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the loop -----------------------------------------------------------------------------------

    def _run(self) -> None:
        delay = self.backoff
        while not self._stop.is_set():
            try:
                if not self._resume_version():
                    self._relist()
                self._watch()
                delay = self.backoff
            except Expired:
                self.expired += 1
                log.info("node watch expired (410 Gone): listing the nodes again")
                with self._lock:
                    self._rv = ""
            except Exception as err:  # noqa: BLE001 - the cache must outlive any one failed request
                if self._stop.is_set():
                    break
                log.warning("node watch failed (retry in %.0fs): %s", delay, err)
                self._stop.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF)

    def _resume_version(self) -> str:
        with self._lock:
            return self._rv

    def _relist(self) -> None:
        nodes: dict[str, NodeInfo] = {}
        token, rv = None, ""
        while True:
            try:
                resp = self.core.list_node(limit=PAGE, _continue=token, _preload_content=False)
            except client.ApiException as err:
                if err.status == 410:  # the continue token expired mid-listing: start over
                    raise Expired from err
                raise
            page = json.loads(resp.data)
            del resp
            for obj in page.get("items") or []:
                info = node_info(obj)
                nodes[info.name] = info
            meta = page.get("metadata") or {}
            rv, token = meta.get("resourceVersion", ""), meta.get("continue")
            if not token:
                break
        self.lists += 1
        with self._lock:
            old, self._nodes, self._rv = self._nodes, nodes, rv
        first = not self._synced.is_set()
        self._synced.set()
        if first:
            log.info("node cache synced: %d node(s) at resourceVersion %s", len(nodes), rv)
        self._emit(diff(old, nodes))

    def _watch(self) -> None:
        rv = self._resume_version()
        try:
            resp = self.core.list_node(watch=True, resource_version=rv, allow_watch_bookmarks=True,
                                       timeout_seconds=self.watch_seconds, _preload_content=False,
                                       _request_timeout=(30, self.watch_seconds + 30))
        except client.ApiException as err:
            if err.status == 410:
                raise Expired from err
            raise
        self.watches += 1
        self._resp = resp
        try:
            for kind, obj in _events(resp):
                if self._stop.is_set():
                    return
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Expired(obj.get("message", ""))
                    raise RuntimeError(f"node watch error: {obj.get('message') or obj}")
                version = (obj.get("metadata") or {}).get("resourceVersion", "")
                with self._lock:
                    change = None if kind == "BOOKMARK" else apply_event(self._nodes, kind, obj)
                    if version:
                        self._rv = version
                if change is not None:
                    self._emit([change])
        except Exception:
            if self._resp is None or self._stop.is_set():
                return  # closed on purpose (stop)
            raise
        finally:
            self._close()

    def _close(self) -> None:
        resp, self._resp = self._resp, None
        if resp is None:
            return
        try:
            # Shut the socket down first: closing it alone does not wake a thread blocked reading it, and
            # the connection must not go back to the client's pool with a watch stream still on it.
            sock = getattr(getattr(resp, "connection", None), "sock", None)
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
            resp.close()
        except Exception:  # noqa: BLE001 - closing a broken stream is best effort
            pass

    def _emit(self, changes: list[Change]) -> None:
        if self.on_event is None:
            return
        for c in changes:
            try:
                self.on_event(c.type, c.node)
            except Exception:  # noqa: BLE001 - a failing listener must not stop the cache
                log.exception("node event listener failed")


def _events(resp: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    for line in iter_resp_lines(resp):
        if line:
            event = json.loads(line)
            yield str(event.get("type", "")), dict(event.get("object") or {})
