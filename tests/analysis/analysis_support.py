"""Real `edgewise serve` processes as the pods of a class, and real inference traffic to them.

Each simulated pod gets its own loopback address (127.0.0.x, like a pod IP) and ports the
kernel reports free on that address; the providers only ever see `PodEndpoint`s, exactly
what the rollout hands them for real pods.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import tritonclient.http.aio as aioclient

from edgewise.analysis.provider import AnalysisTarget, GoldenFile, PodEndpoint
from edgewise.core.analysis import Thresholds
from edgewise.devcluster import processes
from edgewise.devcluster.processes import free_ports

MODEL_NAME = "detector"
READY_TIMEOUT_S = 180  # the machine may be busy compiling; loading is usually ~2 s

# Generous latency limits: six servers and the test's client share two busy cores, so a good
# canary's p95 over a few seconds can wobble by several milliseconds; the slow model adds ~40.
LIMITS = Thresholds(max_error_rate=0.01, max_p95_latency_ms=5000, max_latency_increase_percent=100,
                    latency_noise_ms=10.0, min_requests=20, min_golden_cosine=0.99)


@dataclass
class Pod:
    """One simulated runtime pod: a real `edgewise serve` process on its own loopback IP."""

    name: str
    ip: str
    model_dir: Path
    log_dir: Path
    ports: list[int] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    starts: int = 0

    def start(self) -> Pod:
        if not self.ports:
            self.ports = free_ports(3, self.ip)
        self.starts += 1
        log = open(self.log_dir / f"{self.name}.{self.starts}.log", "wb")  # noqa: SIM115 - owned by proc
        http, grpc, metrics = self.ports
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgewise", "serve", "--model-dir", str(self.model_dir),
             "--model-name", MODEL_NAME, "--host", self.ip, "--http-port", str(http),
             "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--threads", "1",
             "--drain-timeout", "2", "--log-level", "WARNING"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> Pod:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            if _status(f"http://{self.ip}:{self.ports[0]}/v2/health/ready") == 200:
                return self
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return (self.log_dir / f"{self.name}.{self.starts}.log").read_text(errors="replace")

    def pause(self) -> None:
        """Freeze the process: it keeps its sockets but answers nothing, like a hung pod."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.resume()  # a stopped process would not see SIGTERM until continued
        processes.terminate(self.proc, grace=15)

    def endpoint(self, restarts: int = 0, **kw: object) -> PodEndpoint:
        http, grpc, metrics = self.ports
        return PodEndpoint(name=self.name, uid=f"uid-{self.name}", ip=self.ip, http_port=http, grpc_port=grpc,
                           metrics_port=metrics, restarts=restarts, node=f"node-{self.name}",
                           **kw)  # type: ignore[arg-type]

    @property
    def http_url(self) -> str:
        return f"{self.ip}:{self.ports[0]}"

    @property
    def metrics_target(self) -> str:
        return f"{self.ip}:{self.ports[2]}"


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def start_all(pods: Iterable[Pod]) -> list[Pod]:
    """Start every pod first, then wait: the processes load their models in parallel."""
    pods = [p.start() for p in pods]
    return [p.wait_ready() for p in pods]


async def _drive(pod: Pod, seconds: float | None, count: int | None, period_s: float) -> int:
    """One closed-loop client paced at `period_s`: for `seconds`, or until `count` requests."""
    x = np.random.default_rng(zlib.crc32(pod.name.encode())).standard_normal((1, 64)).astype(np.float32)
    inp = aioclient.InferInput("x", [1, 64], "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    sent = 0
    deadline = time.monotonic() + (seconds or 0)
    async with aioclient.InferenceServerClient(pod.http_url, conn_timeout=30) as client:
        while (count is not None and sent < count) or (count is None and time.monotonic() < deadline):
            started = time.monotonic()
            await client.infer(MODEL_NAME, [inp])
            sent += 1
            await asyncio.sleep(max(0.0, period_s - (time.monotonic() - started)))
    return sent


def traffic(pods: Iterable[Pod], seconds: float | None = None, count: int | None = None,
            period_s: float = 0.03) -> dict[str, int]:
    """Real inference requests to every pod at once; returns how many each answered."""
    pods = list(pods)

    async def run() -> list[int]:
        return await asyncio.gather(*(_drive(p, seconds, count, period_s) for p in pods))

    return dict(zip((p.name for p in pods), asyncio.run(run()), strict=True))


@dataclass(frozen=True)
class Fleet:
    """The pods of the simulated class: two stable ones, and one canary per kind of model."""

    stable: tuple[Pod, ...]
    good: Pod
    slow: Pod
    wrong: Pod
    flaky: Pod  # frozen and restarted by the deferral test


@dataclass(frozen=True)
class PrometheusServer:
    """A running Prometheus (see conftest.prometheus) and how many targets it scrapes."""

    url: str
    targets: int

    def query(self, promql: str) -> list:
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{urlencode({'query': promql})}", timeout=5) as r:
            return json.loads(r.read())["data"]["result"]


def target(class_name: str, canary: Iterable[Pod] = (), stable: Iterable[Pod] = (), golden: Path | None = None,
           sample_size: int = 10, interval_s: float = 5.0, **canary_kw: object) -> AnalysisTarget:
    """What the rollout would hand a provider for one class of model `detector`, revision 2 vs 1."""
    return AnalysisTarget(
        model=MODEL_NAME, namespace="vision", class_name=class_name, canary_revision="2", stable_revision="1",
        interval_s=interval_s, canary=tuple(p.endpoint(**canary_kw) for p in canary),
        stable=tuple(p.endpoint() for p in stable), thresholds=LIMITS,
        golden=GoldenFile(str(golden), min_cosine=0.99) if golden else None, sample_size=sample_size,
    )
