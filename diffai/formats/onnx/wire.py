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

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
_FIXED_SIZES = {FIXED64: 8, FIXED32: 4}
_WIRE_NAMES = {VARINT: "varint", FIXED64: "fixed64", LENGTH: "length-delimited", FIXED32: "fixed32"}
#: Protobuf's largest field number.
MAX_FIELD_NUMBER = (1 << 29) - 1
_U64 = (1 << 64) - 1


class OnnxProblem(ValueError):
    """The file breaks protobuf's wire format or ONNX's rules, or uses them ambiguously; the
    message says how, and the reader turns it into ``MalformedModel``."""


@dataclass(frozen=True, slots=True)
class Field:
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


def varint(buf: memoryview, position: int, end: int) -> tuple[int, int]:
    """The varint at ``position`` and the position after it."""
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
    """The fields of the message in ``buf[start:end]``, each checked to end inside it."""
    position = start
    while position < end:
        tag, position = varint(buf, position, end)
        number, wire = tag >> 3, tag & 7
        if not 0 < number <= MAX_FIELD_NUMBER:
            raise OnnxProblem(f"field number {number} is not a protobuf field number")
        field = _field(buf, number, wire, position, end)
        position = field.end
        yield field


def _field(buf: memoryview, number: int, wire: int, position: int, end: int) -> Field:
    if wire == VARINT:
        value, after = varint(buf, position, end)
        return Field(number, wire, value, after, after)
    if wire == LENGTH:
        length, position = varint(buf, position, end)
        return Field(number, wire, length, position, _checked_end(number, position, length, end))
    if wire in _FIXED_SIZES:
        size = _FIXED_SIZES[wire]
        return Field(number, wire, size, position, _checked_end(number, position, size, end))
    kind = "a group, which ONNX never writes" if wire in (3, 4) else "not a protobuf wire type"
    raise OnnxProblem(f"field {number} has wire type {wire} ({kind})")


def _checked_end(number: int, position: int, length: int, end: int) -> int:
    if length > end - position:
        raise OnnxProblem(
            f"field {number} claims {length:,} bytes, but only {end - position:,} are left "
            "in its message"
        )
    return position + length


class Message:
    """The fields of one message that its ``Schema`` names, by name, in file order."""

    def __init__(self, buf: memoryview, start: int, end: int, schema: Schema) -> None:
        self.buf, self.start, self.end, self.schema = buf, start, end, schema
        self._found: dict[str, list[Field]] = {}
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
        found = self._found.setdefault(name, [])
        if found and name not in self.schema.repeated:
            raise OnnxProblem(
                f"{self.schema.what}.{name} is written twice (protobuf would keep or merge "
                "one silently); refused as ambiguous"
            )
        found.append(field)

    def has(self, name: str) -> bool:
        return name in self._found

    def one(self, name: str) -> Field | None:
        found = self._found.get(name)
        return found[0] if found else None

    def all(self, name: str) -> list[Field]:
        return self._found.get(name, [])

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

    def texts(self, name: str) -> list[str]:
        return [self.decode(field, name) for field in self.all(name)]

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
