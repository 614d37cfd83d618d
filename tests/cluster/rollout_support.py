"""A simulated fleet that really serves: pod runner, real inference traffic, model files by digest."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.http as triton_http

from edgewise.devcluster.podrunner import PodRunner

FEATURES = 64


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Traffic:
    """Real inference requests, round-robin over every pod the runner serves, until stopped."""

    def __init__(self, runner: PodRunner, model: str, threads: int = 3) -> None:
        self.runner = runner
        self.model = model
        self.stop_event = threading.Event()
        self.sent = 0
        self.errors = 0
        self._clients: dict[str, Any] = {}
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for t in self._threads:
            t.join(timeout=30)

    def _loop(self, index: int) -> None:
        x = np.random.default_rng(index).standard_normal((1, FEATURES)).astype(np.float32)
        while not self.stop_event.is_set():
            pods = [p for p in self.runner.running().values() if not p.error]
            if not pods:
                self.stop_event.wait(0.2)
                continue
            for pod in pods:
                if self.stop_event.is_set():
                    return
                try:
                    client = triton_http.InferenceServerClient(f"{pod.pod_ip}:8000", network_timeout=5)
                    inp = triton_http.InferInput("x", [1, FEATURES], "FP32")
                    inp.set_data_from_numpy(x)
                    client.infer(self.model, [inp])
                    self.sent += 1
                except Exception:
                    self.errors += 1  # a pod still starting, or just removed
                    self.stop_event.wait(0.05)


def serving(runner: PodRunner, expected: int) -> bool:
    """`expected` pods run a server that answers ready."""
    pods = [p for p in runner.running().values() if not p.error]
    if len(pods) != expected:
        return False
    for pod in pods:
        try:
            if not triton_http.InferenceServerClient(f"{pod.pod_ip}:8000", network_timeout=2).is_server_ready():
                return False
        except Exception:
            return False
    return True
