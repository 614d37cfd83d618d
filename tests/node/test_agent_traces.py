"""The node agent's download spans, in a real Jaeger.

The agent runs with nothing but the standard OTEL_* variables pointing at Jaeger's OTLP/HTTP
receiver (hack/build-jaeger.sh builds Jaeger's all-in-one binary); a prefetch the operator asks
for and a fill a pod asks for must each leave an `agent.download` span with the artifact's digest,
its model and the bytes it downloaded, and a download with a wrong digest one marked failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cache_support import OPERATOR, AgentProcess, SourceServer, artifact_url, get_json, http, pod_http, sha256

from jaeger_support import Jaeger, Span, running_jaeger
from wait_support import wait_for

SERVICE = "edgewise-agent-under-test"
STAGED, FILLED = b"staged artifact " * 4096, b"filled artifact " * 2048


@pytest.fixture
def traced(tmp_path: Path, source: SourceServer) -> Iterator[tuple[Jaeger, AgentProcess]]:
    with running_jaeger(tmp_path / "jaeger") as jaeger:
        agent = AgentProcess(tmp_path / "cache", env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint, "OTEL_SERVICE_NAME": SERVICE,
            "OTEL_BSP_SCHEDULE_DELAY": "200"}).start()  # export every 200 ms rather than every 5 s
        try:
            yield jaeger, agent
        finally:
            agent.stop()


def _downloads(jaeger: Jaeger) -> list[Span]:
    return [s for t in jaeger.traces(SERVICE, "agent.download") for s in t if s.name == "agent.download"]


def test_each_download_is_a_span_with_its_digest_model_and_bytes(traced: tuple[Jaeger, AgentProcess],
                                                                 source: SourceServer) -> None:
    jaeger, agent = traced
    staged_uri, filled_uri = source.add("/staged.onnx", STAGED), source.add("/filled.onnx", FILLED)
    body = json.dumps({"uri": staged_uri, "sha256": sha256(STAGED), "model": "detector",
                       "namespace": "vision"}).encode()
    headers = {"Content-Type": "application/json"}
    assert http("POST", agent.url + "/v1/prefetch", body, headers, token=OPERATOR)[0] == 202
    wait_for(lambda: get_json(f"{agent.url}/v1/prefetch/{sha256(STAGED)}", token=OPERATOR)["state"] == "ready",
             60, "the prefetch to finish")
    status, _, got = pod_http("GET", artifact_url(agent, sha256(FILLED), filled_uri, model="detector"))
    assert status == 200 and got == FILLED
    wrong = sha256(b"not what the source serves")
    assert pod_http("GET", artifact_url(agent, wrong, filled_uri, model="detector"))[0] >= 400

    def three() -> list[Span] | None:
        spans = _downloads(jaeger)
        return spans if len(spans) >= 3 else None

    spans: Any = wait_for(three, 30, "three agent.download spans in Jaeger", interval=0.5)
    by_digest = {s.tags["edgewise.sha256"]: s for s in spans}
    assert by_digest[sha256(STAGED)].tags["edgewise.bytes"] == len(STAGED), by_digest
    assert by_digest[sha256(FILLED)].tags["edgewise.bytes"] == len(FILLED), by_digest
    where = {(s.tags["edgewise.model"], s.tags["edgewise.scheme"]) for s in spans}
    assert where == {("vision/detector", "http")}, spans
    failed = by_digest[wrong]
    assert failed.tags.get("otel.status_code") == "ERROR", failed  # the digest mismatch marks it failed
