"""Just enough FlatBuffers to read a TFLite model, with every offset and length bounded.

Not the ``flatbuffers`` package: its Python runtime has no verifier (only the C++
one does) and follows whatever offsets the bytes hold. Here:

- every read is checked against the end of the file before it is made;
- an offset to a table, vector or string (unsigned, relative to where it is
  stored) must point forward, past itself, so no chain of them can loop, and
  nothing here recurses on the file's data;
- a table's vtable (found through a signed offset) must lie in the file, and
  each field must lie inside its table's inline size;
- a vector's length times its element size must fit in the bytes after it,
  checked before anything is built per element.

A FlatBuffer starts with the root table's offset, then (TFLite) the file
identifier ``TFL3``. A table starts with a signed offset back (or forward) to its
vtable: u16 vtable size, u16 table size, then one u16 offset per field (0: absent).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np


class FlatError(ValueError):
    """The bytes break FlatBuffers' layout; the reader turns it into ``MalformedModel``."""


def _unpack(data: memoryview, fmt: str, position: int, what: str) -> int:
    size = struct.calcsize(fmt)
    if position < 0 or position + size > len(data):
        raise FlatError(f"{what} at byte {position:,} is past the end of the file")
    return struct.unpack_from(fmt, data, position)[0]


def follow(data: memoryview, position: int, what: str) -> int:
    """Where the unsigned offset stored at ``position`` points."""
    offset = _unpack(data, "<I", position, what)
    if offset == 0:
        raise FlatError(f"{what} at byte {position:,} points at itself")
    target = position + offset
    if target >= len(data):
        raise FlatError(f"{what} at byte {position:,} points to byte {target:,}, past the end")
    return target


@dataclass(frozen=True)
class Table:
    data: memoryview
    position: int
    fields: tuple[int, ...]  # each field's offset in the table, 0 when absent
    size: int
    what: str

    def field(self, index: int, width: int) -> int | None:
        """The absolute position of a field ``width`` bytes wide, or None when absent."""
        offset = self.fields[index] if index < len(self.fields) else 0
        if offset == 0:
            return None
        if offset < 4 or offset + width > self.size:
            raise FlatError(f"{self.what}: field {index} lies outside its table")
        return self.position + offset

    def scalar(self, index: int, fmt: str, default: int | float) -> int | float:
        position = self.field(index, struct.calcsize(fmt))
        return default if position is None else _unpack(self.data, fmt, position, self.what)

    def table(self, index: int, what: str) -> Table | None:
        position = self.field(index, 4)
        return (
            None
            if position is None
            else table_at(self.data, follow(self.data, position, what), what)
        )

    def vector(self, index: int, element_size: int, what: str) -> tuple[int, int]:
        """(position of the first element, length) of a vector field; (0, 0) when absent."""
        position = self.field(index, 4)
        if position is None:
            return 0, 0
        start = follow(self.data, position, what)
        length = _unpack(self.data, "<I", start, f"the length of {what}")
        if length * element_size > len(self.data) - start - 4:
            raise FlatError(
                f"{what} claims {length:,} elements of {element_size} bytes at byte {start:,}, "
                "past the end of the file"
            )
        return start + 4, length

    def tables(self, index: int, what: str) -> list[Table]:
        start, length = self.vector(index, 4, what)
        return [
            table_at(self.data, follow(self.data, start + 4 * i, what), f"{what} {i}")
            for i in range(length)
        ]

    def numbers(self, index: int, dtype: str, what: str) -> np.ndarray:
        """A vector of numbers, as a (read-only) view of the file."""
        item = np.dtype(dtype)
        start, length = self.vector(index, item.itemsize, what)
        return np.frombuffer(self.data, item, length, start) if length else np.empty(0, item)

    def raw(self, index: int, what: str) -> memoryview:
        start, length = self.vector(index, 1, what)
        return self.data[start : start + length]

    def text(self, index: int, what: str) -> str:
        try:
            return str(self.raw(index, what), "utf-8")
        except UnicodeDecodeError as exc:
            raise FlatError(f"{what} is not UTF-8 ({exc.reason})") from exc


def table_at(data: memoryview, position: int, what: str) -> Table:
    vtable = position - _unpack(data, "<i", position, what)
    vtable_size = _unpack(data, "<H", vtable, f"the vtable of {what}")
    table_size = _unpack(data, "<H", vtable + 2, f"the vtable of {what}")
    if vtable_size < 4 or vtable_size % 2 or vtable + vtable_size > len(data):
        raise FlatError(f"{what}: its vtable at byte {vtable:,} is malformed or past the end")
    if table_size < 4 or position + table_size > len(data):
        raise FlatError(f"{what}: the table at byte {position:,} runs past the end of the file")
    count = (vtable_size - 4) // 2
    fields = struct.unpack_from(f"<{count}H", data, vtable + 4)
    return Table(data, position, fields, table_size, what)


def root(data: memoryview, what: str) -> Table:
    return table_at(data, follow(data, 0, f"the offset of {what}"), what)
