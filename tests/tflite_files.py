"""TFLite files for the tests, built to schema.fbs by a small FlatBuffer writer (no TensorFlow).

``build`` lays a table tree out forward: each table after its vtable, each child
after its parent, so every offset is positive, as flatc's output is valid. Hostile
tests then patch bytes of the result. ``tflite_model`` makes a Model of one subgraph
whose tensors each get a buffer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Scalar:
    fmt: str
    value: int | float


@dataclass
class Numbers:
    fmt: str  # one element, e.g. "<f"
    values: list[Any]


@dataclass
class Blob:
    data: bytes


@dataclass
class Table:
    fields: list[Scalar | Numbers | Blob | Table | Tables | None] = field(default_factory=list)


@dataclass
class Tables:
    items: list[Table]


Node = Numbers | Blob | Table | Tables


def build(root: Table, identifier: bytes = b"TFL3") -> bytes:
    out = bytearray(8)
    out[4:8] = identifier
    struct.pack_into("<I", out, 0, _write(out, root))
    return bytes(out)


def _pad(out: bytearray, alignment: int, ahead: int = 0) -> None:
    out.extend(bytes(-(len(out) + ahead) % alignment))


def _write(out: bytearray, node: Node) -> int:
    if isinstance(node, Table):
        return _table(out, node)
    if isinstance(node, Tables):
        return _tables(out, node)
    raw = (
        node.data + b"\0"
        if isinstance(node, Blob)
        else b"".join(struct.pack(node.fmt, value) for value in node.values)
    )
    count = len(node.data) if isinstance(node, Blob) else len(node.values)
    _pad(out, 16, 4)  # the elements 16-aligned, as TFLite's converter aligns buffers
    position = len(out)
    out.extend(struct.pack("<I", count) + raw)
    return position


def _table(out: bytearray, table: Table) -> int:
    sizes = [
        0 if f is None else struct.calcsize(f.fmt) if isinstance(f, Scalar) else 4
        for f in table.fields
    ]
    offsets, inline = [], 4
    for size in sizes:
        inline += -inline % max(size, 1)
        offsets.append(inline if size else 0)
        inline += size
    _pad(out, 2)
    vtable = len(out)
    out.extend(struct.pack(f"<HH{len(offsets)}H", 4 + 2 * len(offsets), inline, *offsets))
    _pad(out, 8)
    position = len(out)
    out.extend(struct.pack("<i", position - vtable) + bytes(inline - 4))
    children = []
    for value, offset in zip(table.fields, offsets, strict=True):
        if isinstance(value, Scalar):
            struct.pack_into(value.fmt, out, position + offset, value.value)
        elif value is not None:
            children.append((position + offset, value))
    for at, child in children:
        struct.pack_into("<I", out, at, _write(out, child) - at)
    return position


def _tables(out: bytearray, tables: Tables) -> int:
    _pad(out, 4)
    position = len(out)
    out.extend(struct.pack("<I", len(tables.items)) + bytes(4 * len(tables.items)))
    for index, item in enumerate(tables.items):
        at = position + 4 + 4 * index
        struct.pack_into("<I", out, at, _write(out, item) - at)
    return position


# --- TFLite models ---------------------------------------------------------------------------

TYPES = {
    np.dtype(np.float32): 0,
    np.dtype(np.int32): 2,
    np.dtype(np.uint8): 3,
    np.dtype(np.int8): 9,
}


@dataclass
class Constant:
    name: str
    values: np.ndarray
    scales: list[float] = field(default_factory=list)
    zero_points: list[int] = field(default_factory=list)
    axis: int = 0


def tflite_model(constants: list[Constant], activations: int = 1, version: int = 3) -> bytes:
    """Model(version, subgraphs=[tensors], buffers=[empty, one per constant])."""
    buffers = [Table()] + [Table([Blob(c.values.tobytes())]) for c in constants]
    tensors = [_tensor(c, index + 1) for index, c in enumerate(constants)]
    tensors += [_activation(f"act{i}") for i in range(activations)]
    subgraph = Table([Tables(tensors), None, None, None, Blob(b"main")])
    return build(
        Table([Scalar("<I", version), None, Tables([subgraph]), Blob(b"test"), Tables(buffers)])
    )


def _tensor(constant: Constant, buffer: int) -> Table:
    quantization = None
    if constant.scales:
        quantization = Table(
            [None, None, Numbers("<f", constant.scales), Numbers("<q", constant.zero_points),
             None, None, Scalar("<i", constant.axis)]
        )  # fmt: skip
    return Table(
        [Numbers("<i", list(constant.values.shape)), Scalar("<b", TYPES[constant.values.dtype]),
         Scalar("<I", buffer), Blob(constant.name.encode()), quantization]
    )  # fmt: skip


def _activation(name: str) -> Table:
    return Table([Numbers("<i", [1, 4]), Scalar("<b", 0), Scalar("<I", 0), Blob(name.encode())])


def dequantize(constant: Constant) -> np.ndarray:
    """scale x (q - zero point) along the axis, in float64, independently of diffai."""
    shape = [1] * constant.values.ndim
    shape[constant.axis] = len(constant.scales)
    scales = (
        np.array(constant.scales, np.float32)
        .astype(np.float64)
        .reshape(shape if len(constant.scales) > 1 else [])
    )
    zeros = np.array(constant.zero_points, np.float64).reshape(
        shape if len(constant.scales) > 1 else []
    )
    return scales * (constant.values.astype(np.float64) - zeros)
