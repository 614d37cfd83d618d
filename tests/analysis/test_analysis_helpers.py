"""The pure helpers of the providers: what they parse, render and compare (no servers)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgewise.analysis import golden
from edgewise.analysis.prometheus import (
    DEFAULT_QUERIES,
    PrometheusError,
    PrometheusProvider,
    parse_value,
    promql_duration,
    render,
)
from edgewise.analysis.provider import AnalysisTarget, PodEndpoint
from edgewise.analysis.runtime import parse_metrics, stats_counters

EXPOSITION = """\
# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="m",version="1"} 12
# HELP edgewise_inference_request_duration_seconds Latency
# TYPE edgewise_inference_request_duration_seconds histogram
edgewise_inference_request_duration_seconds_bucket{le="0.001",model="m",version="1"} 3.0
edgewise_inference_request_duration_seconds_bucket{le="0.01",model="m",version="1"} 10.0
edgewise_inference_request_duration_seconds_bucket{le="+Inf",model="m",version="1"} 12.0
edgewise_inference_request_duration_seconds_bucket{le="0.001",model="m",version="2"} 1.0
edgewise_inference_request_duration_seconds_bucket{le="0.01",model="m",version="2"} 1.0
edgewise_inference_request_duration_seconds_bucket{le="+Inf",model="m",version="2"} 1.0
edgewise_inference_request_duration_seconds_bucket{le="0.001",model="other",version="1"} 500.0
edgewise_inference_request_duration_seconds_bucket{le="+Inf",model="other",version="1"} 500.0
edgewise_inference_request_duration_seconds_count{model="m",version="1"} 12.0
edgewise_inference_request_duration_seconds_sum{model="m",version="1"} 0.05
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.048576e+08
# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1.7e+09
"""


def test_parse_metrics_sums_the_models_versions_and_reads_memory_and_start():
    got = parse_metrics(EXPOSITION, "m")
    assert got.latency_buckets == ((0.001, 4.0), (0.01, 11.0), (math.inf, 13.0))
    assert got.memory_bytes == 104857600.0 and got.start_time == 1.7e9


def test_parse_metrics_of_a_triton_pod_without_histogram_or_process_metrics():
    got = parse_metrics('nv_inference_request_success{model="m",version="1"} 3\n', "m")
    assert (got.latency_buckets, got.memory_bytes, got.start_time) == ((), None, None)


def test_stats_counters_read_tritons_statistics_json():
    entry = {"name": "m", "version": "1", "inference_count": 40, "execution_count": 10,
             "inference_stats": {"success": {"count": 9, "ns": 9_000_000}, "fail": {"count": 1, "ns": 500_000}}}
    stats = {"model_stats": [entry, {**entry, "version": "2"}, {**entry, "name": "other"}]}
    assert stats_counters(stats, "m") == {"success": 18, "failure": 2, "inference_count": 80, "exec_count": 20,
                                          "request_duration_us": 19_000}
    with pytest.raises(LookupError):
        stats_counters({"model_stats": []}, "m")


def test_endpoint_urls_bracket_ipv6():
    assert PodEndpoint("p", "u", "10.1.2.3").http_url == "10.1.2.3:8000"
    assert PodEndpoint("p", "u", "fd00::5", metrics_port=9).metrics_url == "http://[fd00::5]:9/metrics"


# --- prometheus templates ---------------------------------------------------------------------


def t(**kw: object) -> AnalysisTarget:
    base: dict[str, object] = dict(model="defect", class_name="jetson-orin", canary_revision="3",
                                   stable_revision="2", interval_s=60, canary=(), stable=())
    base.update(kw)
    return AnalysisTarget(**base)  # type: ignore[arg-type]


def test_render_fills_every_variable_and_escapes_label_values():
    q = render(DEFAULT_QUERIES["p95_latency_ms"], t(), "3")
    assert q == ('histogram_quantile(0.95, sum by (le) (rate(edgewise_inference_request_duration_seconds_bucket'
                 '{model="defect", edgewise_class="jetson-orin", edgewise_revision="3"}[60s]))) * 1000')
    evil = render('x{model="$model", namespace="$namespace"}[$interval]', t(model='a"b\\c', namespace="ns",
                                                                            interval_s=0.2), "1")
    assert evil == 'x{model="a\\"b\\\\c", namespace="ns"}[1s]'
    assert "$" not in "".join(render(q, t(), "2") for q in DEFAULT_QUERIES.values())
    with pytest.raises(KeyError):
        render("up{x=\"$typo\"}", t(), "1")


def test_promql_duration_rounds_up_to_whole_seconds():
    assert [promql_duration(s) for s in (0, 0.5, 1, 59.1, 600)] == ["1s", "1s", "1s", "60s", "600s"]


def test_overrides_replace_known_templates_only():
    p = PrometheusProvider("http://prom:9090/", queries={"pods": "count(kube_pod_info)"})
    assert p.queries["pods"] == "count(kube_pod_info)" and p.address == "http://prom:9090"
    assert p.queries["error_rate"] == DEFAULT_QUERIES["error_rate"]
    with pytest.raises(ValueError, match="unknown query names"):
        PrometheusProvider("http://prom:9090", queries={"p99": "x"})


def test_parse_value_reads_vectors_and_scalars_and_rejects_errors():
    assert parse_value({"status": "success", "data": {"resultType": "vector",
                                                      "result": [{"metric": {}, "value": [1, "2.5"]}]}}) == 2.5
    assert parse_value({"status": "success", "data": {"resultType": "vector", "result": []}}) is None
    assert parse_value({"status": "success", "data": {"resultType": "scalar", "result": [1, "NaN"]}}) is None
    assert parse_value({"status": "success", "data": {"resultType": "scalar", "result": [1, "+Inf"]}}) is None
    with pytest.raises(PrometheusError, match=r"refused the query \(bad_data\)") as refused:
        parse_value({"status": "error", "errorType": "bad_data", "error": "parse error"})
    assert "parse error" not in str(refused.value)  # the server's words are never repeated
    with pytest.raises(PrometheusError, match="matrix"):
        parse_value({"status": "success", "data": {"resultType": "matrix", "result": []}})


# --- golden -----------------------------------------------------------------------------------


def test_cosine_is_per_sample_so_one_bad_sample_shows():
    ref = np.ones((100, 4), dtype=np.float32)
    actual = ref.copy()
    actual[37] = -1
    assert golden.cosine_per_sample(ref, ref) == pytest.approx(1.0)
    assert golden.cosine_per_sample(actual, ref) == pytest.approx(-1.0)
    assert golden.cosine_per_sample(np.zeros((2, 3)), np.zeros((2, 3))) == 1.0
    assert golden.cosine_per_sample(np.zeros((2, 3)), np.ones((2, 3))) == 0.0
    assert golden.cosine_per_sample(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == 0.0
    with pytest.raises(ValueError, match="differs from reference"):
        golden.cosine_per_sample(np.ones((2, 3)), np.ones((3, 2)))


def test_golden_file_splits_inputs_and_expected_outputs(tmp_path):
    np.savez(tmp_path / "g.npz", x=np.zeros((3, 4), np.float32), expected__y=np.ones((3, 2), np.float32))
    gs = golden.load(tmp_path / "g.npz")
    assert list(gs.inputs) == ["x"] and list(gs.expected) == ["y"] and gs.samples == 3
    np.savez(tmp_path / "only.npz", expected__y=np.ones(2))
    with pytest.raises(ValueError, match="no input arrays"):
        golden.load(tmp_path / "only.npz")
