"""A frozen GraphDef (``.pb``): its ``Const`` nodes' tensors, named by node (``/`` as ``.``).

GraphDef.node (1) holds NodeDefs: name (1), op (2), attr (5, map entries of key 1
and AttrValue 2); a Const's ``value`` attribute holds a TensorProto (AttrValue
field 8): dtype (1), tensor_shape (2), and the values either as raw
``tensor_content`` (4, little-endian, mapped from the file, never copied) or in
the typed repeated field of its dtype. As TensorFlow's ``Tensor::FromProto``
does, fewer typed values than elements repeat the last one, and none means
zeros; those values are produced as they stream, so a claimed 2**40 elements
costs nothing until the byte budget refuses them. A field that may appear once
appearing twice (protobuf keeps the last) and two nodes of one name (TensorFlow
refuses the graph) are refused as ambiguous.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from diffai.dtypes import numpy_dtype
from diffai.errors import MalformedModel
from diffai.formats.limits import MAX_TENSORS
from diffai.formats.tensorflow import protobuf as pb
from diffai.formats.tensorflow.bundle import FORMAT, tensor_shape
from diffai.formats.tensorflow.dtypes import DT_STRING, dtype_name
from diffai.model import CHUNK_ELEMENTS, Model, TensorRef

NODE, NAME, OP, ATTR = 1, 1, 2, 5
TENSOR_ATTR = 8
T_DTYPE, T_SHAPE, T_CONTENT = 1, 2, 4
#: The TensorProto field holding each dtype's typed values, and how each value is encoded.
TYPED_FIELDS = {
    "f32": (5, "<f4"), "f64": (6, "<f8"), "f16": (13, "varint"), "bf16": (13, "varint"),
    "i32": (7, "varint"), "i16": (7, "varint"), "i8": (7, "varint"), "u8": (7, "varint"),
    "u16": (7, "varint"), "i64": (10, "varint"), "bool": (11, "varint"),
    "u32": (16, "varint"), "u64": (17, "varint"),
}  # fmt: skip
SINGULAR = frozenset({T_DTYPE, T_SHAPE, T_CONTENT})


def read_graph(path: Path, data: memoryview) -> Model:
    tensors: dict[str, TensorRef] = {}
    try:
        for field in pb.fields(data):
            if field.number == NODE:
                ref = _node(path, field)
                if ref is not None:
                    _add(path, tensors, ref)
    except pb.WireError as exc:
        raise MalformedModel(path, f"not a readable TensorFlow GraphDef: {exc}") from exc
    return Model(str(path), FORMAT, len(data), tensors, metadata={"layout": "frozen graph"})


def _add(path: Path, tensors: dict[str, TensorRef], ref: TensorRef) -> None:
    if ref.name in tensors:
        raise MalformedModel(path, f"two nodes are named {ref.name!r}, which TensorFlow refuses")
    if len(tensors) >= MAX_TENSORS:
        raise MalformedModel(path, f"it holds over {MAX_TENSORS:,} Const nodes")
    tensors[ref.name] = ref


def _node(path: Path, node: pb.Field) -> TensorRef | None:
    name, op, value = "", "", None
    for field in pb.message(node, 0):
        if field.number == NAME:
            name = pb.text(field)
        elif field.number == OP:
            op = pb.text(field)
        elif field.number == ATTR:
            value = _value_attr(field) or value
    if op != "Const" or value is None:
        return None
    return _const(path, name.replace("/", "."), value)


def _value_attr(entry: pb.Field) -> pb.Field | None:
    """The TensorProto of a ``value`` attribute, else None."""
    parts = {field.number: field for field in pb.message(entry, 1)}
    if 1 not in parts or pb.text(parts[1]) != "value" or 2 not in parts:
        return None
    return next((f for f in pb.message(parts[2], 2) if f.number == TENSOR_ATTR), None)


def _const(path: Path, name: str, proto: pb.Field) -> TensorRef | None:
    singular: dict[int, pb.Field] = {}
    typed: list[pb.Field] = []
    for field in pb.message(proto, 3):
        if field.number in SINGULAR:
            if field.number in singular:
                raise MalformedModel(
                    path, f"Const {name!r} gives field {field.number} twice; refused as ambiguous"
                )
            singular[field.number] = field
        else:
            typed.append(field)
    number = pb.number(singular[T_DTYPE]) if T_DTYPE in singular else 0
    if number == DT_STRING:
        return None
    dtype = dtype_name(path, name, number)
    shape = tensor_shape(singular[T_SHAPE]) if T_SHAPE in singular else ()
    if T_CONTENT in singular:
        return _content(path, name, dtype, shape, pb.payload(singular[T_CONTENT]))
    values = _typed(dtype, typed)
    return TensorRef(name, shape, dtype, stream=lambda: _filled(values, shape, dtype))


def _content(
    path: Path, name: str, dtype: str, shape: tuple[int, ...], raw: memoryview
) -> TensorRef:
    view = numpy_dtype(dtype)
    expected = int(np.prod(shape, dtype=object)) * view.itemsize
    if len(raw) != expected:
        raise MalformedModel(
            path, f"Const {name!r}: its tensor_content is {len(raw):,} bytes, but its shape and "
            f"dtype take {expected:,}",
        )  # fmt: skip
    return TensorRef(name, shape, dtype, load=lambda: np.frombuffer(raw, view).reshape(shape))


def _typed(dtype: str, fields: list[pb.Field]) -> np.ndarray:
    """The dtype's own repeated field, packed or not; other fields are not its values."""
    number, encoding = TYPED_FIELDS[dtype]
    mine = [field for field in fields if field.number == number]
    if encoding == "varint":
        values = [value for field in mine for value in pb.packed_varints(field)]
        return _from_varints(values, dtype)
    parts = [_fixed(field, np.dtype(encoding)) for field in mine]
    return (
        np.concatenate(parts).astype(numpy_dtype(dtype))
        if parts
        else np.empty(0, numpy_dtype(dtype))
    )


def _fixed(field: pb.Field, encoding: np.dtype) -> np.ndarray:
    """Packed (one payload of whole values) or one fixed-width value."""
    if field.payload is None:
        return np.array([pb.number(field)], f"<u{encoding.itemsize}").view(encoding)
    if len(field.payload) % encoding.itemsize:
        raise pb.WireError(f"packed field {field.number} is not a whole number of values")
    return np.frombuffer(field.payload, encoding)


def _from_varints(values: list[int], dtype: str) -> np.ndarray:
    """Varints as the dtype: ints in two's complement, f16 and bf16 as their 16-bit patterns."""
    target = numpy_dtype(dtype)
    if dtype in ("f16", "bf16"):
        return np.array([v & 0xFFFF for v in values], np.uint16).view(target)
    bits = 8 * target.itemsize
    wrapped = [v & ((1 << bits) - 1) for v in values]
    if dtype == "bool":
        return np.array([v != 0 for v in wrapped], np.bool_)
    unsigned = np.array(wrapped, np.dtype(f"<u{target.itemsize}"))
    return unsigned.view(target) if target.kind == "i" else unsigned


def _filled(values: np.ndarray, shape: tuple[int, ...], dtype: str) -> Iterator[np.ndarray]:
    """The values, then the last of them (or zeros) up to the shape's elements."""
    elements = int(np.prod(shape, dtype=object))
    given = values[:elements]
    yield given
    rest = elements - given.size
    fill = given[-1] if given.size else np.zeros((), numpy_dtype(dtype))
    for start in range(0, rest, CHUNK_ELEMENTS):
        yield np.full(min(CHUNK_ELEMENTS, rest - start), fill, numpy_dtype(dtype))
