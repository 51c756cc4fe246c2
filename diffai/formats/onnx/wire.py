"""Protobuf's wire format, walked in place over a memory-mapped file: fields as byte spans.

Nothing is copied or decoded until asked for: a 2 GB ``raw_data`` is two integers
here. Each message kind has a ``Schema`` naming the fields diffai uses, with the
wire types protobuf writes for them; every other field is skipped by its length.
Where protobuf's own parser would quietly pick one reading (a singular field
written twice: the last scalar wins, two sub-messages merge; a known field with
a foreign wire type: kept as an unknown field), this parser refuses the file, so
diffai never judges other values than the ``onnx`` package and ONNX Runtime load.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
_FIXED_SIZES = {FIXED64: 8, FIXED32: 4}
_WIRE_NAMES = {VARINT: "varint", FIXED64: "fixed64", LENGTH: "length-delimited", FIXED32: "fixed32"}
#: Protobuf's largest field number.
MAX_FIELD_NUMBER = (1 << 29) - 1
_U64 = (1 << 64) - 1


class OnnxProblem(ValueError):
    """The file breaks protobuf's wire format or ONNX's rules, or uses them ambiguously; the
    message says how, and the reader turns it into ``MalformedModel``."""


class Field(NamedTuple):
    """One field: a varint's value (``start`` = ``end``), or the span of its payload."""

    number: int
    wire: int
    value: int
    start: int
    end: int


@dataclass(frozen=True)
class Schema:
    """The fields of one message kind that diffai reads: number -> (name, wire types)."""

    what: str
    fields: dict[int, tuple[str, frozenset[int]]]
    repeated: frozenset[str] = frozenset()

    @cached_property
    def numbers(self) -> dict[str, int]:
        return {name: number for number, (name, _) in self.fields.items()}


def varint(buf: memoryview, position: int, end: int) -> tuple[int, int]:
    """The varint at ``position`` and the position after it."""
    if position < end and buf[position] < 0x80:  # most tags and lengths: one byte
        return buf[position], position + 1
    value = shift = 0
    while position < end and shift < 70:
        byte = buf[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value & _U64, position
        shift += 7
    problem = "is longer than 10 bytes" if shift >= 70 else "runs past the end of its message"
    raise OnnxProblem(f"a varint {problem}")


def fields(buf: memoryview, start: int, end: int) -> Iterator[Field]:
    """The fields of the message in ``buf[start:end]``, each checked to end inside it.

    The hot loop of the reader (every node of a graph passes here), hence one function.
    """
    position = start
    while position < end:
        tag, position = varint(buf, position, end)
        number, wire = tag >> 3, tag & 7
        if not 0 < number <= MAX_FIELD_NUMBER:
            raise OnnxProblem(f"field number {number} is not a protobuf field number")
        if wire == VARINT:
            value, position = varint(buf, position, end)
            yield Field(number, wire, value, position, position)
            continue
        if wire == LENGTH:
            size, position = varint(buf, position, end)
        elif wire in _FIXED_SIZES:
            size = _FIXED_SIZES[wire]
        else:
            kind = "a group, which ONNX never writes" if wire in (3, 4) else "not a wire type"
            raise OnnxProblem(f"field {number} has wire type {wire} ({kind})")
        if size > end - position:
            raise OnnxProblem(
                f"field {number} claims {size:,} bytes, but only {end - position:,} are left "
                "in its message"
            )
        yield Field(number, wire, size, position, position + size)
        position += size


class Message:
    """The fields of one message that its ``Schema`` names, by name, in file order.

    Singular fields are kept; repeated ones are only counted and walked again when
    asked for, so a message of fifty million empty entries costs a counter, not
    fifty million objects.
    """

    def __init__(self, buf: memoryview, start: int, end: int, schema: Schema) -> None:
        self.buf, self.start, self.end, self.schema = buf, start, end, schema
        self._first: dict[str, Field] = {}
        self._counts: dict[str, int] = {}
        for field in fields(buf, start, end):
            known = schema.fields.get(field.number)
            if known is not None:
                self._keep(known, field)

    def _keep(self, known: tuple[str, frozenset[int]], field: Field) -> None:
        name, wires = known
        if field.wire not in wires:
            expected = " or ".join(sorted(_WIRE_NAMES[w] for w in wires))
            raise OnnxProblem(
                f"{self.schema.what}.{name} is written as {_WIRE_NAMES[field.wire]}, not "
                f"{expected} as ONNX writers write it; refused"
            )
        if name not in self._first:
            self._first[name] = field
        elif name not in self.schema.repeated:
            raise OnnxProblem(
                f"{self.schema.what}.{name} is written twice (protobuf would keep or merge "
                "one silently); refused as ambiguous"
            )
        self._counts[name] = self._counts.get(name, 0) + 1

    def has(self, name: str) -> bool:
        return name in self._first

    def count(self, name: str) -> int:
        return self._counts.get(name, 0)

    def one(self, name: str) -> Field | None:
        """A singular field (or the first of a repeated one)."""
        return self._first.get(name)

    def all(self, name: str) -> Iterator[Field]:
        """Every occurrence of ``name`` in file order (walked again when there are several)."""
        count = self._counts.get(name, 0)
        if count == 1:
            yield self._first[name]
        elif count:
            number = self.schema.numbers[name]
            yield from (f for f in fields(self.buf, self.start, self.end) if f.number == number)

    def child(self, field: Field, schema: Schema) -> Message:
        return Message(self.buf, field.start, field.end, schema)

    def children(self, name: str, schema: Schema) -> Iterator[Message]:
        return (self.child(field, schema) for field in self.all(name))

    def number(self, name: str, default: int = 0) -> int:
        field = self.one(name)
        return default if field is None else field.value

    def text(self, name: str) -> str:
        field = self.one(name)
        return "" if field is None else self.decode(field, name)

    def first_text(self, name: str) -> str:
        """The first of a repeated string (a node's first output), "" when there is none."""
        field = self._first.get(name)
        return "" if field is None else self.decode(field, name)

    def decode(self, field: Field, name: str) -> str:
        try:
            return str(self.buf[field.start : field.end], "utf-8")
        except UnicodeDecodeError as exc:
            raise OnnxProblem(f"{self.schema.what}.{name} is not UTF-8 ({exc.reason})") from exc

    def int64s(self, name: str, limit: int) -> list[int]:
        """A repeated int64, packed or not (protobuf reads both), as signed values."""
        values: list[int] = []
        for field in self.all(name):
            if field.wire == VARINT:
                values.append(field.value)
            else:
                values.extend(self._packed_varints(field, limit - len(values)))
            if len(values) > limit:
                raise OnnxProblem(f"{self.schema.what}.{name} holds over {limit:,} values")
        return [value - (1 << 64) if value >> 63 else value for value in values]

    def _packed_varints(self, field: Field, limit: int) -> Iterator[int]:
        position = field.start
        while position < field.end and limit >= 0:
            value, position = varint(self.buf, position, field.end)
            limit -= 1
            yield value
