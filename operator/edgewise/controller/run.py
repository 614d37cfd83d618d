"""Run the operator: kopf's watch machinery plus the work queue, in one event loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import kopf

from edgewise.api.settings import OperatorSettings
from edgewise.controller import handlers
from edgewise.controller.metrics import OperatorMetrics, serve
from edgewise.controller.reconcile import Reconciler
from edgewise.controller.workers import Controller
from edgewise.kube.client import api_client
from edgewise.kube.node_cache import NodeCache

log = logging.getLogger("edgewise.controller")


@dataclass
class RunOptions:
    settings: OperatorSettings
    kubeconfig: str | None = None
    namespaces: list[str] = field(default_factory=list)  # empty: cluster-wide
    liveness: str | None = None  # e.g. http://0.0.0.0:8080/healthz
    metrics: str | None = None  # host:port of /metrics, e.g. 0.0.0.0:8081


async def operate(options: RunOptions, stop_flag: threading.Event | asyncio.Event | None = None,
                  ready_flag: threading.Event | asyncio.Event | None = None) -> None:
    """Run until `stop_flag` is set (or a signal arrives, when in the main thread)."""
    metrics = OperatorMetrics()
    api = api_client(options.kubeconfig, on_request=metrics.requested)
    loop = asyncio.get_running_loop()
    # Nodes come from one watch (kube/node_cache.py), which also tells the controller what changed:
    # after the cache took the change, so the reconcile it triggers reads it.
    nodes = NodeCache(api)
    reconciler = Reconciler(api, options.settings, metrics=metrics, node_cache=nodes)
    controller = Controller(reconciler, options.namespaces, metrics)
    nodes.on_event = lambda kind, node: loop.call_soon_threadsafe(
        controller.node_changed, kind, node.name, node.labels, list(node.taints))
    nodes.start()
    registry = kopf.OperatorRegistry()
    handlers.register(registry, controller, options.settings)
    store_server = None
    if options.settings.artifact_dir and reconciler.artifacts is not None:
        from edgewise.artifacts.builtin_http import start

        host, _, port = options.settings.artifact_listen.rpartition(":")
        store_server = await start(reconciler.artifacts.store, host or "0.0.0.0", int(port),
                                   uploads=reconciler.artifacts)
        log.info("artifact store at %s serving %s", options.settings.artifact_listen, options.settings.artifact_dir)
    metrics_server = serve(metrics, options.metrics) if options.metrics else None
    if options.metrics:
        log.info("metrics at http://%s/metrics", options.metrics)
    loops = asyncio.create_task(_after_sync(nodes, lambda: controller.run(options.settings.workers,
                                                                           options.settings.resync_seconds)))
    log.info("edgewise operator starting (%s)", ", ".join(options.namespaces) or "cluster-wide")
    try:
        await kopf.operator(
            registry=registry, standalone=True, clusterwide=not options.namespaces,
            namespaces=options.namespaces, liveness_endpoint=options.liveness,
            stop_flag=stop_flag, ready_flag=ready_flag,
        )
    finally:
        nodes.stop()
        loops.cancel()
        try:
            await loops
        except asyncio.CancelledError:
            pass
        if store_server is not None:
            await store_server.cleanup()
        if metrics_server is not None:
            metrics_server.shutdown()
        if reconciler.artifacts is not None:
            reconciler.artifacts.close()
        api.close()


async def _after_sync(nodes: NodeCache, work: Callable[[], Coroutine[Any, Any, None]], timeout: float = 60.0
                      ) -> None:
    """Start the workers once the node cache has its first listing, so the first pass reads it instead of
    listing every node itself (after `timeout`, they start anyway and list until the cache catches up)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not nodes.wait_synced(0) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    if not nodes.wait_synced(0):
        log.warning("the node cache has not synced after %.0fs; reconciles list nodes until it does", timeout)
    await work()
