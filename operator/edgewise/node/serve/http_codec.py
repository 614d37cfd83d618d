"""KServe-V2 HTTP inference bodies, with Triton's binary-tensor extension.

A request body is a JSON header, optionally followed by raw tensor bytes; the
`Inference-Header-Content-Length` header says where the JSON ends, and each binary input
states its `binary_data_size`. Responses mirror that: outputs asked for with
`binary_data` (or all of them with `binary_data_output`) travel as raw bytes after the
JSON. Pure functions: bytes in, arrays out, and back.
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass
from typing import Any

from edgewise.node.serve import codec, limits, validate
from edgewise.node.serve.batcher import Outputs
from edgewise.node.serve.errors import invalid
from edgewise.node.serve.model import ModelSpec
from edgewise.node.serve.service import Decoded

HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class HttpOptions:
    request_id: str | None
    order: list[str]  # outputs to return, in order
    binary: dict[str, bool]


def parse_header_length(value: str | None, body_size: int) -> int | None:
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        raise invalid(f"{HEADER_LENGTH} must be an integer, got {value!r}") from None
    if not 0 < n <= body_size:
        raise invalid(f"{HEADER_LENGTH} is {n}, expected between 1 and the body size {body_size}")
    return n


# A JSON body this large builds millions of Python objects; the garbage collector, run again and
# again as they are made, costs most of the parse (2.4 s instead of 0.5 s for 10 MiB of nested
# lists), and json.loads holds the interpreter lock all along, so health probes wait that long.
NO_GC_BYTES = 1 << 20


def _parse_json(raw: bytes | memoryview) -> dict[str, Any]:
    pause_gc = len(raw) > NO_GC_BYTES and gc.isenabled()
    try:
        if pause_gc:
            gc.disable()
        doc = json.loads(str(raw, "utf-8"))  # from str: json's encoding sniffing of bytes costs more
    except ValueError as err:  # not UTF-8, not JSON, or an integer of more than 4300 digits
        raise invalid(f"failed to parse the request JSON: {err}") from None
    except RecursionError:  # arrays nested thousands deep
        raise invalid("failed to parse the request JSON: it is nested too deeply") from None
    finally:
        if pause_gc:
            gc.enable()
    if not isinstance(doc, dict):
        raise invalid("the request JSON must be an object with an 'inputs' list")
    return doc


def _declared(item: Any, index: int) -> tuple[str, str, list[int]]:
    if not isinstance(item, dict):
        raise invalid(f"inputs[{index}] must be an object with 'name', 'datatype' and 'shape'")
    name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str):
        raise invalid(f"inputs[{index}] needs a string 'name' and a string 'datatype'")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise invalid(f"input '{name}' needs 'shape', a list of integers")
    return name, datatype, shape


def _parameters(item: dict[str, Any], what: str) -> dict[str, Any]:
    params = item.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise invalid(f"the 'parameters' of {what} must be an object")
    return params


def decode_request(spec: ModelSpec, body: bytes, header_length: int | None,
                   bounds: limits.Limits = limits.DEFAULT) -> Decoded:
    """Parse, validate and decode a request; the JSON's size and the declared shapes are
    checked against `bounds` before the JSON is parsed and before any tensor is decoded."""
    view = memoryview(body)
    limits.check_json(header_length if header_length is not None else len(body), bounds)
    doc = _parse_json(view[:header_length] if header_length is not None else view)
    items = doc.get("inputs")
    if not isinstance(items, list):
        raise invalid(f"the request JSON needs an 'inputs' list; model '{spec.name}' expects inputs: "
                      + validate.expected_inputs(spec))
    declared = [_declared(item, i) for i, item in enumerate(items)]
    batch = validate.check_inputs(spec, declared)
    limits.check_declared(spec, declared, bounds, len(body))

    inputs = {}
    offset = header_length or 0
    for item, (name, _, shape) in zip(items, declared, strict=True):
        t = spec.input(name)
        assert t is not None  # check_inputs proved it
        params = _parameters(item, f"input '{name}'")
        if "shared_memory_region" in params:
            raise invalid("shared-memory tensors are not supported; send the data in the request")
        size = params.get("binary_data_size")
        if size is not None:
            if header_length is None:  # else the "binary data" would be the JSON's own bytes
                raise invalid(f"input '{name}' has a binary_data_size parameter, but the request has no "
                              f"{HEADER_LENGTH} header saying where its JSON ends and binary data begins")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(body):
                raise invalid(f"input '{name}' declares binary_data_size {size!r} but only "
                              f"{len(body) - offset} bytes of binary data remain")
            inputs[name] = codec.decode_raw(name, t.dtype, shape, view[offset:offset + size])
            offset += size
        elif "data" in item:
            inputs[name] = codec.decode_json(name, t.dtype, shape, item["data"])
        else:
            raise invalid(f"input '{name}' has neither 'data' nor a 'binary_data_size' parameter")
    if header_length is not None and offset != len(body):
        raise invalid(f"the request carries {len(body) - offset} bytes of binary data that no input claims")

    order, binary = _requested_outputs(spec, doc)
    request_id = doc.get("id")
    options = HttpOptions(request_id if isinstance(request_id, str) else None, order, binary)
    wanted = order if "outputs" in doc else None
    return Decoded(inputs, batch, wanted, options)


def _requested_outputs(spec: ModelSpec, doc: dict[str, Any]) -> tuple[list[str], dict[str, bool]]:
    params = doc.get("parameters") or {}
    default_binary = bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
    outputs = doc.get("outputs")
    if outputs is None:
        names = [t.name for t in spec.outputs]
        return names, dict.fromkeys(names, default_binary)
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                for o in outputs):
        raise invalid("'outputs' must be a list of objects with a string 'name'")
    names = [o["name"] for o in outputs]
    validate.check_outputs(spec, names)
    binary = {}
    for o in outputs:
        p = _parameters(o, f"output '{o['name']}'")
        if "shared_memory_region" in p:
            raise invalid("shared-memory outputs are not supported")
        if "classification" in p:
            raise invalid("the classification extension is not supported")
        binary[o["name"]] = bool(p.get("binary_data", default_binary))
    return names, binary


def encode_response(spec: ModelSpec, request: Decoded, outputs: Outputs) -> tuple[bytes, int | None]:
    """Return (body, JSON header length or None when the body is JSON only)."""
    options: HttpOptions = request.wire
    entries = []
    blobs = []
    for name in options.order:
        t = spec.output(name)
        assert t is not None
        arr = outputs[name]
        entry: dict[str, Any] = {"name": name, "datatype": t.datatype, "shape": list(arr.shape)}
        if options.binary[name]:
            raw = codec.encode_raw(arr, t.dtype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = codec.encode_json(name, arr, t.dtype)
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": spec.name, "model_version": spec.version}
    if options.request_id is not None:
        doc["id"] = options.request_id
    doc["outputs"] = entries
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
