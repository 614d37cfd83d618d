"""The KServe-V2 / Triton gRPC front end (grpc.aio).

The servicer implements `GRPCInferenceServiceServicer` from the stubs tritonclient ships
(`tritonclient.grpc.service_pb2_grpc`), so the service definition is Triton's own, not a
copy. Metadata, config and statistics are the same dicts HTTP returns, parsed into
Triton's messages. Methods left to the base class (shared memory, tracing, logging,
repository load/unload) answer UNIMPLEMENTED.

ModelInfer and ModelStreamInfer are registered with no request deserializer: grpc would parse
every message as it arrives, and a 32 MB message of 16 million empty strings takes seconds to
parse, holding the interpreter lock. They get the wire bytes, which `grpc_wire.check` sizes up
(skeleton fields, typed contents) before protobuf parses them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from edgewise.node.serve import codec, grpc_wire, limits, validate
from edgewise.node.serve.batcher import Outputs
from edgewise.node.serve.dtypes import DType
from edgewise.node.serve.errors import InferError, Status, invalid
from edgewise.node.serve.model import ModelSpec
from edgewise.node.serve.service import Decoded, InferenceService

log = logging.getLogger(__name__)

GRPC_CODES = {
    Status.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Status.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Status.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Status.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Status.INTERNAL: grpc.StatusCode.INTERNAL,
}

# Which typed `InferTensorContents` field carries each datatype when a client does not
# use raw_input_contents (FP16 has none: it must travel raw).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}
# Types narrower than their contents field: read at the field's width, then range-checked.
_WIDE = {"INT8": np.int32, "INT16": np.int32, "UINT8": np.uint32, "UINT16": np.uint32}


def message_size(request: service_pb2.ModelInferRequest) -> int:
    """The memory a parsed request holds: its wire bytes and the parsed message, about twice
    its serialized size (ByteSize is computed from the fields' lengths, not by serializing)."""
    return 2 * request.ByteSize()


def decode_request(spec: ModelSpec, request: service_pb2.ModelInferRequest,
                   bounds: limits.Limits = limits.DEFAULT, size: int | None = None) -> Decoded:
    """`size`: the request's footprint in memory, when the caller knows it (see message_size)."""
    declared = [(t.name, t.datatype, list(t.shape)) for t in request.inputs]
    batch = validate.check_inputs(spec, declared)
    limits.check_declared(spec, declared, bounds, message_size(request) if size is None else size)
    raw = list(request.raw_input_contents)  # each access to the repeated field would copy the bytes
    if raw and len(raw) != len(request.inputs):
        raise invalid(f"raw_input_contents has {len(raw)} entries; "
                      f"expected one per input ({len(request.inputs)})")
    inputs: dict[str, np.ndarray] = {}
    for i, (t, (name, _, shape)) in enumerate(zip(request.inputs, declared, strict=True)):
        spec_t = spec.input(name)
        assert spec_t is not None
        if raw:
            inputs[name] = codec.decode_raw(name, spec_t.dtype, shape, raw[i])
            continue
        field = _CONTENTS_FIELD.get(spec_t.datatype)
        if field is None:
            raise invalid(f"input '{name}' is {spec_t.datatype}: send it in raw_input_contents")
        values = getattr(t.contents, field)
        if len(values) != codec.element_count(shape):  # before converting a single value
            raise invalid(f"input '{name}' has {len(values)} elements in contents.{field}, expected "
                          f"{codec.element_count(shape)} for shape {shape}")
        inputs[name] = _typed(name, spec_t.dtype, values).reshape(shape)
    names = [o.name for o in request.outputs]
    validate.check_outputs(spec, names)
    return Decoded(inputs, batch, names or None, request.id)


def _typed(name: str, dtype: DType, values: Any) -> np.ndarray:
    """A typed contents field as `dtype`; int_contents and uint_contents are 32-bit on the wire,
    so INT8/INT16/UINT8/UINT16 values may be out of the input's range: refused, not wrapped."""
    if dtype.triton == "BYTES":
        arr = np.empty(len(values), dtype=object)
        arr[:] = list(values)
        return arr
    wide = np.fromiter(values, dtype=_WIDE.get(dtype.triton, dtype.numpy), count=len(values))
    if dtype.triton in _WIDE and wide.size:
        info = np.iinfo(dtype.numpy)
        low, high = wide.min(), wide.max()
        if low < info.min or high > info.max:
            raise invalid(f"input '{name}' is {dtype.triton}: its contents must be integers from "
                          f"{info.min} to {info.max}, got {low if low < info.min else high}")
    return wide.astype(dtype.numpy, copy=False)


def encode_response(spec: ModelSpec, request: Decoded, outputs: Outputs) -> service_pb2.ModelInferResponse:
    response = service_pb2.ModelInferResponse(
        model_name=spec.name, model_version=spec.version, id=request.wire)
    for name in request.outputs or [t.name for t in spec.outputs]:
        t = spec.output(name)
        assert t is not None
        arr = outputs[name]
        response.outputs.add(name=name, datatype=t.datatype, shape=list(arr.shape))
        response.raw_output_contents.append(codec.encode_raw(arr, t.dtype))
    return response


class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, service: InferenceService) -> None:
        self.service = service

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerReadyResponse(ready=self.service.ready)

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ModelReadyResponse(ready=self.service.model_ready(request.name, request.version))

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return json_format.ParseDict(self.service.server_metadata(), service_pb2.ServerMetadataResponse())

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        doc = await _call(context, self.service.model_metadata, request.name, request.version)
        return json_format.ParseDict(doc, service_pb2.ModelMetadataResponse())

    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        doc = await _call(context, self.service.model_config, request.name, request.version)
        config = json_format.ParseDict(doc, model_config_pb2.ModelConfig())
        return service_pb2.ModelConfigResponse(config=config)

    async def ModelStatistics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        doc = await _call(context, self.service.statistics, request.name, request.version)
        return json_format.ParseDict(doc, service_pb2.ModelStatisticsResponse())

    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return json_format.ParseDict({"models": self.service.repository_index()},
                                     service_pb2.RepositoryIndexResponse())

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await self._infer(*self._parse(request))
        except InferError as err:
            await context.abort(GRPC_CODES[err.status], err.message)
        except Exception as err:  # a bug: INTERNAL with its message, never grpc's UNKNOWN
            log.exception("inference failed")
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {err}")

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[Any]:
        """Bidirectional stream: requests run concurrently; errors travel in-band as Triton does."""
        answers: asyncio.Queue[Any] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()

        async def answer(request: Any) -> None:
            try:
                response = service_pb2.ModelStreamInferResponse(
                    infer_response=await self._infer(*self._parse(request)))
            except InferError as err:
                response = service_pb2.ModelStreamInferResponse(error_message=err.message)
            except Exception as err:  # noqa: BLE001 - a bug: answered in-band; the stream must not hang
                log.exception("inference failed")
                response = service_pb2.ModelStreamInferResponse(error_message=f"internal error: {err}")
            await answers.put(response)

        async def read() -> None:
            async for request in request_iterator:
                task = asyncio.create_task(answer(request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks:
                await asyncio.gather(*tasks)
            await answers.put(None)

        reader = asyncio.create_task(read())
        try:
            while (response := await answers.get()) is not None:
                yield response
        finally:
            reader.cancel()

    def _parse(self, raw: bytes) -> tuple[service_pb2.ModelInferRequest, int]:
        """The wire bytes (registered raw, see the module's docstring) sized up, then parsed;
        with the request's footprint in memory: the wire bytes and the parsed message."""
        grpc_wire.check(raw, self.service.settings.limits)
        try:
            return service_pb2.ModelInferRequest.FromString(raw), 2 * len(raw)
        except DecodeError as err:
            raise invalid(f"the request is not a valid ModelInferRequest message: {err}") from None

    async def _infer(self, request: Any, size: int) -> Any:
        bounds = self.service.settings.limits
        return await self.service.infer(
            request.model_name, request.model_version,
            lambda spec: decode_request(spec, request, bounds, size), encode_response,
            self._decode_cost(request, size),
        )

    def _decode_cost(self, request: service_pb2.ModelInferRequest, size: int) -> int:
        """Raw numbers decode as a view, free however large; typed contents and BYTES tensors
        are walked (the service offloads costly decodes)."""
        spec = self.service.spec
        if (spec is not None and any(t.datatype == "BYTES" for t in spec.inputs)) or any(
                t.HasField("contents") for t in request.inputs):
            return size
        return 0


async def _call(context: grpc.aio.ServicerContext, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except InferError as err:
        await context.abort(GRPC_CODES[err.status], err.message)


def server(service: InferenceService, address: str, max_request_bytes: int) -> grpc.aio.Server:
    srv = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", max_request_bytes),
        ("grpc.max_send_message_length", -1),
    ])
    servicer = Servicer(service)
    stock = _Handlers()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, stock)
    handlers = {
        **stock.handlers,
        # No request deserializer: the servicer gets the wire bytes and parses them itself.
        "ModelInfer": grpc.unary_unary_rpc_method_handler(
            servicer.ModelInfer, response_serializer=service_pb2.ModelInferResponse.SerializeToString),
        "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(
            servicer.ModelStreamInfer, response_serializer=service_pb2.ModelStreamInferResponse.SerializeToString),
    }
    srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(stock.service, handlers),))
    srv.add_registered_method_handlers(stock.service, handlers)
    srv.add_insecure_port(address)
    return srv


class _Handlers:
    """Takes the method handlers tritonclient's generated code registers, to change one."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # the same handlers arrive by name below

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.service, self.handlers = service, handlers
