"""The protobuf wire format, walked strictly over a byte buffer: no generated code, no copies.

TensorFlow's files are protobuf messages (GraphDef, BundleEntryProto ...). Only
the fields diffai needs are read, by number, as ``Field`` records whose
length-delimited payloads are ``memoryview`` slices of the buffer (a memory-mapped
file stays mapped, never copied). Every length is checked against what remains
before it is used; groups (wire types 3 and 4, which TensorFlow never writes)
are refused; and a caller descends into a nested message only through
``message``, which counts the depth against ``MAX_DEPTH`` (protobuf's own
default recursion limit is 100).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

VARINT, FIXED64, LENGTH, START_GROUP, END_GROUP, FIXED32 = range(6)
MAX_DEPTH = 100
#: A varint holds at most 64 bits: ten bytes of seven.
MAX_VARINT_BYTES = 10


class WireError(ValueError):
    """The bytes are not the protobuf message they claim to be; the text says where."""


@dataclass(frozen=True)
class Field:
    number: int
    wire: int
    #: The varint or fixed value (as an unsigned integer), or None for a payload.
    value: int | None
    payload: memoryview | None


def varint(data: memoryview, position: int) -> tuple[int, int]:
    """(value, position after it); a varint past the end or over 64 bits is an error."""
    value = 0
    for shift in range(MAX_VARINT_BYTES):
        if position + shift >= len(data):
            raise WireError("a varint runs past the end of its message")
        byte = data[position + shift]
        value |= (byte & 0x7F) << (7 * shift)
        if byte < 0x80:
            if value >> 64:
                raise WireError("a varint is over 64 bits")
            return value, position + shift + 1
    raise WireError("a varint is over 10 bytes long")


_FIXED = {FIXED64: struct.Struct("<Q"), FIXED32: struct.Struct("<I")}


def fields(data: memoryview, depth: int = 0) -> Iterator[Field]:
    """Every field of one message, in file order."""
    if depth > MAX_DEPTH:
        raise WireError(f"messages nest deeper than {MAX_DEPTH} levels")
    position = 0
    while position < len(data):
        tag, position = varint(data, position)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise WireError("a field has number 0")
        if wire in (START_GROUP, END_GROUP):
            raise WireError("it uses protobuf groups, which TensorFlow never writes")
        field, position = _field(data, position, number, wire)
        yield field


def _field(data: memoryview, position: int, number: int, wire: int) -> tuple[Field, int]:
    if wire == VARINT:
        value, position = varint(data, position)
        return Field(number, wire, value, None), position
    if wire in _FIXED:
        size = _FIXED[wire].size
        if position + size > len(data):
            raise WireError(f"field {number} runs past the end of its message")
        (value,) = _FIXED[wire].unpack_from(data, position)
        return Field(number, wire, value, None), position + size
    if wire != LENGTH:
        raise WireError(f"field {number} has wire type {wire}, which protobuf does not define")
    length, position = varint(data, position)
    if length > len(data) - position:
        raise WireError(
            f"field {number} claims {length:,} bytes, past the end of its message "
            f"({len(data) - position:,} left)"
        )
    return Field(number, wire, None, data[position : position + length]), position + length


def message(field: Field, depth: int) -> Iterator[Field]:
    """The fields of a nested message, one level deeper."""
    return fields(payload(field), depth + 1)


def payload(field: Field) -> memoryview:
    if field.payload is None:
        raise WireError(f"field {field.number} should be length-delimited")
    return field.payload


def number(field: Field) -> int:
    if field.value is None:
        raise WireError(f"field {field.number} should be a number")
    return field.value


def signed(value: int) -> int:
    """An int64 field's varint (two's complement in 64 bits)."""
    return value - (1 << 64) if value >> 63 else value


def text(field: Field) -> str:
    try:
        return bytes(payload(field)).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(f"field {field.number} is not UTF-8 text") from exc


def packed_varints(field: Field) -> Iterator[int]:
    """A repeated varint field, packed (one payload) or not (one value)."""
    if field.wire == VARINT:
        yield number(field)
        return
    data, position = payload(field), 0
    while position < len(data):
        value, position = varint(data, position)
        yield value
