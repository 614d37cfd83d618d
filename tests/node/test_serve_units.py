"""The pure parts of `edgewise serve`: layouts, specs, codecs, validation, statistics, batching.

Protocol compatibility is checked against tritonclient's own request builder and
response parser, and Triton's own protobuf messages, not against copies of them.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import serve_models_support
import tritonclient.http as httpclient
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2

from edgewise.node.serve import codec, config, dtypes, http_codec, metrics, validate
from edgewise.node.serve.batcher import INLINE_MAX_S, Batcher
from edgewise.node.serve.errors import InferError, Status
from edgewise.node.serve.http_server import HttpError, decompress
from edgewise.node.serve.model import (
    ModelSpec,
    ServedTensor,
    find_model_file,
    golden_inputs,
    make_spec,
    served_tensor,
)
from edgewise.node.serve.onnxruntime_model import OnnxModel
from edgewise.node.serve.service import InferenceService, Settings
from edgewise.node.serve.stats import ExecutionTimes, ModelStats

FP32 = dtypes.BY_TRITON["FP32"]
MLP = ModelSpec("mlp", "1", (ServedTensor("x", FP32, (-1, 4)),), (ServedTensor("y", FP32, (-1, 3)),), 8)


# --- model directory and spec ---------------------------------------------------------------------

def test_plain_directory_is_version_1(tmp_path: Path) -> None:
    serve_models_support.mlp(tmp_path / "model.onnx")
    assert find_model_file(tmp_path) == (tmp_path / "model.onnx", "1")


def test_triton_layout_serves_the_highest_numeric_version(tmp_path: Path) -> None:
    for v in ("2", "10", "9"):
        serve_models_support.mlp(tmp_path / v / "model.onnx")
    (tmp_path / "11").mkdir()  # no model.onnx inside: not a version
    (tmp_path / "latest").mkdir()
    assert find_model_file(tmp_path) == (tmp_path / "10" / "model.onnx", "10")


def test_missing_model_names_both_layouts(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"<version>/model.onnx"):
        find_model_file(tmp_path)


def test_symbolic_dims_become_dynamic() -> None:
    t = served_tensor("ids", "tensor(int64)", ["batch", None, 384])
    assert (t.datatype, t.shape) == ("INT64", (-1, -1, 384))
    with pytest.raises(ValueError, match="unsupported ONNX tensor type 'tensor\\(bfloat16\\)'"):
        served_tensor("b", "tensor(bfloat16)", [1])


def test_batching_needs_dynamic_dim0_everywhere() -> None:
    fixed = (ServedTensor("x", FP32, (1, 3)),)
    assert make_spec("m", "1", fixed, fixed, 8).max_batch_size == 0
    assert make_spec("m", "1", MLP.inputs, MLP.outputs, 8).max_batch_size == 8


def test_golden_inputs_follow_the_signature(tmp_path: Path) -> None:
    model = OnnxModel(serve_models_support.wire_types(tmp_path / "model.onnx"))
    spec = make_spec("types", "1", model.inputs, model.outputs, 0)
    feed = golden_inputs(spec, dynamic_dim=3)
    assert {k: (v.shape, v.dtype.str) for k, v in feed.items()} == {
        "half": ((1, 2), "<f2"), "small": ((1, 2), "|i1"), "big": ((1, 2), "<i8"), "flag": ((1, 2), "|b1"),
        "text": ((1, 2), "|O"),
    }
    assert model.warm_up(spec)["text"].shape == (1, 2)  # dims of 1 were enough
    out = model.run(feed)
    assert out["text_out"].tolist() == [[b"edgewise"] * 2]  # str inside ORT, bytes on the wire


def test_warm_up_falls_back_to_larger_dims_for_strided_models(tmp_path: Path) -> None:
    """A Reshape to 32 elements rejects dims of 1 but takes the ladder's 32."""
    model = OnnxModel(serve_models_support.strided(tmp_path / "model.onnx"))
    assert model.warm_up(make_spec("s", "1", model.inputs, model.outputs, 0))["x"].shape == (1, 32)


# --- validation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("declared, message", [
    ([("x", "FP32", [1, 4]), ("z", "FP32", [1])], "unexpected inference input 'z' for model 'mlp'; expected "
                                                  "inputs: 'x' (FP32 [-1,4])"),
    ([], "expected 1 inputs but got 0 inputs for model 'mlp'; missing: 'x' (FP32 [-1,4])"),
    ([("x", "INT32", [1, 4])], "inference input 'x' data-type is 'INT32', but model 'mlp' expects 'FP32'"),
    ([("x", "FP32", [1, 4, 1])], "Expected [-1,4], got [1,4,1]"),
    ([("x", "FP32", [-1, 4])], "Expected [-1,4], got [-1,4]"),
    ([("x", "FP32", [0, 4])], "batch-size must be between 1 and 8 for 'mlp', got 0"),
    ([("x", "FP32", [1, 4]), ("x", "FP32", [1, 4])], "input 'x' appears more than once"),
])
def test_validation_messages_name_what_was_expected(declared: list, message: str) -> None:
    with pytest.raises(InferError) as err:
        validate.check_inputs(MLP, declared)
    assert err.value.status is Status.INVALID_ARGUMENT
    assert message in err.value.message


def test_validation_returns_the_batch_size() -> None:
    assert validate.check_inputs(MLP, [("x", "FP32", [5, 4])]) == 5
    unbatched = ModelSpec("m", "1", MLP.inputs, MLP.outputs, 0)
    assert validate.check_inputs(unbatched, [("x", "FP32", [20, 4])]) == 1


def test_unknown_model_and_version_are_not_found() -> None:
    for name, version in (("other", ""), ("mlp", "2")):
        with pytest.raises(InferError) as err:
            validate.check_model(MLP, name, version)
        assert err.value.status is Status.NOT_FOUND
    validate.check_model(MLP, "mlp", "1")


# --- tensor codecs --------------------------------------------------------------------------------

def test_bytes_round_trip_and_truncation() -> None:
    arr = np.array([b"", b"a", "ü".encode()], dtype=object)
    raw = codec.encode_bytes(arr)
    assert raw == b"\0\0\0\0" + b"\1\0\0\0a" + b"\2\0\0\0\xc3\xbc"
    assert codec.decode_bytes("t", raw, 3).tolist() == arr.tolist()
    with pytest.raises(InferError, match="overruns the buffer"):
        codec.decode_bytes("t", raw[:-1], 3)
    with pytest.raises(InferError, match="has 3 BYTES elements, expected 4"):
        codec.decode_bytes("t", raw, 4)


def test_raw_decode_is_a_view_and_checks_size() -> None:
    body = np.arange(4, dtype=np.float32).tobytes()
    arr = codec.decode_raw("x", FP32, [1, 4], body)
    assert arr.tolist() == [[0, 1, 2, 3]] and not arr.flags.owndata
    with pytest.raises(InferError, match="got 16 bytes of FP32 data, expected 20 for shape \\[1, 5\\]"):
        codec.decode_raw("x", FP32, [1, 5], body)


def test_json_decode_accepts_nested_lists_and_checks_types() -> None:
    assert codec.decode_json("x", FP32, [2, 2], [[1, 2], [3, 4]]).tolist() == [[1, 2], [3, 4]]
    assert codec.decode_json("b", dtypes.BY_TRITON["BOOL"], [2], [True, False]).tolist() == [True, False]
    with pytest.raises(InferError, match="must be true/false"):
        codec.decode_json("b", dtypes.BY_TRITON["BOOL"], [1], [1])
    with pytest.raises(InferError, match="must be strings"):
        codec.decode_json("s", dtypes.BY_TRITON["BYTES"], [1], [3])
    with pytest.raises(InferError, match="INT8: its JSON data must be integers from -128 to 127, got 300"):
        codec.decode_json("i", dtypes.BY_TRITON["INT8"], [1], [300])


# --- HTTP bodies, checked with tritonclient's own encoder and parser ------------------------------

def test_http_request_from_tritonclient_decodes() -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    i = httpclient.InferInput("x", [2, 4], "FP32").set_data_from_numpy(x)
    out = httpclient.InferRequestedOutput("y", binary_data=False)
    body, header_length = httpclient.InferenceServerClient.generate_request_body([i], [out], request_id="r1")
    decoded = http_codec.decode_request(MLP, body, header_length)
    assert decoded.batch == 2 and decoded.outputs == ["y"]
    np.testing.assert_array_equal(decoded.inputs["x"], x)
    assert decoded.wire == http_codec.HttpOptions("r1", ["y"], {"y": False})


def test_http_response_parses_with_tritonclient() -> None:
    x = np.zeros((2, 4), np.float32)
    i = httpclient.InferInput("x", [2, 4], "FP32").set_data_from_numpy(x)
    body, header_length = httpclient.InferenceServerClient.generate_request_body([i], request_id="r2")
    decoded = http_codec.decode_request(MLP, body, header_length)  # no outputs: all, binary
    y = np.arange(6, dtype=np.float32).reshape(2, 3)
    raw, length = http_codec.encode_response(MLP, decoded, {"y": y})
    assert length is not None
    result = httpclient.InferenceServerClient.parse_response_body(raw, header_length=length)
    np.testing.assert_array_equal(result.as_numpy("y"), y)
    assert result.get_response()["id"] == "r2"


# --- statistics, config and metrics against Triton's own messages ---------------------------------

def test_statistics_parse_into_tritons_message() -> None:
    stats = ModelStats()
    times = ExecutionTimes(batch_size=3, compute_input_ns=10, compute_infer_ns=300, compute_output_ns=20)
    stats.record_execution(times)
    for _ in range(3):
        stats.record_request_compute(queue_ns=50, times=times)
        stats.record_request(True, 1_000_000)
    stats.record_request(False, 5)
    doc = {"model_stats": [stats.to_triton("mlp", "1")]}
    msg = json_format.ParseDict(doc, service_pb2.ModelStatisticsResponse())  # unknown field: ParseError
    (m,) = msg.model_stats
    assert (m.inference_count, m.execution_count) == (3, 1)
    assert (m.inference_stats.success.count, m.inference_stats.fail.count) == (3, 1)
    assert m.inference_stats.compute_infer.ns == 900  # each request is charged its batch's compute
    assert [(b.batch_size, b.compute_infer.ns) for b in m.batch_stats] == [(3, 300)]


@pytest.mark.parametrize("max_batch_size", [0, 8])
def test_model_config_parses_into_tritons_model_config(max_batch_size: int) -> None:
    spec = ModelSpec("mlp", "1", MLP.inputs, MLP.outputs, max_batch_size)
    doc = config.model_config(spec, max_queue_delay_us=500, instances=2, threads=4)
    msg = json_format.ParseDict(doc, model_config_pb2.ModelConfig())  # unknown field: ParseError
    assert msg.max_batch_size == max_batch_size
    assert list(msg.input[0].dims) == ([4] if max_batch_size else [-1, 4])
    assert msg.HasField("dynamic_batching") == bool(max_batch_size)
    assert msg.instance_group[0].count == 2
    assert msg.parameters["intra_op_thread_count"].string_value == "4"


def test_metrics_text_uses_tritons_names_and_escapes_labels() -> None:
    stats = ModelStats()
    stats.record_request(True, 2_000)
    text = metrics.triton_text('we"ird', "1", stats)
    assert '# TYPE nv_inference_request_success counter\nnv_inference_request_success{model="we\\"ird",' \
           'version="1"} 1\n' in text
    assert "_total" not in text


# --- service and batcher --------------------------------------------------------------------------

def test_service_is_not_ready_before_warm_up() -> None:
    service = InferenceService(Settings("mlp"))
    assert not service.ready and not service.model_ready("mlp")
    with pytest.raises(InferError) as err:
        service.model("mlp")
    assert err.value.status is Status.UNAVAILABLE and "warming up" in err.value.message
    with pytest.raises(InferError) as err:
        service.model("other")
    assert err.value.status is Status.NOT_FOUND


class FakeModel:
    """Doubles x; records the batch sizes it ran; fails on any row holding -1."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.on_loop: list[bool] = []  # per execution: did it run on the event loop's thread?
        self.seconds = 0.0  # how long each execution takes

    def run(self, feed: Mapping[str, np.ndarray], outputs: list[str] | None) -> dict[str, np.ndarray]:
        x = feed["x"]
        self.batches.append(x.shape[0])
        self.on_loop.append(threading.current_thread() is threading.main_thread())
        time.sleep(self.seconds)
        if (x == -1).any():
            raise InferError(Status.INVALID_ARGUMENT, "poison")
        return {"y": x * 2}


def _submit(batcher: Batcher, x: np.ndarray, client: object = None) -> asyncio.Future[Any]:
    """The batcher's answer for one request, as a future."""
    answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def reply(result: Any) -> None:
        if isinstance(result, BaseException):
            answer.set_exception(result)
        else:
            answer.set_result(result)

    batcher.submit({"x": x}, x.shape[0], None, reply, client)
    return answer


def _run_batcher(rows: list[np.ndarray], max_batch: int, delay_us: int) -> tuple[list, FakeModel, ModelStats]:
    model, stats = FakeModel(), ModelStats()

    async def main() -> list:
        batcher = Batcher(model.run, stats, max_batch, delay_us)
        batcher.start()
        try:
            return await asyncio.gather(*(_submit(batcher, r) for r in rows),
                                        return_exceptions=True)
        finally:
            await batcher.close()

    return asyncio.run(main()), model, stats


def test_batcher_merges_up_to_max_batch_and_splits_results() -> None:
    rows = [np.full((1, 2), k, np.float32) for k in range(5)]
    results, model, stats = _run_batcher(rows, max_batch=4, delay_us=100_000)
    assert model.batches == [4, 1]  # the full batch left at once; the last one after the delay
    assert [r["y"].tolist() for r in results] == [[[2 * k, 2 * k]] for k in range(5)]
    assert (stats.inference_count, stats.execution_count) == (5, 2)


def test_batcher_keeps_incompatible_shapes_apart() -> None:
    rows = [np.ones((1, 2), np.float32), np.ones((1, 3), np.float32), np.ones((1, 2), np.float32)]
    results, model, _ = _run_batcher(rows, max_batch=8, delay_us=50_000)
    assert model.batches == [2, 1]
    assert [r["y"].shape for r in results] == [(1, 2), (1, 3), (1, 2)]


def test_one_bad_request_does_not_fail_its_batch() -> None:
    rows = [np.ones((1, 2), np.float32), np.full((1, 2), -1, np.float32), np.ones((1, 2), np.float32)]
    results, model, stats = _run_batcher(rows, max_batch=3, delay_us=10_000_000)
    assert isinstance(results[1], InferError)
    assert results[0]["y"].tolist() == [[2, 2]] and results[2]["y"].tolist() == [[2, 2]]
    assert model.batches == [3, 1, 1, 1]  # merged run failed; each request retried alone
    assert stats.execution_count == 2


def test_no_batching_runs_each_request_alone() -> None:
    rows = [np.ones((2, 2), np.float32) for _ in range(3)]
    _, model, stats = _run_batcher(rows, max_batch=0, delay_us=0)
    assert model.batches == [2, 2, 2] and stats.inference_count == 6


def test_close_flushes_a_queue_held_open_by_the_delay() -> None:
    model, stats = FakeModel(), ModelStats()

    async def main() -> object:
        batcher = Batcher(model.run, stats, 8, 3_600_000_000)  # an hour: only close() can release it
        batcher.start()
        pending = _submit(batcher, np.ones((1, 2), np.float32))
        await asyncio.sleep(0.05)
        assert stats.pending == 1 and not pending.done()
        await asyncio.wait_for(batcher.close(), 120)  # hang guard, not a speed check
        result = await pending
        with pytest.raises(InferError) as err:
            _submit(batcher, np.ones((1, 2), np.float32))
        assert err.value.status is Status.UNAVAILABLE
        return result

    assert asyncio.run(main())["y"].tolist() == [[2, 2]]  # type: ignore[index]
    assert stats.pending == 0


def _sequential_then_overlapping(model: FakeModel, instances: int = 1) -> None:
    """Four requests one after another from one client, then four clients at once."""
    one = np.ones((1, 2), np.float32)

    async def main() -> None:
        batcher = Batcher(model.run, ModelStats(), 8, 0, instances)
        batcher.start()
        try:
            for _ in range(4):
                await _submit(batcher, one, client="a")
            await asyncio.gather(*(_submit(batcher, one, client=c) for c in "abcd"))
        finally:
            await batcher.close()

    asyncio.run(main())


def test_one_request_at_a_time_runs_on_the_event_loop() -> None:
    model = FakeModel()
    _sequential_then_overlapping(model)
    # The first execution goes to the pool (its duration is unknown), the next three on the
    # loop; the four overlapping ones: the first on the loop (the server was idle), the
    # three that waited behind it merged into one batch on the pool.
    assert model.on_loop == [False, True, True, True, True, False]
    assert model.batches == [1, 1, 1, 1, 1, 3]


def test_slow_models_and_several_instances_stay_off_the_loop() -> None:
    slow = FakeModel()
    slow.seconds = INLINE_MAX_S * 2
    _sequential_then_overlapping(slow)
    assert not any(slow.on_loop)
    two = FakeModel()
    _sequential_then_overlapping(two, instances=2)
    assert not any(two.on_loop)


def test_after_requests_overlap_the_loop_is_left_alone_for_a_while() -> None:
    model = FakeModel()
    one = np.ones((1, 2), np.float32)

    async def main() -> None:
        batcher = Batcher(model.run, ModelStats(), 8, 0)
        batcher.start()
        try:
            await _submit(batcher, one, client="a")  # measures the model: pool
            await asyncio.gather(_submit(batcher, one, client="a"), _submit(batcher, one, client="b"))
            await _submit(batcher, one, client="a")  # idle again, but load was just seen
        finally:
            await batcher.close()

    asyncio.run(main())
    assert model.on_loop == [False, True, False, False]


def test_request_bodies_inflate_from_gzip_zlib_and_raw_deflate_within_the_limit() -> None:
    data = b'{"inputs": []}' * 10
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decompress(gzip.compress(data), "gzip", 1000) == data
    assert decompress(zlib.compress(data), "deflate", 1000) == data  # what tritonclient sends
    assert decompress(raw.compress(data) + raw.flush(), "Deflate ", 1000) == data
    with pytest.raises(HttpError) as err:
        decompress(b"not gzip", "gzip", 1000)
    assert err.value.status == 400 and "does not inflate" in err.value.message
    with pytest.raises(HttpError) as err:
        decompress(gzip.compress(data), "gzip", len(data) - 1)
    assert err.value.status == 413


def test_a_large_json_body_is_parsed_without_garbage_collections_and_the_collector_comes_back() -> None:
    # The collector's passes over millions of fresh objects cost most of a large parse, with the
    # interpreter lock held, so health probes waited seconds (2.4 s for 10 MiB on a loaded machine).
    import gc

    from edgewise.node.serve import http_codec

    rows = (2 << 20) // 6  # a 2 MiB body, over NO_GC_BYTES
    body = ('{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":['
            + ",".join(["[[0]]"] * rows) + "]}]}").encode()
    collections: list[str] = []

    def seen(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(phase)

    gc.callbacks.append(seen)
    try:
        http_codec._parse_json(body)
    finally:
        gc.callbacks.remove(seen)
    assert collections == [] and gc.isenabled()
