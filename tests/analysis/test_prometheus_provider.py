"""The prometheus provider against a real Prometheus scraping real `edgewise serve` pods.

The same judgement as the runtime provider, with every number coming from PromQL over the
labels the scrape configuration attaches (model, edgewise_class, edgewise_revision).
"""

from __future__ import annotations

import asyncio
import time
import urllib.request

import pytest
from analysis_support import LIMITS, MODEL_NAME, Fleet, PrometheusServer, target, traffic

from edgewise.analysis.prometheus import PrometheusError, PrometheusProvider
from edgewise.analysis.runtime import parse_metrics
from edgewise.core.analysis import Outcome, histogram_quantile, judge
from edgewise.devcluster.processes import free_port


def wait_scraped_after(prom: PrometheusServer, wall: float, timeout: float = 30) -> None:
    """Until every target has a sample scraped after `wall` (seconds since the epoch)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = prom.query('min(timestamp(up{job=~"good|slow"}))')
        if got and float(got[0]["value"][1]) > wall:
            return
        time.sleep(0.2)
    pytest.fail(f"prometheus scraped nothing after {wall} in {timeout}s")


def test_good_canary_passes_and_slow_canary_fails_through_promql(fleet: Fleet, prometheus: PrometheusServer):
    provider = PrometheusProvider(prometheus.url)

    start = time.time()
    wait_scraped_after(prometheus, start)  # the window opens on a sample taken before the traffic
    sent = traffic([*fleet.stable, fleet.good, fleet.slow], seconds=5)
    wait_scraped_after(prometheus, time.time())
    interval = time.time() - start

    good = asyncio.run(provider.measure(target("good", interval_s=interval)))
    v = judge(good, LIMITS)
    assert v.outcome is Outcome.PASS, v.summary()
    assert good.provider == "prometheus"
    assert (good.canary.pods, good.stable.pods) == (1, 2)
    # increase() extrapolates to the window's edges: close to, not exactly, what was sent.
    assert good.canary.requests == pytest.approx(sent["canary-good"], rel=0.35)
    assert good.stable.requests == pytest.approx(sent["stable-1"] + sent["stable-2"], rel=0.35)
    assert good.canary.error_rate == 0 and good.canary.request_rate and good.canary.request_rate > 5
    assert good.canary.p95_latency_ms and good.canary.mean_latency_ms and good.canary.memory_bytes

    slow = asyncio.run(provider.measure(target("slow", interval_s=interval)))
    v = judge(slow, LIMITS)
    assert v.outcome is Outcome.FAIL, v.summary()
    assert [c.name for c in v.checks if not c.ok] == ["latency-increase"]
    assert slow.canary.p95_latency_ms > 2 * slow.stable.p95_latency_ms
    assert v.reasons[0].startswith(f"p95 latency {slow.canary.p95_latency_ms:.1f} ms on canary vs ")


def test_p95_of_the_pure_core_matches_prometheus_histogram_quantile(fleet: Fleet, prometheus: PrometheusServer):
    """Same buckets, same answer: the runtime provider's p95 means what PromQL's does."""
    traffic([fleet.slow, fleet.good], count=30)
    wait_scraped_after(prometheus, time.time())  # no traffic now: the scrape and /metrics agree
    for pod, cls in ((fleet.slow, "slow"), (fleet.good, "good")):
        with urllib.request.urlopen(f"http://{pod.metrics_target}/metrics", timeout=5) as r:
            buckets = parse_metrics(r.read().decode(), MODEL_NAME).latency_buckets
        for q in (0.5, 0.95, 0.99):
            [got] = prometheus.query(
                f'histogram_quantile({q}, sum by (le) (edgewise_inference_request_duration_seconds_bucket'
                f'{{edgewise_class="{cls}", pod="{pod.name}"}}))')
            assert histogram_quantile(q, buckets) == pytest.approx(float(got["value"][1]), rel=1e-9)


def test_empty_cohort_is_inconclusive_and_broken_queries_raise(prometheus: PrometheusServer):
    provider = PrometheusProvider(prometheus.url)
    m = asyncio.run(provider.measure(target("no-such-class", interval_s=30)))
    assert (m.canary.pods, m.canary.requests, m.canary.p95_latency_ms, m.canary.error_rate) == (0, 0, None, None)
    v = judge(m, LIMITS)
    assert v.outcome is Outcome.INCONCLUSIVE and v.reasons == ("no canary pod to measure",)

    broken = PrometheusProvider(prometheus.url, queries={"pods": "count(up{"})
    with pytest.raises(PrometheusError, match="bad_data"):
        asyncio.run(broken.measure(target("good", interval_s=30)))

    nobody = PrometheusProvider(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(PrometheusError, match="querying"):
        asyncio.run(nobody.measure(target("good", interval_s=30)))
