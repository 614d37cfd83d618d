"""The `prometheus` analysis provider: the same measurement, asked of a Prometheus server.

Each number of a cohort is one PromQL template, instant-queried over Prometheus's HTTP
API (`/api/v1/query`). Templates use `$model`, `$class`, `$revision`, `$namespace` and
`$interval`; label values are escaped for PromQL strings, `$interval` becomes a range
such as `60s`. Any template can be overridden (e.g. to add a `cluster` matcher).

Series must carry three labels, which the scrape configuration attaches from the runtime
pods' labels (Triton and `edgewise serve` expose only `model` and `version`):

- `model`: the EdgeModel's name (a target label; the exposed `model` label then becomes
  `exported_model`, as Prometheus does with conflicting labels unless honor_labels is set);
- `edgewise_class`: the hardware class;
- `edgewise_revision`: the rollout revision of the pod's slot (canary or stable).

Readiness and restarts still come from Kubernetes (the target's pod endpoints), exactly as
for the runtime provider; the golden-input check talks to the pods, as it must.

The address comes from a namespace user's spec, and the operator's answers end up in that
user's status and Events. So the operator only asks addresses its settings allow
(`address_allowed`), follows no redirect, and never repeats what a server answered: errors
name the HTTP status and a fixed reason (Prometheus's own `errorType`, one of a fixed set).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from dataclasses import replace
from string import Template
from urllib.parse import urlsplit

import aiohttp

from edgewise import contract
from edgewise.analysis.golden import GoldenChecker
from edgewise.analysis.provider import AnalysisTarget
from edgewise.core.analysis import CohortMetrics, DeferredPod, Measurement, PodHealth, aggregate

SELECTOR = 'model="$model", edgewise_class="$class", edgewise_revision="$revision"'
_HIST = contract.LATENCY_HISTOGRAM


def _requests(fn: str) -> str:
    """Successful plus failed requests; a missing failure series counts as zero failures."""
    return (f"(sum({fn}(nv_inference_request_success{{{SELECTOR}}}[$interval])) + "
            f"(sum({fn}(nv_inference_request_failure{{{SELECTOR}}}[$interval])) or vector(0)))")


# One template per CohortMetrics field. Each must return a single value (a one-element
# vector or a scalar); an empty result or NaN (e.g. 0/0 without traffic) means "unknown".
DEFAULT_QUERIES: dict[str, str] = {
    "pods": f"count(up{{{SELECTOR}}} == 1)",
    "requests": _requests("increase"),
    "request_rate": _requests("rate"),
    "error_rate": (f"(sum(rate(nv_inference_request_failure{{{SELECTOR}}}[$interval])) or vector(0)) "
                   f"/ {_requests('rate')}"),
    "p95_latency_ms": (f"histogram_quantile(0.95, sum by (le) "
                       f"(rate({_HIST}_bucket{{{SELECTOR}}}[$interval]))) * 1000"),
    "mean_latency_ms": (f"sum(rate(nv_inference_request_duration_us{{{SELECTOR}}}[$interval])) "
                        f"/ {_requests('rate')} / 1000"),
    "memory_bytes": f"avg(avg_over_time(process_resident_memory_bytes{{{SELECTOR}}}[$interval]))",
}


# Prometheus's HTTP API error types (https://prometheus.io/docs/prometheus/latest/querying/api/): the only
# part of an error answer that is repeated, because it cannot carry anything else.
ERROR_TYPES = frozenset({"timeout", "canceled", "execution", "bad_data", "internal", "unavailable",
                         "not_found"})
MAX_ANSWER_BYTES = 1 << 20  # an instant query of one value answers in well under a KiB


class PrometheusError(RuntimeError):
    """Prometheus could not be asked (unreachable, refused the query): the provider is offline.

    Its text is shown to the model's owner: it never contains what the server sent.
    """


def normalize_address(address: str) -> str:
    """A base URL as the allow-list compares it: scheme and host lower-cased, no trailing slash."""
    parts = urlsplit(address.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def address_allowed(address: str, allowed: tuple[str, ...] | list[str]) -> bool:
    """Whether a model may name `address`: one of the operator's allowed base URLs, exactly.

    Userinfo, a query or a fragment are never allowed (a trailing `#` would cut off the
    API path and point the operator at any URL of an allowed host).
    """
    parts = urlsplit(address.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or "@" in parts.netloc \
            or parts.query or parts.fragment or "#" in address or "?" in address:
        return False
    return normalize_address(address) in {normalize_address(a) for a in allowed}


def promql_string(value: str) -> str:
    """Escape a value for use inside a double-quoted PromQL string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def promql_duration(seconds: float) -> str:
    """A PromQL range for an interval, whole seconds, at least 1s."""
    return f"{max(1, math.ceil(seconds))}s"


def render(template: str, target: AnalysisTarget, revision: str) -> str:
    """Fill a template's variables for one cohort (pure; a typo'd variable raises KeyError)."""
    return Template(template).substitute(
        model=promql_string(target.model), namespace=promql_string(target.namespace),
        revision=promql_string(revision), interval=promql_duration(target.interval_s),
        **{"class": promql_string(target.class_name)},
    )


def parse_value(body: object) -> float | None:
    """The single value of an instant query's answer, None when empty or not a finite number."""
    if not isinstance(body, Mapping):
        raise PrometheusError("the answer is not a Prometheus API answer (not a JSON object)")
    if body.get("status") != "success":
        kind = body.get("errorType")
        raise PrometheusError(f"Prometheus refused the query ({kind})" if kind in ERROR_TYPES
                              else "the answer is not a Prometheus API answer (no status success)")
    try:
        data = body["data"]
        result = data["result"]
        if data["resultType"] == "scalar":
            raw = result[1]
        elif data["resultType"] == "vector":
            if not result:
                return None
            raw = result[0]["value"][1]
        else:
            kind = data["resultType"] if data["resultType"] in ("matrix", "string") else "another type"
            raise PrometheusError(f"expected a vector or scalar result, got {kind}")
        value = float(raw)
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise PrometheusError("the answer is not a Prometheus API answer (malformed data)") from err
    return value if math.isfinite(value) else None


class PrometheusProvider:
    """Asks Prometheus for each cohort's numbers with the PromQL templates."""

    name = "prometheus"

    def __init__(self, address: str, queries: Mapping[str, str] | None = None, timeout_s: float = 10.0,
                 golden: GoldenChecker | None = None) -> None:
        self.address = address.rstrip("/")
        unknown = set(queries or {}) - set(DEFAULT_QUERIES)
        if unknown:
            raise ValueError(f"unknown query names {sorted(unknown)}; known: {sorted(DEFAULT_QUERIES)}")
        self.queries = {**DEFAULT_QUERIES, **(queries or {})}
        self.timeout_s = timeout_s
        self.golden = golden or GoldenChecker(timeout_s=timeout_s)

    async def measure(self, target: AnalysisTarget) -> Measurement:
        async with self._session() as session:
            canary, stable = await asyncio.gather(
                self._cohort(session, target, target.canary_revision, [p.health() for p in target.canary]),
                self._cohort(session, target, target.stable_revision, [p.health() for p in target.stable]),
            )
        golden = None
        if target.golden is not None:
            reachable = [p for p in target.canary if p.node_ready]
            golden = await self.golden.check(target.golden, target.model_name, reachable,
                                             [p for p in target.stable if p.node_ready])
        deferred = tuple(DeferredPod(p.name, f"node {p.node or '?'} NotReady", canary=True)
                         for p in target.canary if not p.node_ready)
        return Measurement(canary=canary, stable=stable, golden=golden, deferred=deferred,
                           provider=self.name, seconds=target.interval_s)

    async def _cohort(self, session: aiohttp.ClientSession, target: AnalysisTarget, revision: str,
                      health: list[PodHealth]) -> CohortMetrics:
        names = list(self.queries)
        values = await asyncio.gather(*(self._query(session, render(self.queries[n], target, revision))
                                        for n in names))
        v = dict(zip(names, values, strict=True))
        # Readiness and restarts: what Kubernetes says, computed as the runtime provider does.
        return replace(
            aggregate([], health),
            pods=int(v["pods"] or 0),
            requests=v["requests"] or 0.0,
            request_rate=v["request_rate"],
            error_rate=v["error_rate"],
            p95_latency_ms=v["p95_latency_ms"],
            mean_latency_ms=v["mean_latency_ms"],
            memory_bytes=v["memory_bytes"],
        )

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))

    async def _query(self, session: aiohttp.ClientSession, promql: str) -> float | None:
        url = f"{self.address}/api/v1/query"
        try:
            async with session.get(url, params={"query": promql}, allow_redirects=False) as resp:
                status = resp.status
                raw = await resp.content.read(MAX_ANSWER_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as err:
            # The exception's class says what went wrong; its text may quote the server.
            raise PrometheusError(f"querying {self.address}: {type(err).__name__}") from err
        # Prometheus answers errors of the query with 400/422/503 and a JSON error body.
        if status not in (200, 400, 422, 503):
            raise PrometheusError(f"querying {self.address}: HTTP {status}")
        if len(raw) > MAX_ANSWER_BYTES:
            raise PrometheusError(f"querying {self.address}: HTTP {status}, an answer over "
                                  f"{MAX_ANSWER_BYTES} bytes")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        try:
            return parse_value(body)
        except PrometheusError as err:
            raise PrometheusError(f"querying {self.address}: HTTP {status}: {err} (query: {promql})") from err
