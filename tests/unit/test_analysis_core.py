"""Canary analysis, the pure part: deltas, aggregation, p95, sampling and every verdict rule."""

from __future__ import annotations

import math

import pytest

from edgewise.api.model import Analysis, GoldenInputs
from edgewise.core.analysis import (
    CohortMetrics,
    DeferredPod,
    GoldenResult,
    Measurement,
    Outcome,
    OutputSimilarity,
    PodDelta,
    PodHealth,
    PodSample,
    Thresholds,
    aggregate,
    delta,
    histogram_quantile,
    judge,
    merge_histograms,
    sample,
)

INF = math.inf


def s(at: float = 0.0, **kw: object) -> PodSample:
    return PodSample(pod=str(kw.pop("pod", "p")), uid=str(kw.pop("uid", "u")), at=at, **kw)  # type: ignore[arg-type]


def d(pod: str = "p", seconds: float = 10.0, success: float = 100, failure: float = 0,
      duration_us: float | None = None, buckets: tuple = (), memory: float | None = None,
      ready: bool = True, restarts: int = 0) -> PodDelta:
    requests = success + failure
    return PodDelta(pod=pod, uid=pod, seconds=seconds, success=success, failure=failure,
                    inference_count=requests, exec_count=requests,
                    request_duration_us=requests * 1000 if duration_us is None else duration_us,
                    latency_buckets=buckets, restarts=restarts, ready=ready, memory_bytes=memory, reset=False)


# --- delta ------------------------------------------------------------------------------------


def test_delta_subtracts_every_counter_over_the_interval():
    prev = s(10.0, success=100, failure=2, inference_count=400, exec_count=100, request_duration_us=5000,
             latency_buckets=((0.001, 50), (0.01, 100), (INF, 102)), restarts=1, memory_bytes=1.0)
    now = s(70.0, success=160, failure=5, inference_count=640, exec_count=130, request_duration_us=8000,
            latency_buckets=((0.001, 60), (0.01, 150), (INF, 165)), restarts=1, memory_bytes=2.0, ready=False)
    got = delta(prev, now)
    assert (got.seconds, got.success, got.failure) == (60.0, 60, 3)
    assert (got.inference_count, got.exec_count) == (240, 30)
    assert got.request_duration_us == 3000
    assert got.latency_buckets == ((0.001, 10), (0.01, 50), (INF, 63))
    assert got.requests == 63
    assert (got.restarts, got.reset, got.ready, got.memory_bytes) == (0, False, False, 2.0)


def test_counter_going_down_is_a_reset_and_counts_from_zero():
    prev = s(0, success=1000, failure=10, request_duration_us=9e6, latency_buckets=((0.01, 900), (INF, 1000)))
    now = s(60, success=40, failure=1, request_duration_us=4e4, latency_buckets=((0.01, 30), (INF, 40)))
    got = delta(prev, now)
    assert got.reset
    assert (got.success, got.failure, got.request_duration_us) == (40, 1, 4e4)
    assert got.latency_buckets == ((0.01, 30), (INF, 40))


def test_restart_count_increase_is_a_reset_even_if_counters_grew_past_the_old_values():
    prev = s(0, success=10, restarts=0)
    now = s(60, success=50, restarts=1)  # restarted, then served 50 requests
    got = delta(prev, now)
    assert got.reset and got.success == 50 and got.restarts == 1


def test_new_process_start_time_is_a_reset():
    got = delta(s(0, success=10, start_time=100.0), s(60, success=25, start_time=130.0))
    assert got.reset and got.success == 25


def test_same_start_time_or_unknown_is_not_a_reset():
    assert not delta(s(0, success=10, start_time=100.0), s(60, success=25, start_time=100.0)).reset
    assert not delta(s(0, success=10), s(60, success=25, start_time=100.0)).reset


def test_restart_reported_late_with_the_same_process_is_not_counted_twice():
    # The new process was already read last time; Kubernetes only now reports the restart.
    got = delta(s(0, success=25, start_time=130.0, restarts=0), s(60, success=30, start_time=130.0, restarts=1))
    assert not got.reset and got.success == 5 and got.restarts == 1


def test_histogram_total_going_down_alone_is_a_reset():
    got = delta(s(0, success=5, latency_buckets=((0.01, 9), (INF, 9))),
                s(1, success=6, latency_buckets=((0.01, 2), (INF, 2))))
    assert got.reset and got.success == 6 and got.latency_buckets == ((0.01, 2), (INF, 2))


def test_delta_handles_bounds_missing_before_and_a_clock_that_did_not_advance():
    got = delta(s(5, latency_buckets=((INF, 3),)), s(5, latency_buckets=((0.01, 4), (INF, 7))))
    assert got.latency_buckets == ((0.01, 4), (INF, 4))
    assert got.seconds == 0.0
    assert delta(s(9), s(5)).seconds == 0.0


# --- histogram_quantile -----------------------------------------------------------------------


def test_quantile_interpolates_linearly_inside_the_bucket():
    # rank 0.95 * 20 = 19 lies in (0.1, 0.2], which holds ranks 10..20 → 0.1 + 0.1 * 9/10
    assert histogram_quantile(0.95, ((0.1, 10), (0.2, 20), (INF, 20))) == pytest.approx(0.19)


def test_quantile_lowest_bucket_starts_at_zero():
    assert histogram_quantile(0.5, ((1.0, 100), (INF, 100))) == pytest.approx(0.5)


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound():
    assert histogram_quantile(0.95, ((0.1, 10), (0.2, 50), (INF, 100))) == 0.2


def test_quantile_unknown_without_data_or_inf_bucket():
    assert histogram_quantile(0.95, ()) is None
    assert histogram_quantile(0.95, ((0.1, 0), (INF, 0))) is None
    assert histogram_quantile(0.95, ((0.1, 5), (0.2, 9))) is None
    assert histogram_quantile(0.95, ((INF, 9),)) is None


def test_quantile_repairs_non_monotonic_counts():
    # A racy scrape: 0.2 reads lower than 0.1; treated as 10 like Prometheus does.
    assert histogram_quantile(0.5, ((0.1, 10), (0.2, 8), (INF, 10))) == pytest.approx(0.05)


def test_quantile_non_positive_lowest_bound_is_returned_as_is():
    assert histogram_quantile(0.5, ((0.0, 10), (1.0, 10), (INF, 10))) == 0.0


def test_quantile_in_an_empty_bucket_returns_its_upper_bound():
    assert histogram_quantile(0.0, ((0.1, 0), (0.2, 5), (INF, 5))) == 0.1


def test_merge_sums_common_bounds_only_and_skips_pods_without_histogram():
    a = ((0.1, 1), (0.2, 3), (INF, 4))
    b = ((0.1, 2), (0.25, 5), (INF, 6))
    assert merge_histograms([a, (), a]) == ((0.1, 2), (0.2, 6), (INF, 8))
    assert merge_histograms([a, b]) == ((0.1, 3), (INF, 10))
    assert merge_histograms([(), ()]) == ()


# --- aggregate --------------------------------------------------------------------------------


def test_aggregate_computes_rates_errors_latencies_and_memory():
    pods = [
        d("a", seconds=10, success=95, failure=5, duration_us=200_000,
          buckets=((0.001, 50), (0.01, 100), (INF, 100)), memory=100.0),
        d("b", seconds=20, success=100, failure=0, duration_us=100_000,
          buckets=((0.001, 100), (0.01, 100), (INF, 100)), memory=None),
    ]
    m = aggregate(pods)
    assert m.pods == 2 and m.requests == 200
    assert m.request_rate == pytest.approx(100 / 10 + 100 / 20)
    assert m.error_rate == pytest.approx(5 / 200)
    assert m.mean_latency_ms == pytest.approx(300_000 / 200 / 1000)
    # merged: 150 ≤ 1 ms, 200 ≤ 10 ms; rank 190 → 1 + 9 * 40/50 ms
    assert m.p95_latency_ms == pytest.approx(1 + 9 * 40 / 50)
    assert m.memory_bytes == 100.0
    assert m.ready_ratio == 1.0


def test_aggregate_without_traffic_knows_nothing_about_rates():
    m = aggregate([d(success=0, seconds=0)])
    assert (m.requests, m.request_rate, m.error_rate, m.p95_latency_ms, m.mean_latency_ms) == (0, None, None,
                                                                                                None, None)
    empty = aggregate([])
    assert empty.pods == 0 and empty.ready_ratio is None and empty.memory_bytes is None


def test_aggregate_takes_readiness_and_restarts_from_kubernetes_for_every_pod():
    health = [
        PodHealth("a", ready=True),
        PodHealth("b", ready=False, restarts=3, reason="CrashLoopBackOff"),
        PodHealth("c", ready=False, node_ready=False, restarts=1, reason="OOMKilled"),  # disconnected
        PodHealth("d", ready=True, reason="Completed"),  # a reason without a restart is noise
    ]
    m = aggregate([d("a")], health)
    assert m.ready_ratio == pytest.approx(2 / 3)
    assert m.restarts == 4
    assert m.restart_reasons == ("b: CrashLoopBackOff", "c: OOMKilled")


def test_aggregate_without_health_uses_the_measured_pods():
    m = aggregate([d("a", restarts=1), d("b", ready=False)])
    assert m.ready_ratio == 0.5 and m.restarts == 1
    assert aggregate([d("a")], [PodHealth("x", node_ready=False)]).ready_ratio is None


# --- sample -----------------------------------------------------------------------------------


PODS = [f"pod-{i}" for i in range(50)]


def test_sample_is_bounded_without_duplicates():
    for k in (0, 1, 7, 50, 80):
        got = sample(PODS, k, "seed")
        assert len(got) == min(k, len(PODS)) and len(set(got)) == len(got)
        assert set(got) <= set(PODS)
    assert sample(PODS, -3, "seed") == []
    assert sample([], 5, "seed") == []


def test_sample_is_deterministic_and_independent_of_input_order():
    assert sample(PODS, 10, "seed") == sample(list(reversed(PODS)), 10, "seed")


def test_sample_is_stable_when_the_cohort_changes():
    before = sample(PODS, 10, "seed")
    grown = sample([*PODS, "pod-new"], 10, "seed")
    assert len(set(before) - set(grown)) <= 1
    gone = before[0]
    shrunk = sample([p for p in PODS if p != gone], 10, "seed")
    assert set(before) - set(shrunk) == {gone}


def test_sample_spreads_by_seed_and_uses_the_key():
    assert sample(PODS, 5, "model-a/class-x") != sample(PODS, 5, "model-b/class-x")
    objs = [{"uid": p} for p in PODS]
    assert [o["uid"] for o in sample(objs, 5, "seed", key=lambda o: o["uid"])] == sample(PODS, 5, "seed")


# --- judge ------------------------------------------------------------------------------------


def cohort(**kw: object) -> CohortMetrics:
    base: dict[str, object] = dict(pods=3, requests=300, request_rate=10.0, error_rate=0.0,
                                   p95_latency_ms=9.1, mean_latency_ms=5.0, ready_ratio=1.0, restarts=0,
                                   memory_bytes=100 * 2**20)
    base.update(kw)
    return CohortMetrics(**base)  # type: ignore[arg-type]


def meas(canary: dict | None = None, stable: dict | None = None, **kw: object) -> Measurement:
    return Measurement(canary=cohort(**(canary or {})), stable=cohort(**(stable or {})), **kw)  # type: ignore[arg-type]


T = Thresholds(max_error_rate=0.01, max_p95_latency_ms=50, max_latency_increase_percent=20,
               max_memory_increase_percent=30, min_ready_ratio=1.0, max_restarts=0, min_requests=20)


def test_healthy_canary_passes_with_every_check_listed():
    v = judge(meas(), T)
    assert v.outcome is Outcome.PASS and v.passed and not v.failed and v.reasons == ()
    assert {c.name for c in v.checks} == {"restarts", "ready", "error-rate", "latency", "latency-increase",
                                          "memory-increase"}
    assert all(c.ok for c in v.checks)
    assert v.summary().startswith("pass: 0 container restart(s)")


def test_error_rate_fails_with_numbers():
    v = judge(meas(canary={"error_rate": 0.05}, stable={"error_rate": 0.001}), T)
    assert v.failed
    assert v.reasons == ("error rate 5.00% on canary vs 0.10% on stable (limit 1.00%)",)


def test_relative_latency_fails_with_the_documented_sentence():
    v = judge(meas(canary={"p95_latency_ms": 48.2}, stable={"p95_latency_ms": 9.1}), T)
    assert v.failed
    assert v.reasons == ("p95 latency 48.2 ms on canary vs 9.1 ms on stable (+430%, limit +20%)",)


def test_absolute_latency_fails_even_when_stable_is_as_slow():
    v = judge(meas(canary={"p95_latency_ms": 80.0}, stable={"p95_latency_ms": 79.0}), T)
    assert v.failed and v.reasons == ("p95 latency 80.0 ms on canary (limit 50 ms)",)


def test_small_absolute_latency_increase_is_noise():
    v = judge(meas(canary={"p95_latency_ms": 0.9}, stable={"p95_latency_ms": 0.5}), T)
    assert v.passed
    assert "(+80%, limit +20%)" in next(c.message for c in v.checks if c.name == "latency-increase")
    v = judge(meas(canary={"p95_latency_ms": 2.0}, stable={"p95_latency_ms": 0.5}), T)
    assert v.failed


def test_latency_is_not_compared_with_an_idle_stable_cohort():
    v = judge(meas(canary={"p95_latency_ms": 40.0}, stable={"requests": 3, "p95_latency_ms": 1.0}), T)
    assert v.passed
    note = next(c for c in v.checks if c.name == "latency-increase")
    assert note.ok and "not compared with stable: 3 request(s) on 3 stable pod(s)" in note.message
    # and the error-rate sentence leaves the stable number out
    error_rate = next(c.message for c in v.checks if c.name == "error-rate")
    assert error_rate == "error rate 0.00% on canary (limit 1.00%)"


def test_mean_latency_is_the_fallback_without_histogram():
    v = judge(meas(canary={"p95_latency_ms": None, "mean_latency_ms": 30.0},
                   stable={"p95_latency_ms": None, "mean_latency_ms": 10.0}), T)
    assert v.failed
    assert v.reasons == ("mean latency 30.0 ms on canary vs 10.0 ms on stable (+200%, limit +20%)",)


def test_memory_increase_fails():
    v = judge(meas(canary={"memory_bytes": 200 * 2**20}), T)
    assert v.reasons == ("memory 200 MiB on canary vs 100 MiB on stable (+100%, limit +30%)",)


def test_restarts_fail_with_reasons_even_without_traffic():
    v = judge(meas(canary={"restarts": 2, "restart_reasons": ("p-1: OOMKilled",), "requests": 0,
                           "error_rate": None}), T)
    assert v.failed
    assert v.reasons == ("2 container restart(s) on canary pods (p-1: OOMKilled) (limit 0)",)


def test_ready_ratio_fails_even_when_every_pod_is_deferred():
    m = Measurement(canary=CohortMetrics(pods=0, ready_ratio=0.5), stable=cohort(),
                    deferred=(DeferredPod("c-1", "no answer: timed out"),))
    v = judge(m, T)
    assert v.failed and v.reasons == ("ready ratio 50.00% on canary (minimum 100.00%)",)


def test_an_unready_canary_says_why_its_pods_are_not_ready():
    """A fetch that refused the artifact leaves its pod unready: the verdict carries the fetch's own words."""
    why = "c-1: init container fetch failed: fetch failed: the attestation is signed by key e9e2, not trusted"
    m = Measurement(canary=CohortMetrics(pods=0, ready_ratio=0.0, restart_reasons=(why,)), stable=cohort())
    assert judge(m, T).reasons == (f"ready ratio 0.00% on canary ({why}) (minimum 100.00%)",)


def test_several_failures_are_all_reported():
    v = judge(meas(canary={"error_rate": 0.2, "p95_latency_ms": 60.0}), T)
    assert [c.name for c in v.checks if not c.ok] == ["error-rate", "latency", "latency-increase"]
    assert len(v.reasons) == 3 and v.summary().startswith("fail: error rate 20.00%")


def test_golden_mismatch_fails_even_without_traffic():
    golden = GoldenResult(reference="stable pod s-1", samples=4,
                          outputs=(OutputSimilarity("logits", 0.4213), OutputSimilarity("probs", 0.9999)))
    v = judge(meas(canary={"requests": 0, "error_rate": None}, golden=golden), T)
    assert v.failed
    assert v.reasons == ("golden output 'logits': cosine 0.4213 on canary vs stable pod s-1 over 4 sample(s) "
                         "(minimum 0.99)",)
    assert [c.name for c in v.checks if c.ok and c.name.startswith("golden")] == ["golden:probs"]


def test_golden_error_of_the_canary_fails_but_an_unreachable_reference_does_not():
    bad = GoldenResult(reference="stable pod s-1", error="input 'x': wrong shape (status 400)",
                       canary_error=True)
    v = judge(meas(golden=bad), T)
    assert v.reasons == ("golden inputs: canary answered with an error: input 'x': wrong shape (status 400)",)
    unknown = GoldenResult(reference="stable pod", error="no stable pod answered: s-1: timed out")
    assert judge(meas(golden=unknown), T).passed


def test_golden_pass_passes():
    ok = GoldenResult(reference="stored expected outputs", samples=2, outputs=(OutputSimilarity("y", 0.995),))
    v = judge(meas(golden=ok), T)
    assert v.passed and any(c.name == "golden:y" and c.ok for c in v.checks)


def test_first_reading_after_a_restart_is_inconclusive():
    m = Measurement(canary=CohortMetrics(ready_ratio=1.0), stable=CohortMetrics(), baselined=("c-1", "c-2"))
    v = judge(m, T)
    assert v.outcome is Outcome.INCONCLUSIVE
    assert v.reasons == ("first reading of 2 canary pod(s) (c-1, c-2): baseline taken, "
                         "compared next interval",)


def test_every_canary_pod_deferred_is_inconclusive():
    deferred = tuple(DeferredPod(f"c-{i}", "node n NotReady") for i in range(5)) + (
        DeferredPod("s-1", "no answer", canary=False),)
    v = judge(Measurement(canary=CohortMetrics(), stable=cohort(), deferred=deferred), T)
    assert v.outcome is Outcome.INCONCLUSIVE
    assert v.reasons == ("5 canary pod(s) deferred (c-0: node n NotReady, c-1: node n NotReady, "
                         "c-2: node n NotReady and 2 more)",)


def test_no_canary_pod_at_all_is_inconclusive():
    v = judge(Measurement(canary=CohortMetrics(), stable=cohort()), T)
    assert v.outcome is Outcome.INCONCLUSIVE and v.reasons == ("no canary pod to measure",)


def test_too_little_traffic_is_inconclusive_not_a_pass():
    v = judge(meas(canary={"requests": 7, "error_rate": 1.0}), T)
    assert v.outcome is Outcome.INCONCLUSIVE
    assert v.reasons == ("7 request(s) on canary in the interval (at least 20 needed for a verdict)",)
    assert v.summary() == "inconclusive: " + v.reasons[0]


def test_disabled_checks_are_not_applied():
    off = Thresholds(max_error_rate=None, max_p95_latency_ms=None, max_latency_increase_percent=None,
                     max_memory_increase_percent=None, min_ready_ratio=None, max_restarts=None)
    v = judge(meas(canary={"error_rate": 0.9, "p95_latency_ms": 900.0, "ready_ratio": 0.1, "restarts": 9,
                           "memory_bytes": 9e9}), off)
    assert v.passed and v.checks == ()


# --- thresholds from the API ------------------------------------------------------------------


def test_thresholds_from_spec_default_the_absolute_p95_to_the_class_slo():
    t = Thresholds.from_spec(Analysis(), slo_p95_ms=10)
    assert (t.max_error_rate, t.max_p95_latency_ms, t.max_latency_increase_percent) == (0.01, 10, 20)
    assert (t.min_ready_ratio, t.max_restarts, t.max_memory_increase_percent) == (1.0, 0, None)
    explicit = Analysis(max_p95_latency_ms=25, golden_inputs=GoldenInputs(uri="oci://r/g@sha256:" + "a" * 64,
                                                                          min_cosine=0.95))
    t = Thresholds.from_spec(explicit, slo_p95_ms=10, min_requests=5)
    assert (t.max_p95_latency_ms, t.min_golden_cosine, t.min_requests) == (25, 0.95, 5)
