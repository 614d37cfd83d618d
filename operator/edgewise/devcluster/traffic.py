"""Real inference traffic to every pod the pod runner serves, for the demo and the rollout tests."""

from __future__ import annotations

import threading

import numpy as np
import tritonclient.http as triton_http

from edgewise import contract
from edgewise.devcluster.podrunner import PodRunner


class Traffic:
    """Requests round-robin over every serving pod, from a few threads, until the context exits."""

    def __init__(self, runner: PodRunner, model: str, features: int = 64, threads: int = 3) -> None:
        self.runner = runner
        self.model = model
        self.features = features
        self.sent = 0
        self.errors = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _loop(self, seed: int) -> None:
        x = np.random.default_rng(seed).standard_normal((1, self.features)).astype(np.float32)
        clients: dict[str, triton_http.InferenceServerClient] = {}  # one keep-alive client per pod IP
        while not self._stop.is_set():
            pods = [p for p in self.runner.running().values() if not p.error]
            if not pods:
                self._stop.wait(0.2)
                continue
            for pod in pods:
                if self._stop.is_set():
                    return
                try:
                    if pod.pod_ip not in clients:
                        clients[pod.pod_ip] = triton_http.InferenceServerClient(
                            f"{pod.pod_ip}:{contract.HTTP_PORT}", network_timeout=5)
                    client = clients[pod.pod_ip]
                    inp = triton_http.InferInput("x", [1, self.features], "FP32")
                    inp.set_data_from_numpy(x)
                    client.infer(self.model, [inp])
                    self.sent += 1
                except Exception:  # noqa: BLE001 - a pod still starting, or just removed
                    self.errors += 1
                    clients.pop(pod.pod_ip, None)
                    self._stop.wait(0.05)


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
