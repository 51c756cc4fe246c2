"""TensorFlow Lite (``.tflite``): the constant tensors, dequantized where they are quantized.

The FlatBuffer is parsed by hand (``flatbuf``, every read bounded) along the few
paths of ``schema.fbs`` that hold weights: Model → buffers, subgraphs → tensors
(shape, type, buffer, name, quantization, sparsity). No TensorFlow is needed.

A tensor is constant when its buffer holds bytes: inline (``Buffer.data``), or,
as converters write models over 2 GB, at ``Buffer.offset``/``size`` from the
file's start (used, as TFLite does, when the offset is over 1 and the size
not 0). The bytes must be exactly shape x type. Integer tensors with both scales
and zero points (TFLite ignores the quantization otherwise) stream as f32,
``scale * (q - zero_point)`` computed in float64 and rounded once to f32, which is
what TFLite's Dequantize gives; more than one scale is per axis, along
``quantized_dimension``, one per channel (TFLite's own checks). Stored dtype: the
integer type (``i8``), stored bytes: the buffer's. Other tensors are views of
the map in their own dtype.

Names: subgraph 0's tensors by their names, other subgraphs' under
``<subgraph name or subgraphN>/``; a name twice is refused as ambiguous.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffai.dtypes import numpy_dtype
from diffai.errors import MalformedModel, UnreadableModel
from diffai.formats.limits import MAX_TENSORS
from diffai.formats.mapped import map_bytes
from diffai.formats.tflite.flatbuf import FlatError, Table, root
from diffai.model import CHUNK_ELEMENTS, Model, TensorRef
from diffai.text import one_line

FORMAT = "tflite"
EXTENSIONS = (".tflite",)
IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
#: schema.fbs TensorType -> diffai's dtype names; absent: STRING 5, RESOURCE 13, VARIANT 14,
#: INT4 17 (two to a byte), which diffai does not read.
TENSOR_TYPES = {
    0: "f32", 1: "f16", 2: "i32", 3: "u8", 4: "i64", 6: "bool", 7: "i16", 8: "c64",
    9: "i8", 10: "f64", 11: "c128", 12: "u64", 15: "u32", 16: "u16", 18: "bf16",
}  # fmt: skip
TYPE_NAMES = {5: "STRING", 13: "RESOURCE", 14: "VARIANT", 17: "INT4"}
QUANTIZABLE = {"i8", "u8", "i16", "i32", "i64"}
# Field indexes in schema.fbs.
MODEL_VERSION, MODEL_SUBGRAPHS, MODEL_DESCRIPTION, MODEL_BUFFERS = 0, 2, 3, 4
SUBGRAPH_TENSORS, SUBGRAPH_NAME = 0, 4
BUFFER_DATA, BUFFER_OFFSET, BUFFER_SIZE = 0, 1, 2
TENSOR_SHAPE, TENSOR_TYPE, TENSOR_BUFFER, TENSOR_NAME = 0, 1, 2, 3
TENSOR_QUANTIZATION, TENSOR_SPARSITY = 4, 6
QUANT_SCALE, QUANT_ZERO_POINT, QUANT_DETAILS_TYPE, QUANT_DIMENSION = 2, 3, 4, 6


def matches(path: Path, head: bytes) -> bool:
    return head[4:8] == IDENTIFIER


def read(path: Path) -> Model:
    data = _map(path)
    try:
        model = root(memoryview(data), "the model")
        tensors, metadata = _read_model(model, data)
    except FlatError as exc:
        raise MalformedModel(path, str(exc)) from None
    return Model(
        path=str(path), format=FORMAT, size_bytes=len(data), tensors=tensors, metadata=metadata
    )


def _map(path: Path) -> np.ndarray:
    size = path.stat().st_size
    if size < 8:
        raise MalformedModel(path, f"a TFLite file of {size} bytes is too short for a header")
    try:
        return map_bytes(path)
    except OSError as exc:
        raise UnreadableModel(path, f"cannot map the file: {one_line(exc)}") from exc


def _read_model(model: Table, data: np.ndarray) -> tuple[dict[str, TensorRef], dict[str, object]]:
    version = model.scalar(MODEL_VERSION, "<I", 0)
    if version != SCHEMA_VERSION:
        raise FlatError(f"TFLite schema version {version}, not the {SCHEMA_VERSION} TFLite reads")
    buffers = model.tables(MODEL_BUFFERS, "buffer")
    subgraphs = model.tables(MODEL_SUBGRAPHS, "subgraph")
    tensors: dict[str, TensorRef] = {}
    for index, subgraph in enumerate(subgraphs):
        _add_subgraph(tensors, index, subgraph, buffers, data)
    metadata = {
        "tflite_version": version,
        "description": model.text(MODEL_DESCRIPTION, "the model's description"),
        "subgraphs": len(subgraphs),
    }
    return tensors, metadata


def _add_subgraph(
    tensors: dict[str, TensorRef],
    index: int,
    subgraph: Table,
    buffers: list[Table],
    data: np.ndarray,
) -> None:
    prefix = "" if index == 0 else f"{_subgraph_name(subgraph, index)}/"
    _, count = subgraph.vector(SUBGRAPH_TENSORS, 4, "the tensors")
    if len(tensors) + count > MAX_TENSORS:
        raise FlatError(
            f"it lists {len(tensors) + count:,} tensors, over the limit of {MAX_TENSORS:,}"
        )
    for position, table in enumerate(subgraph.tables(SUBGRAPH_TENSORS, "tensor")):
        constant = _constant(table, position, buffers, data)
        if constant is None:
            continue
        name = prefix + constant.name
        if name in tensors:
            raise FlatError(f"tensor name {name!r} appears twice; refused as ambiguous")
        tensors[name] = constant.ref(name)


def _subgraph_name(subgraph: Table, index: int) -> str:
    return subgraph.text(SUBGRAPH_NAME, f"the name of subgraph {index}") or f"subgraph{index}"


@dataclass(frozen=True)
class _Constant:
    name: str
    shape: tuple[int, ...]
    dtype: str
    values: np.ndarray  # the buffer's bytes
    scales: np.ndarray  # empty when not quantized
    zero_points: np.ndarray
    axis: int

    def ref(self, name: str) -> TensorRef:
        if not self.scales.size:
            dtype, shape, raw = numpy_dtype(self.dtype), self.shape, self.values
            return TensorRef(name, shape, self.dtype, load=lambda: raw.view(dtype).reshape(shape))
        return TensorRef(
            name,
            self.shape,
            "f32",
            stream=self._dequantized,
            stored_as=self.dtype,
            stored_size=self.values.size,
        )

    def _dequantized(self) -> Iterator[np.ndarray]:
        stored = self.values.view(numpy_dtype(self.dtype))
        inner = math.prod(self.shape[self.axis + 1 :])
        scales, zeros = self.scales.astype(np.float64), self.zero_points.astype(np.float64)
        for start in range(0, stored.size, CHUNK_ELEMENTS):
            piece = stored[start : start + CHUNK_ELEMENTS].astype(np.float64)
            channel = (np.arange(start, start + piece.size) // inner) % scales.size
            yield (scales[channel] * (piece - zeros[channel])).astype(np.float32)


def _constant(
    table: Table, position: int, buffers: list[Table], data: np.ndarray
) -> _Constant | None:
    name = table.text(TENSOR_NAME, f"the name of tensor {position}") or f"tensor{position}"
    buffer_index = int(table.scalar(TENSOR_BUFFER, "<I", 0))
    if buffer_index >= len(buffers):
        raise FlatError(
            f"tensor {name!r} names buffer {buffer_index:,}, but the model has {len(buffers):,}"
        )
    raw = _buffer_bytes(buffers[buffer_index], buffer_index, data)
    if raw.size == 0:  # buffer 0 is empty by convention, but TFLite reads it if it is not
        return None  # an activation, an input or an output: computed, not stored
    dtype = _dtype(name, int(table.scalar(TENSOR_TYPE, "<b", 0)))
    shape = _shape(table, name)
    needed = math.prod(shape) * numpy_dtype(dtype).itemsize
    if raw.size != needed:
        raise FlatError(
            f"tensor {name!r}: its buffer holds {raw.size:,} bytes, but shape {list(shape)} "
            f"of {dtype} needs {needed:,}"
        )
    if table.field(TENSOR_SPARSITY, 4) is not None:
        raise FlatError(f"tensor {name!r} is sparse, which diffai does not read yet")
    scales, zeros, axis = _quantization(table, name, dtype, shape)
    return _Constant(name, shape, dtype, raw, scales, zeros, axis)


def _buffer_bytes(buffer: Table, index: int, data: np.ndarray) -> np.ndarray:
    offset = int(buffer.scalar(BUFFER_OFFSET, "<Q", 0))
    size = int(buffer.scalar(BUFFER_SIZE, "<Q", 0))
    if offset > 1 and size > 0:
        if offset + size > data.size:
            raise FlatError(
                f"buffer {index:,} lies at bytes {offset:,} to {offset + size:,}, "
                f"past the end of the file ({data.size:,} bytes)"
            )
        return data[offset : offset + size]
    start, length = buffer.vector(BUFFER_DATA, 1, f"the data of buffer {index:,}")
    return data[start : start + length]


def _dtype(name: str, type_id: int) -> str:
    if type_id in TENSOR_TYPES:
        return TENSOR_TYPES[type_id]
    kind = TYPE_NAMES.get(type_id, f"an unknown type ({type_id})")
    raise FlatError(f"tensor {name!r} holds {kind} data, which diffai does not read")


def _shape(table: Table, name: str) -> tuple[int, ...]:
    sizes = table.numbers(TENSOR_SHAPE, "<i4", f"the shape of tensor {name!r}")
    if (sizes < 0).any():
        raise FlatError(f"tensor {name!r} has shape {sizes.tolist()[:8]}, with a negative size")
    return tuple(int(size) for size in sizes)


def _quantization(
    table: Table, name: str, dtype: str, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, int]:
    """Scales, zero points and axis; empty scales when TFLite would not dequantize it."""
    none = (np.empty(0, np.float32), np.empty(0, np.int64), 0)
    quantization = table.table(TENSOR_QUANTIZATION, f"the quantization of tensor {name!r}")
    if quantization is None or dtype not in QUANTIZABLE:
        return none
    if quantization.scalar(QUANT_DETAILS_TYPE, "<B", 0):
        raise FlatError(f"tensor {name!r} has custom quantization, which diffai does not read")
    scales = quantization.numbers(QUANT_SCALE, "<f4", f"the scales of tensor {name!r}")
    zeros = quantization.numbers(QUANT_ZERO_POINT, "<i8", f"the zero points of tensor {name!r}")
    if not scales.size or not zeros.size:
        return none
    if scales.size != zeros.size:
        raise FlatError(
            f"tensor {name!r} has {scales.size:,} scales and {zeros.size:,} zero points"
        )
    axis = int(quantization.scalar(QUANT_DIMENSION, "<i", 0))
    if scales.size > 1 and not (0 <= axis < len(shape) and shape[axis] == scales.size):
        raise FlatError(
            f"tensor {name!r} has {scales.size:,} scales along axis {axis} of shape {list(shape)}"
        )
    return scales, zeros, axis if scales.size > 1 else 0
