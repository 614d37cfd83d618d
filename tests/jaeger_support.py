"""A real Jaeger (its all-in-one binary, built by hack/build-jaeger.sh) on free loopback ports.

Jaeger v2 is an OpenTelemetry Collector: it takes its ports from a config file, not flags. This one
receives OTLP/HTTP, keeps traces in memory and serves the query API (the one its UI reads).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml

from binaries_support import built_binary
from edgewise.devcluster import processes
from wait_support import wait_for


@cache
def jaeger_binary() -> Path:
    """$EDGEWISE_BIN/jaeger when present, else built (or reused) by hack/build-jaeger.sh."""
    return built_binary("jaeger")


def config(otlp_port: int, query_port: int, query_grpc_port: int) -> dict[str, Any]:
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["batch"],
                                     "exporters": ["jaeger_storage_exporter"]}},
            "telemetry": {"metrics": {"level": "none"}},  # no listener of its own on :8888
        },
        "extensions": {
            "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": 100000}}}},
            "jaeger_query": {"storage": {"traces": "memstore"},
                             "http": {"endpoint": f"127.0.0.1:{query_port}"},
                             "grpc": {"endpoint": f"127.0.0.1:{query_grpc_port}"}},
        },
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{otlp_port}"}}}},
        "processors": {"batch": {"timeout": "200ms"}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }


@dataclass(frozen=True)
class Span:
    span_id: str
    name: str
    parent: str | None
    tags: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Jaeger:
    otlp_endpoint: str  # what OTEL_EXPORTER_OTLP_ENDPOINT points at
    query_url: str
    proc: processes.Running

    def get(self, path: str, **params: str) -> Any:
        assert processes.alive(self.proc), processes.log_tail(self.proc)
        with urllib.request.urlopen(f"{self.query_url}{path}?{urlencode(params)}", timeout=10) as r:
            return json.loads(r.read())

    def services(self) -> list[str]:
        return list(self.get("/api/services").get("data") or [])

    def traces(self, service: str, operation: str = "", limit: int = 1000) -> list[list[Span]]:
        """Each trace of `service` (optionally only those with a span named `operation`), as its spans."""
        params = {"service": service, "limit": str(limit), "lookback": "1h"}
        if operation:
            params["operation"] = operation
        return [[_span(s) for s in t["spans"]] for t in self.get("/api/traces", **params).get("data") or []]


def _span(raw: dict[str, Any]) -> Span:
    parents = [r["spanID"] for r in raw.get("references") or [] if r.get("refType") == "CHILD_OF"]
    return Span(span_id=raw["spanID"], name=raw["operationName"], parent=parents[0] if parents else None,
                tags={t["key"]: t["value"] for t in raw.get("tags") or []})


@contextmanager
def running_jaeger(workdir: Path) -> Iterator[Jaeger]:
    otlp, query, grpc = processes.free_port(), processes.free_port(), processes.free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "jaeger.yaml"
    path.write_text(yaml.safe_dump(config(otlp, query, grpc)))
    proc = processes.start("jaeger", [str(jaeger_binary()), "--config", str(path)], workdir)
    jaeger = Jaeger(f"http://127.0.0.1:{otlp}", f"http://127.0.0.1:{query}", proc)
    try:
        wait_for(lambda: _answers(jaeger), 60, "Jaeger's query API", interval=0.5)
        yield jaeger
    finally:
        processes.stop(proc, grace=10)


def _answers(jaeger: Jaeger) -> bool:
    try:
        jaeger.services()
    except OSError:
        return False
    return True
