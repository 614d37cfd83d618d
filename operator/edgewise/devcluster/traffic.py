"""Real inference traffic for the demo and the rollout tests, sent the way an application on a node
calls its model's node-local address.

The model's Service (`internalTrafficPolicy: Local`) sends a client on node N to the model's pods
on N that are Ready and not terminating, and only when there is none to the terminating ones that
still serve (kube-proxy's terminating-endpoint fallback). kwok pods have loopback IPs, which
EndpointSlices refuse, so here the client takes those endpoints from the pods themselves, per node:
one simulated application per node, each sending to its own node's pods only.

kwok marks a pod Ready the moment it runs, before the pod runner's server has loaded the model;
a kubelet would not (its readiness probe would fail). So a pod joins its node's endpoints once its
server answers ready, as the readiness probe would have it.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import tritonclient.http as triton_http

from edgewise import contract
from edgewise.devcluster.podrunner import PodRunner

REFRESH_SECONDS = 0.2


@dataclass
class NodeCount:
    sent: int = 0
    errors: int = 0
    no_endpoint: int = 0  # of the errors: no ready or serving pod on the node (kube-proxy drops the request)


@dataclass
class _Endpoints:
    ready: dict[str, list[str]] = field(default_factory=dict)  # node → pod IPs, Ready and not terminating
    serving: dict[str, list[str]] = field(default_factory=dict)  # node → IPs of served pods still running


class Traffic:
    """One application per node, calling the model on its own node, from a few threads, until the context exits."""

    def __init__(self, runner: PodRunner, model: str, features: int = 64, threads: int = 3) -> None:
        self.runner = runner
        self.model = model
        self.features = features
        self.per_node: dict[str, NodeCount] = {}
        self.reasons: Counter[str] = Counter()  # why requests failed, for the report
        self._endpoints = _Endpoints()
        self._probed: set[str] = set()  # pod uids whose server answered ready once
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(threads)]
        self._refresher = threading.Thread(target=self._refresh_loop, daemon=True)

    @property
    def sent(self) -> int:
        with self._lock:
            return sum(c.sent for c in self.per_node.values())

    @property
    def errors(self) -> int:
        with self._lock:
            return sum(c.errors for c in self.per_node.values())

    def __enter__(self) -> Traffic:
        self._refresh()
        self._refresher.start()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in (*self._threads, self._refresher):
            t.join(timeout=30)

    # -- endpoints -----------------------------------------------------------------------------------

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            try:
                self._refresh()
            except Exception:  # noqa: BLE001 - an API hiccup: keep the last endpoints
                continue

    def _refresh(self) -> None:
        items = self.runner.core.list_namespaced_pod(
            self.runner.namespace, label_selector=f"edgewise.io/model={self.model}").items
        ready: dict[str, list[str]] = {}
        for pod in items:
            conditions = {c.type: c.status for c in pod.status.conditions or []}
            if pod.metadata.deletion_timestamp or conditions.get("Ready") != "True" or not pod.status.pod_ip:
                continue
            if pod.metadata.uid not in self._probed:
                if not _answers_ready(pod.status.pod_ip):
                    continue
                self._probed.add(pod.metadata.uid)
            ready.setdefault(pod.spec.node_name, []).append(pod.status.pod_ip)
        # Fallback: pods that were serving and whose containers still run, terminating ones included (their
        # server answers until its preStop ends), as kube-proxy falls back to serving terminating endpoints.
        serving: dict[str, list[str]] = {}
        for proc in (*self.runner.running().values(), *self.runner.still_serving().values()):
            if proc.uid in self._probed and proc.containers and not proc.error:
                serving.setdefault(proc.node, []).append(proc.pod_ip)
        with self._lock:
            self._endpoints = _Endpoints(ready=ready, serving=serving)
            for node in ready:
                self.per_node.setdefault(node, NodeCount())

    def _pick(self, node: str, turn: int) -> str | None:
        with self._lock:
            ips = self._endpoints.ready.get(node) or self._endpoints.serving.get(node) or []
        return ips[turn % len(ips)] if ips else None

    # -- load ----------------------------------------------------------------------------------------

    def _loop(self, seed: int) -> None:
        x = np.random.default_rng(seed).standard_normal((1, self.features)).astype(np.float32)
        clients: dict[str, triton_http.InferenceServerClient] = {}  # one keep-alive client per pod IP
        for turn in itertools.count(seed):
            if self._stop.is_set():
                return
            with self._lock:
                nodes = sorted(self.per_node)
            if not nodes:
                self._stop.wait(0.2)
                continue
            for node in nodes:
                if self._stop.is_set():
                    return
                ip = self._pick(node, turn)
                count = self.per_node[node]
                if ip is None:
                    with self._lock:
                        count.no_endpoint += 1
                        count.errors += 1
                    self._stop.wait(0.05)
                    continue
                try:
                    if ip not in clients:
                        clients[ip] = triton_http.InferenceServerClient(f"{ip}:{contract.HTTP_PORT}",
                                                                        network_timeout=5)
                    inp = triton_http.InferInput("x", [1, self.features], "FP32")
                    inp.set_data_from_numpy(x)
                    clients[ip].infer(self.model, [inp])
                    with self._lock:
                        count.sent += 1
                except Exception as err:  # noqa: BLE001 - refused or cut: what an application would see
                    with self._lock:
                        count.errors += 1
                        self.reasons[f"{type(err).__name__}: {str(err)[:80]}"] += 1
                    clients.pop(ip, None)
                    self._stop.wait(0.05)


def _answers_ready(ip: str) -> bool:
    try:
        return bool(triton_http.InferenceServerClient(f"{ip}:{contract.HTTP_PORT}", network_timeout=1)
                    .is_server_ready())
    except Exception:  # noqa: BLE001 - not up yet
        return False


def serving(runner: PodRunner, expected: int) -> bool:
    """Exactly `expected` pods run a server that answers ready."""
    pods = [p for p in runner.running().values() if not p.error]
    if len(pods) != expected:
        return False
    for pod in pods:
        try:
            client = triton_http.InferenceServerClient(f"{pod.pod_ip}:{contract.HTTP_PORT}", network_timeout=2)
            if not client.is_server_ready():
                return False
        except Exception:  # noqa: BLE001 - not up yet
            return False
    return True
