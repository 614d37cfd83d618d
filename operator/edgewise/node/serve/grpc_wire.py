"""Size up a ModelInferRequest from its protobuf wire bytes, before parsing it.

Parsing a message costs time and memory per field, not per byte: 32 MB of empty
`bytes_contents` strings is 16 million fields, seconds of parsing with the interpreter lock
held (a thread does not help) and hundreds of MB of memory. Walking the wire format's field
headers instead costs one step per field of the message's skeleton: the typed `contents` of
each input are measured by their length and skipped, raw contents and strings too. So a
message whose skeleton has absurdly many fields, or whose typed contents would outgrow the
memory limit, is refused before protobuf sees it.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from tritonclient.grpc import service_pb2

from edgewise.node.serve import limits
from edgewise.node.serve.errors import InferError, invalid

MAX_FIELDS = 10_000  # a real request has tens: a few inputs of five fields, outputs, parameters
MAX_PACKED_BYTES = 64 * 1024  # packed numbers outside the tensor contents: shapes
# Typed contents cost about as much to parse and convert, per byte, as JSON does.
TYPED_COST = limits.JSON_COST

_CONTENTS = service_pb2.InferTensorContents.DESCRIPTOR
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


@dataclass
class Summary:
    fields: int = 0
    typed_bytes: int = 0  # bytes of the inputs' typed `contents` messages
    packed_bytes: int = 0


def check(raw: bytes, bounds: limits.Limits) -> None:
    """Raise INVALID_ARGUMENT or TOO_LARGE for a message too costly to parse, before parsing it."""
    if len(raw) <= 2 * MAX_FIELDS and len(raw) <= bounds.max_memory // TYPED_COST:
        return  # too small to hold too many fields (2 bytes each at least) or too much typed data
    summary = summarize(raw)
    if summary.typed_bytes > bounds.max_memory // TYPED_COST:
        raise limits.too_large(
            f"the request carries {summary.typed_bytes} bytes of typed tensor contents; parsing them takes "
            f"up to {TYPED_COST} times that in memory, over the limit of {bounds.max_memory} bytes per "
            "request (--max-request-memory). Send tensors in raw_input_contents (as tritonclient does), "
            "or raise --max-request-memory")


def summarize(raw: bytes) -> Summary:
    """Walk the message's skeleton; raise INVALID_ARGUMENT on malformed wire data or too many fields."""
    summary = Summary()
    _walk(memoryview(raw), 0, len(raw), service_pb2.ModelInferRequest.DESCRIPTOR, summary)
    return summary


def _malformed(what: str) -> InferError:
    return invalid(f"the request is not a valid ModelInferRequest message: {what}")


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while pos < end and shift < 70:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise _malformed("a truncated or overlong varint")


def _walk(buf: memoryview, pos: int, end: int, descriptor: Descriptor, summary: Summary) -> None:
    while pos < end:
        summary.fields += 1
        if summary.fields > MAX_FIELDS:
            raise _malformed(f"more than {MAX_FIELDS} fields; a request needs a few per input")
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, pos = _varint(buf, pos, end)
            continue
        if wire in (_FIXED64, _FIXED32):
            pos += 8 if wire == _FIXED64 else 4
            if pos > end:
                raise _malformed("a truncated fixed-size field")
            continue
        if wire != _LENGTH:
            raise _malformed(f"wire type {wire} (groups are not part of this protocol)")
        length, pos = _varint(buf, pos, end)
        if pos + length > end:
            raise _malformed("a length-delimited field runs past its message")
        field = descriptor.fields_by_number.get(number)
        if field is not None and field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type is _CONTENTS:
                summary.typed_bytes += length
            else:
                _walk(buf, pos, pos + length, field.message_type, summary)
        elif field is not None and field.type not in (FieldDescriptor.TYPE_BYTES, FieldDescriptor.TYPE_STRING):
            summary.packed_bytes += length  # packed repeated numbers: one value per byte or more
            if summary.packed_bytes > MAX_PACKED_BYTES:
                raise _malformed(f"more than {MAX_PACKED_BYTES} bytes of shapes")
        pos += length
