"""Fixtures of the analysis tests: real `edgewise serve` pods and a real Prometheus server.

The pods of one simulated class start once per session: two stable pods serving the good
model, and canaries serving the good, the slow and the wrong model, plus one good canary
that tests may freeze and restart. Prometheus is Debian's `prometheus` package, started on
a free loopback port with a tmp storage dir and a generated config that scrapes those pods
every second with the labels the prometheus provider expects; it is stopped after the
session. `make test` installs it (APT_PACKAGES).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import analysis_models_support as models
import pytest
import yaml
from analysis_support import MODEL_NAME, Fleet, Pod, PrometheusServer, start_all

from edgewise.devcluster import processes

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
SCRAPE_INTERVAL_S = 1


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("analysis-models")
    return {"good": models.good(root / "good"), "slow": models.slow(root / "slow"),
            "wrong": models.wrong(root / "wrong")}


@pytest.fixture(scope="session")
def golden_npz(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Golden inputs alone (compared with a stable pod) and with stored expected outputs."""
    root = tmp_path_factory.mktemp("golden")
    return {"inputs": models.write_golden(root / "inputs.npz"),
            "expected": models.write_golden(root / "expected.npz", model_dirs["good"])}


@pytest.fixture(scope="session")
def fleet(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    logs = tmp_path_factory.mktemp("serve-logs")
    # Each pod on its own loopback address, as pods have their own IPs.
    spec = [("stable-1", "good"), ("stable-2", "good"), ("canary-good", "good"), ("canary-slow", "slow"),
            ("canary-wrong", "wrong"), ("canary-flaky", "good")]
    pods = [Pod(name, f"127.0.0.{31 + i}", model_dirs[model], logs) for i, (name, model) in enumerate(spec)]
    try:
        start_all(pods)
        yield Fleet(stable=(pods[0], pods[1]), good=pods[2], slow=pods[3], wrong=pods[4], flaky=pods[5])
    finally:
        for p in pods:
            p.stop()


def scrape_config(jobs: dict[str, list[tuple[Pod, str]]], model: str = MODEL_NAME) -> dict:
    """One job per class: every pod with its class and revision as target labels."""
    return {
        "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s", "scrape_timeout": f"{SCRAPE_INTERVAL_S}s",
                   "evaluation_interval": f"{SCRAPE_INTERVAL_S}s"},
        "scrape_configs": [
            {"job_name": class_name,
             "static_configs": [{"targets": [pod.metrics_target],
                                 "labels": {"model": model, "edgewise_class": class_name,
                                            "edgewise_revision": revision, "pod": pod.name}}
                                for pod, revision in members]}
            for class_name, members in jobs.items()
        ],
    }


@pytest.fixture(scope="session")
def prometheus(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A real Prometheus scraping the fleet as two classes: `good` and `slow`.

    Both classes share the stable pods (listed in both jobs, so each series exists once
    per class) and have one canary each, at revision 2.
    """
    if not Path(PROMETHEUS).exists():
        pytest.fail(f"{PROMETHEUS} not found: install Debian's prometheus package (make test does)")
    root = tmp_path_factory.mktemp("prometheus")
    stable = [(p, "1") for p in fleet.stable]
    config = scrape_config({"good": [*stable, (fleet.good, "2")], "slow": [*stable, (fleet.slow, "2")]})
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = processes.free_port()
    proc = processes.start(
        "prometheus",
        [PROMETHEUS, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        root,
    )
    server = PrometheusServer(f"http://127.0.0.1:{port}", targets=len(stable) * 2 + 2)
    try:
        _wait_scraping(server, proc)
        yield server
    finally:
        processes.stop(proc, grace=20)


def _wait_scraping(server: PrometheusServer, proc: processes.Running, timeout: float = 60) -> None:
    """Until every target has been scraped successfully, twice (rate() needs two samples)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not processes.alive(proc):
            pytest.fail(f"prometheus exited:\n{processes.log_tail(proc)}")
        try:
            up = server.query("count(count_over_time(up[1m]) >= 2 and up == 1)")
            if up and int(float(up[0]["value"][1])) == server.targets:
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"prometheus did not scrape {server.targets} targets in {timeout}s:\n{processes.log_tail(proc)}")
