"""Property-based fuzzing of both front ends of `edgewise serve` over KServe-V2 request shapes.

One real server serves a model with an input of each wire type (FP16, INT8, INT64, BOOL,
BYTES), with small limits so generated requests reach them. Hypothesis builds requests from
the protocol's pieces: inputs with a name, a datatype, a shape and their data (HTTP: JSON
`data`, flat or nested, or binary with `binary_data_size`; gRPC: `raw_input_contents` or the
typed `contents` fields), requested outputs, parameters. The properties:

- a well-formed request gets 200 / OK and exactly the model's answer;
- a malformed one (a well-formed request with one known defect) gets a 4xx / INVALID_ARGUMENT
  (or 413 / RESOURCE_EXHAUSTED over a limit), never an answer;
- anything at all (random JSON, random bytes, random protobuf fields) never gets a 5xx or an
  INTERNAL / UNKNOWN;
- the server keeps answering its liveness probe, and its peak memory stays bounded.

Deterministic and bounded: derandomized, no example database, a modest number of examples.
Inputs that found bugs are kept below as explicit regression tests.
"""

from __future__ import annotations

import http.client
import json
import struct
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import serve_models_support
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_support import ServeProcess, http_status, peak_memory, serving
from tritonclient.grpc import service_pb2, service_pb2_grpc

from edgewise.node.serve import grpc_wire
from edgewise.node.serve.errors import InferError, Status

MAX_BATCH = 4
MAX_ELEMENTS = 4096
MAX_MEMORY = 4 * 1024 * 1024  # so at most 174762 bytes of JSON
MAX_BODY = 1024 * 1024
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=60,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ_EACH = settings(FUZZ, max_examples=12)  # per kind of defect

# The model: one input per wire type, all [N, 2]; see serve_models_support.wire_types.
INPUTS = {"half": "FP16", "small": "INT8", "big": "INT64", "flag": "BOOL", "text": "BYTES"}
OUTPUTS = [f"{n}_out" for n in INPUTS]
NUMPY = {"FP16": np.float16, "INT8": np.int8, "INT64": np.int64, "BOOL": np.bool_, "BYTES": np.object_}
TYPED_FIELD = {"INT8": "int_contents", "INT64": "int64_contents", "BOOL": "bool_contents",
               "BYTES": "bytes_contents"}  # FP16 has none: it must travel raw
DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
             "FP32", "FP64", "BYTES", "BF16"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    root = tmp_path_factory.mktemp("fuzz")
    serve_models_support.wire_types(root / "types" / "model.onnx")
    with serving(root / "types", "types", root / "types.log", "--max-batch-size", str(MAX_BATCH),
                 "--max-request-bytes", str(MAX_BODY), "--max-request-elements", str(MAX_ELEMENTS),
                 "--max-request-memory", str(MAX_MEMORY), "--threads", "1") as s:
        s.peak_before = peak_memory(s.proc.pid)  # type: ignore[attr-defined]
        yield s
        # Memory bounded: every request of the module, fuzzed or not, together raised the
        # server's peak resident memory by less than a few times the per-request limit.
        grown = peak_memory(s.proc.pid) - s.peak_before  # type: ignore[attr-defined]
        assert grown < 16 * MAX_MEMORY, f"peak memory grew by {grown} bytes"


def still_serving(server: ServeProcess) -> None:
    assert server.proc.poll() is None, server.log()
    assert http_status(server.http_port, "/v2/health/live") == 200


# --- well-formed requests -------------------------------------------------------------------------

def _values(datatype: str, count: int) -> st.SearchStrategy[list[Any]]:
    element: st.SearchStrategy[Any] = {
        # Exactly representable in FP16, and small enough that doubling stays finite.
        "FP16": st.floats(-1000, 1000, width=16),
        "INT8": st.integers(-127, 127),  # -(-128) does not fit INT8
        "INT64": st.integers(-(2**62), 2**62),
        "BOOL": st.booleans(),
        "BYTES": st.text(st.characters(codec="utf-8"), max_size=12).map(str.encode),
    }[datatype]
    return st.lists(element, min_size=count, max_size=count)


@st.composite
def feeds(draw: st.DrawFn) -> dict[str, np.ndarray]:
    batch = draw(st.integers(1, MAX_BATCH))
    feed = {}
    for name, datatype in INPUTS.items():
        values = draw(_values(datatype, batch * 2))
        arr = np.empty(batch * 2, dtype=object) if datatype == "BYTES" else np.array(values, NUMPY[datatype])
        if datatype == "BYTES":
            arr[:] = values
        feed[name] = arr.reshape(batch, 2)
    return feed


def expected(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"half_out": feed["half"] * np.float16(2), "small_out": -feed["small"], "big_out": feed["big"] + 1,
            "flag_out": ~feed["flag"], "text_out": feed["text"]}


def raw(arr: np.ndarray) -> bytes:
    if arr.dtype == object:
        return b"".join(struct.pack("<I", len(b)) + b for b in arr.reshape(-1))
    return np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()


def json_data(arr: np.ndarray, nested: bool) -> list[Any]:
    values = [b.decode() for b in arr.reshape(-1)] if arr.dtype == object else arr.reshape(-1).tolist()
    return [values[i:i + 2] for i in range(0, len(values), 2)] if nested else values


# HTTP: a request is a JSON document plus binary blobs, kept apart until sent so a mutation can
# change either; `binary` says whether the Inference-Header-Content-Length header is sent.
HttpRequest = dict[str, Any]


@st.composite
def http_requests(draw: st.DrawFn) -> tuple[HttpRequest, dict[str, np.ndarray]]:
    feed = draw(feeds())
    inputs = []
    for name, arr in feed.items():
        entry: dict[str, Any] = {"name": name, "datatype": INPUTS[name], "shape": list(arr.shape)}
        if draw(st.booleans()):
            entry["parameters"] = {"binary_data_size": len(raw(arr))}
        else:
            entry["data"] = json_data(arr, draw(st.booleans()))
        inputs.append(entry)
    order = draw(st.permutations(inputs))
    blobs = [raw(feed[e["name"]]) for e in order if "parameters" in e]  # in the inputs' order
    doc: dict[str, Any] = {"id": draw(st.text(max_size=8)), "inputs": order}
    wanted = draw(st.none() | st.lists(st.sampled_from(OUTPUTS), min_size=1, max_size=5, unique=True))
    if wanted is not None:
        doc["outputs"] = [{"name": o, "parameters": {"binary_data": draw(st.booleans())}} for o in wanted]
    elif draw(st.booleans()):
        doc["parameters"] = {"binary_data_output": True}
    return {"doc": doc, "blobs": blobs, "binary": bool(blobs)}, feed


def http_send(server: ServeProcess, request: HttpRequest) -> tuple[int, dict[str, str], bytes]:
    header = request["doc"] if isinstance(request["doc"], bytes) else json.dumps(request["doc"]).encode()
    headers = {"Content-Type": "application/json"}
    if request["binary"]:
        headers["Inference-Header-Content-Length"] = str(request.get("header_length", len(header)))
    return http_post(server, "/v2/models/types/infer", header + b"".join(request["blobs"]), headers)


def http_post(server: ServeProcess, path: str, body: bytes,
              headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=120)
    try:
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def assert_answer(result: Any, feed: dict[str, np.ndarray], wanted: list[str]) -> None:
    for name, value in expected(feed).items():
        if name not in wanted:
            continue
        got = result.as_numpy(name)
        if value.dtype == object:
            got = np.array([b if isinstance(b, bytes) else str(b).encode() for b in got.reshape(-1)], dtype=object)
            assert got.tolist() == value.reshape(-1).tolist(), name
        else:
            np.testing.assert_array_equal(got.astype(value.dtype), value, err_msg=name)


@FUZZ
@given(http_requests())
def test_http_well_formed_requests_get_the_models_answer(server: ServeProcess, case: Any) -> None:
    request, feed = case
    status, headers, body = http_send(server, request)
    assert status == 200, body[:500]
    length = headers.get("inference-header-content-length")
    result = httpclient.InferenceServerClient.parse_response_body(body, header_length=int(length) if length else None)
    wanted = [o["name"] for o in request["doc"].get("outputs", [])] or OUTPUTS
    assert [o["name"] for o in result.get_response()["outputs"]] == wanted
    assert_answer(result, feed, wanted)


# --- malformed HTTP requests: a well-formed one with one defect -----------------------------------

def _entry(request: HttpRequest, draw: st.DrawFn) -> dict[str, Any]:
    return draw(st.sampled_from(request["doc"]["inputs"]))


def _json_entry(request: HttpRequest, draw: st.DrawFn) -> dict[str, Any] | None:
    entries = [e for e in request["doc"]["inputs"] if "data" in e]
    return draw(st.sampled_from(entries)) if entries else None


def drop_input(request: HttpRequest, draw: st.DrawFn) -> None:
    entry = _entry(request, draw)
    binary = [e for e in request["doc"]["inputs"] if "parameters" in e]
    if entry in binary:  # its blob goes too, or the defect would be the extra bytes
        del request["blobs"][binary.index(entry)]
    request["doc"]["inputs"].remove(entry)
    request["binary"] = bool(request["blobs"])


def unknown_input(request: HttpRequest, draw: st.DrawFn) -> None:
    name = draw(st.text(min_size=1, max_size=8).filter(lambda n: n not in INPUTS))
    request["doc"]["inputs"].append({"name": name, "datatype": "FP32", "shape": [1, 2], "data": [0, 0]})


def duplicate_input(request: HttpRequest, draw: st.DrawFn) -> None:
    entry = _json_entry(request, draw)
    if entry is None:
        unknown_input(request, draw)
    else:
        request["doc"]["inputs"].append(dict(entry))


def wrong_datatype(request: HttpRequest, draw: st.DrawFn) -> None:
    entry = _entry(request, draw)
    entry["datatype"] = draw(st.sampled_from(DATATYPES).filter(lambda t: t != entry["datatype"])
                             | st.text(max_size=6).filter(lambda t: t not in DATATYPES))


def wrong_shape(request: HttpRequest, draw: st.DrawFn) -> None:
    entry = _entry(request, draw)
    batch = entry["shape"][0]
    entry["shape"] = draw(st.sampled_from([
        [batch], [batch, 2, 1], [batch, 3], [batch, -2], [-1, 2], [0, 2], [MAX_BATCH + 1, 2],
        [batch, 2**40], [2**62, 2**62],
    ]).filter(lambda s: s != entry["shape"]))


def wrong_count(request: HttpRequest, draw: st.DrawFn) -> None:
    entry = _json_entry(request, draw)
    if entry is None:
        request["blobs"][0] = request["blobs"][0][:-1]
        return
    data = entry["data"]
    flat = [v for row in data for v in row] if data and isinstance(data[0], list) else list(data)
    entry["data"] = flat[:-1] if draw(st.booleans()) else [*flat, flat[0]]


def wrong_value_type(request: HttpRequest, draw: st.DrawFn) -> None:
    entry = _json_entry(request, draw)
    if entry is None:
        return wrong_count(request, draw)
    bad = {"FP16": st.sampled_from(["1.5", True, None, [], {}]),
           "INT8": st.sampled_from([1.5, "1", True, None, 128, -129]),
           "INT64": st.sampled_from([0.5, "7", False, None, 2**63, {}]),
           "BOOL": st.sampled_from([0, 1, "true", None, 1.0]),
           "BYTES": st.sampled_from([1, 2.5, True, None, {}])}[entry["datatype"]]
    flat = [v for row in entry["data"] for v in row] if isinstance(entry["data"][0], list) else entry["data"]
    flat[draw(st.integers(0, len(flat) - 1))] = draw(bad)
    entry["data"] = flat
    return None


def wrong_binary_size(request: HttpRequest, draw: st.DrawFn) -> None:
    entries = [e for e in request["doc"]["inputs"] if "parameters" in e]
    if not entries:
        return wrong_count(request, draw)
    entry = draw(st.sampled_from(entries))
    size = entry["parameters"]["binary_data_size"]
    entry["parameters"]["binary_data_size"] = draw(st.sampled_from([size + 1, size - 1, -1, "16", True, None, 2**70])
                                                   .filter(lambda v: v != size))
    if entry["parameters"]["binary_data_size"] is None:
        del entry["parameters"]  # neither data nor binary_data_size
    return None


def no_header_length(request: HttpRequest, draw: st.DrawFn) -> None:
    if not request["binary"]:
        return wrong_count(request, draw)
    request["binary"] = False
    request["blobs"] = []  # the JSON alone, whose own bytes must not be taken for tensor data
    return None


def bad_header_length(request: HttpRequest, draw: st.DrawFn) -> None:
    request["binary"] = True
    size = len(json.dumps(request["doc"]).encode()) + sum(len(b) for b in request["blobs"])
    request["header_length"] = draw(st.sampled_from(["ten", "-1", "0", str(size + 1), "1e3", ""]))


def bad_parameters(request: HttpRequest, draw: st.DrawFn) -> None:
    value = draw(st.sampled_from([[], "binary_data", 7, ["shared_memory_region"], None]))
    entry = _json_entry(request, draw)
    if entry is not None and draw(st.booleans()):
        entry["parameters"] = value if value is not None else "x"
    else:
        request["doc"]["outputs"] = [{"name": "half_out", "parameters": value if value is not None else 0.5}]


def unknown_output(request: HttpRequest, draw: st.DrawFn) -> None:
    name = draw(st.text(max_size=8).filter(lambda n: n not in OUTPUTS))
    request["doc"]["outputs"] = [*request["doc"].get("outputs", []), {"name": name}]


def broken_json(request: HttpRequest, draw: st.DrawFn) -> None:
    text = json.dumps(request["doc"]).encode()
    request["doc"] = draw(st.sampled_from([text[:-1], text[:len(text) // 2], b"[" + text + b"]", b"null",
                                           b"[" * 100_000, text.replace(b'"', b"'", 2)]))
    request["blobs"], request["binary"] = [], False


def too_much_json(request: HttpRequest, draw: st.DrawFn) -> None:
    # The model's fixed dims keep declared shapes small; JSON is what can outgrow the memory limit.
    entry = _entry(request, draw)
    entry.pop("parameters", None)
    entry["data"] = [0] * draw(st.sampled_from([MAX_MEMORY // 24 // 2 + 1, MAX_MEMORY // 24]))
    request["blobs"], request["binary"] = [], False
    for e in request["doc"]["inputs"]:
        e.pop("parameters", None)
        e.setdefault("data", [0, 0])


MUTATIONS: list[Callable[[HttpRequest, st.DrawFn], Any]] = [
    drop_input, unknown_input, duplicate_input, wrong_datatype, wrong_shape, wrong_count, wrong_value_type,
    wrong_binary_size, no_header_length, bad_header_length, bad_parameters, unknown_output, broken_json,
    too_much_json,
]


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.__name__)
@FUZZ_EACH
@given(case=http_requests(), data=st.data())
def test_http_malformed_requests_get_a_4xx(server: ServeProcess, mutation: Callable[[HttpRequest, Any], Any],
                                           case: Any, data: st.DataObject) -> None:
    request, _ = case
    mutation(request, data.draw)
    status, _, body = http_send(server, request)
    assert 400 <= status < 500, f"{status} {body[:300]!r}"
    assert "error" in json.loads(body), body[:300]


# Stands for an integer of more digits than Python reads from text (or writes: json.dumps
# could not render it); replaced in the body.
HUGE = "<huge integer>"
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.just(HUGE) | st.floats(allow_nan=False)
                    | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                               max_size=5),
                    max_leaves=30)
PIECES = st.fixed_dictionaries({}, optional={
    "id": JSON, "parameters": JSON, "outputs": JSON,
    "inputs": st.lists(st.fixed_dictionaries({}, optional={
        "name": st.sampled_from(list(INPUTS)) | JSON, "datatype": st.sampled_from(DATATYPES) | JSON,
        "shape": st.lists(st.integers(-3, 5), max_size=3) | JSON, "data": JSON,
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": st.integers(-2, 64) | JSON}) | JSON,
    }), max_size=6) | JSON,
})


@FUZZ
@given(PIECES | JSON, st.none() | st.integers(-5, 500), st.binary(max_size=64))
def test_http_anything_never_gets_a_5xx(server: ServeProcess, doc: Any, header_length: int | None,
                                        tail: bytes) -> None:
    body = json.dumps(doc).encode().replace(json.dumps(HUGE).encode(), b"9" * 5000)
    body += tail if header_length is not None else b""
    headers = {} if header_length is None else {"Inference-Header-Content-Length": str(header_length)}
    status, _, answer = http_post(server, "/v2/models/types/infer", body, headers)
    assert status < 500, answer[:300]


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from(["/v2/models/types/infer", "/v2/models/types", "/v2",
                                                  "/v2/repository/index", "/v2/models/types/versions/1/infer"]))
def test_http_random_bytes_never_get_a_5xx(server: ServeProcess, body: bytes, path: str) -> None:
    status, _, answer = http_post(server, path, body, {"Content-Type": "application/octet-stream"})
    assert status < 500, answer[:300]


# --- gRPC -----------------------------------------------------------------------------------------

GRPC_REFUSED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.NOT_FOUND}


@pytest.fixture(scope="module")
def stub(server: ServeProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    channel = grpc.insecure_channel(server.grpc_url, options=[("grpc.max_receive_message_length", -1)])
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


@st.composite
def grpc_requests(draw: st.DrawFn) -> tuple[service_pb2.ModelInferRequest, dict[str, np.ndarray]]:
    feed = draw(feeds())
    request = service_pb2.ModelInferRequest(model_name="types", id=draw(st.text(max_size=8)))
    for name in draw(st.permutations(list(INPUTS))):
        request.inputs.add(name=name, datatype=INPUTS[name], shape=list(feed[name].shape))
        request.raw_input_contents.append(raw(feed[name]))
    for o in draw(st.lists(st.sampled_from(OUTPUTS), max_size=5, unique=True)):
        request.outputs.add(name=o)
    return request, feed


def grpc_call(stub: service_pb2_grpc.GRPCInferenceServiceStub,
              request: service_pb2.ModelInferRequest) -> tuple[grpc.StatusCode, Any]:
    try:
        return grpc.StatusCode.OK, stub.ModelInfer(request, timeout=120)
    except grpc.RpcError as err:
        return err.code(), err.details()


@FUZZ
@given(grpc_requests())
def test_grpc_well_formed_requests_get_the_models_answer(stub: Any, case: Any) -> None:
    request, feed = case
    code, response = grpc_call(stub, request)
    assert code == grpc.StatusCode.OK, response
    wanted = [o.name for o in request.outputs] or OUTPUTS
    assert [o.name for o in response.outputs] == wanted and response.id == request.id
    assert_answer(grpcclient.InferResult(response), feed, wanted)


GRPC_DEFECTS = ["drop", "datatype", "shape", "raw size", "raw count", "typed", "typed range", "unknown output",
                "limits", "unknown input"]


def mutate_grpc(defect: str, request: service_pb2.ModelInferRequest, feed: dict[str, np.ndarray],
                draw: Any) -> None:
    k = draw(st.integers(0, len(request.inputs) - 1))
    t = request.inputs[k]
    if defect == "drop":
        del request.inputs[k]
        del request.raw_input_contents[k]
    elif defect == "datatype":
        t.datatype = draw(st.sampled_from(DATATYPES).filter(lambda d: d != t.datatype))
    elif defect == "shape":
        t.shape[:] = draw(st.sampled_from([[1], [1, 3], [1, 2, 1], [0, 2], [MAX_BATCH + 1, 2], [1, -1]]))
        if list(t.shape) == list(feed[t.name].shape):
            t.shape[:] = [1, 3]
    elif defect == "raw size":
        if t.datatype == "BYTES":
            request.raw_input_contents[k] += b"\0"  # a length prefix cut short
        else:
            request.raw_input_contents[k] = request.raw_input_contents[k][:-1]
    elif defect == "raw count":
        request.raw_input_contents.append(b"")
    elif defect in ("typed", "typed range"):
        del request.raw_input_contents[:]  # typed contents for every input: FP16 cannot travel typed
        for u in request.inputs:
            field = TYPED_FIELD.get(u.datatype)
            if field is None:
                continue
            values = feed[u.name].reshape(-1).tolist()
            if defect == "typed range" and u.datatype == "INT8":
                values[0] = draw(st.sampled_from([128, -129, 2**31 - 1]))
            getattr(u.contents, field).extend(values)
    elif defect == "unknown output":
        request.outputs.add(name=draw(st.text(max_size=8).filter(lambda n: n not in OUTPUTS)))
    elif defect == "limits":
        t.shape[:] = [1, draw(st.sampled_from([MAX_ELEMENTS + 1, 2**40]))]
    else:
        request.inputs.add(name=draw(st.text(min_size=1, max_size=8).filter(lambda n: n not in INPUTS)),
                           datatype="FP32", shape=[1, 2])
        request.raw_input_contents.append(b"\0" * 8)


@pytest.mark.parametrize("defect", GRPC_DEFECTS)
@FUZZ_EACH
@given(case=grpc_requests(), data=st.data())
def test_grpc_malformed_requests_are_refused(stub: Any, defect: str, case: Any, data: st.DataObject) -> None:
    request, feed = case
    mutate_grpc(defect, request, feed, data.draw)
    code, details = grpc_call(stub, request)
    assert code in GRPC_REFUSED, f"{code} {details}"


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(list(INPUTS)) | st.text(max_size=6),
                          st.sampled_from(DATATYPES) | st.text(max_size=6),
                          st.lists(st.integers(-2**63, 2**63 - 1) | st.integers(-2, 6), max_size=4),
                          st.none() | st.binary(max_size=64),
                          st.lists(st.integers(-2**31, 2**31 - 1), max_size=8)), max_size=6),
       st.lists(st.text(max_size=10), max_size=3))
def test_grpc_anything_is_never_an_internal_error(stub: Any, inputs: list[Any], outputs: list[str]) -> None:
    request = service_pb2.ModelInferRequest(model_name="types")
    for name, datatype, shape, content, ints in inputs:
        t = request.inputs.add(name=name, datatype=datatype, shape=shape)
        t.contents.int_contents.extend(ints)
        if content is not None:
            request.raw_input_contents.append(content)
    for o in outputs:
        request.outputs.add(name=o)
    code, details = grpc_call(stub, request)
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), details


@FUZZ
@given(st.binary(max_size=512) | grpc_requests().map(lambda case: case[0].SerializeToString()).flatmap(
    lambda wire: st.integers(0, len(wire)).map(lambda cut: wire[:cut])))
def test_grpc_any_wire_bytes_are_never_an_internal_error(server: ServeProcess, wire: bytes) -> None:
    """Random bytes, and well-formed messages cut anywhere, sent as a ModelInfer message."""
    with grpc.insecure_channel(server.grpc_url) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")  # bytes in, bytes out
        try:
            call(wire, timeout=120)
            code = grpc.StatusCode.OK
        except grpc.RpcError as err:
            code = err.code()
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


@FUZZ
@given(st.binary(max_size=512) | grpc_requests().map(lambda case: case[0].SerializeToString()).flatmap(
    lambda wire: st.integers(0, len(wire)).map(lambda cut: wire[:cut])))
def test_grpc_wire_walk_refuses_only_with_invalid_argument(wire: bytes) -> None:
    """The walk that sizes up large messages (small ones skip it), on anything."""
    try:
        grpc_wire.summarize(wire)
    except InferError as err:
        assert err.status is Status.INVALID_ARGUMENT


def test_server_still_serving_after_the_fuzzing(server: ServeProcess) -> None:
    still_serving(server)


# --- what fuzzing found: kept as explicit regression tests ----------------------------------------

def _types_json(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"inputs": [
        {"name": "half", "datatype": "FP16", "shape": [1, 2], "data": [1.5, 2]},
        {"name": "small", "datatype": "INT8", "shape": [1, 2], "data": [1, 2]},
        {"name": "big", "datatype": "INT64", "shape": [1, 2], "data": [1, 2]},
        {"name": "flag", "datatype": "BOOL", "shape": [1, 2], "data": [True, False]},
        {"name": "text", "datatype": "BYTES", "shape": [1, 2], "data": ["a", "b"]},
    ]}
    for name, change in overrides.items():
        next(e for e in doc["inputs"] if e["name"] == name).update(change)
    return doc


FOUND = {
    # JSON nested deeper than Python's recursion limit: RecursionError, answered 500.
    "deep JSON": (b"[" * 50_000 + b"]" * 50_000, {}, 400, "nested too deeply"),
    # `parameters` as a list: AttributeError on .get, answered 500.
    "parameters not an object": (_types_json(half={"parameters": ["binary_data_size"]}), {}, 400,
                                 "'parameters' of input 'half' must be an object"),
    "output parameters not an object": ({**_types_json(), "outputs": [{"name": "half_out", "parameters": 1}]},
                                        {}, 400, "'parameters' of output 'half_out' must be an object"),
    # binary_data_size without Inference-Header-Content-Length: the JSON's own first bytes were
    # decoded as the tensor, and answered 200.
    "binary data without the header length": (_types_json(half={"parameters": {"binary_data_size": 4}}), {}, 400,
                                              "no Inference-Header-Content-Length header"),
    # Numbers as strings, booleans as numbers, fractions for integers: numpy cast them, answered 200.
    "strings for FP16": (_types_json(half={"data": ["1.5", "2"]}), {}, 400, "FP16: its JSON data must be numbers"),
    "fraction for INT64": (_types_json(big={"data": [1.7, 2]}), {}, 400, "INT64: its JSON data must be integers"),
    "bool for FP16": (_types_json(half={"data": [True, False]}), {}, 400, "FP16: its JSON data must be numbers"),
    "true among FP16 numbers": (_types_json(half={"data": [True, 0.0]}), {}, 400, "must be numbers, not true/false"),
    # Python refuses to read an integer of over 4300 digits with a ValueError that is not a
    # JSONDecodeError, answered 500 (found while writing the strategies above).
    "5000-digit integer": (b'{"inputs": [], "id": ' + b"7" * 5000 + b"}", {}, 400, "4300 digits"),
    # A BYTES buffer far longer than its declared shape was decoded to its end first.
    "BYTES flood": (None, {}, 400, "has more than 2 BYTES elements, expected 2 for shape [1, 2]"),
}


@pytest.mark.parametrize("case", list(FOUND))
def test_http_inputs_found_by_fuzzing(server: ServeProcess, case: str) -> None:
    doc, headers, status, fragment = FOUND[case]
    if case == "BYTES flood":
        header = json.dumps(_types_json(text={"data": None, "parameters": {"binary_data_size": 4 * 200_000}}))
        body = header.replace('"data": null, ', "").encode() + b"\0\0\0\0" * 200_000
        headers = {"Inference-Header-Content-Length": str(len(body) - 4 * 200_000)}
    else:
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    got, _, answer = http_post(server, "/v2/models/types/infer", body, {"Content-Type": "application/json", **headers})
    assert (got, fragment in json.loads(answer)["error"]) == (status, True), answer[:300]
    still_serving(server)


@pytest.mark.parametrize("value", [300, -129, 2**31 - 1])
def test_grpc_int8_contents_out_of_range_found_by_fuzzing(stub: Any, server: ServeProcess, value: int) -> None:
    """int_contents is 32-bit: an INT8 input's value beyond -128..127 raised OverflowError, which
    gRPC reported as UNKNOWN (a stream never answered)."""
    request = service_pb2.ModelInferRequest(model_name="types")
    for name in ["small", "half", "big", "flag", "text"]:  # the INT8 input decoded first
        datatype = INPUTS[name]
        t = request.inputs.add(name=name, datatype=datatype, shape=[1, 2])
        if datatype == "INT8":
            t.contents.int_contents.extend([1, value])
    code, details = grpc_call(stub, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "INT8: its contents must be integers from -128 to 127" in details
    still_serving(server)
