"""One ``TensorProto`` as a lazy ``TensorRef``: its data type, where its bytes are, their size.

The values are where the file keeps them: ``raw_data`` (inline or in an external
file), or one typed field (``float_data``, ``int32_data`` ...). Exactly one of
them, of exactly the size the dims call for, or the tensor is refused: the
``onnx`` package would fail on it or, worse, read something else than ONNX
Runtime. Stored units that are the values themselves are mapped in place;
the rest (4-bit pairs, float8 variants, varints) stream through ``values``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from diffai.dtypes import numpy_dtype
from diffai.formats.limits import MAX_DIMS
from diffai.formats.onnx import values
from diffai.formats.onnx.external import KEYS as EXTERNAL_KEYS
from diffai.formats.onnx.schemas import ENTRY, FIXED_WIDTH, TYPED_FIELDS
from diffai.formats.onnx.wire import Message, OnnxProblem
from diffai.model import TensorRef, ValueStream
from diffai.roles import Role

STRING = 8
EXTERNAL = 1


@dataclass(frozen=True)
class OnnxType:
    """How one ``TensorProto.DataType`` is stored and what the statistics see of it."""

    name: str
    #: One stored unit: a packed pair of 4-bit values is one uint8.
    storage: np.dtype
    #: The canonical value dtype (``diffai.dtypes``).
    value: str
    #: The typed field that holds the units when there is no ``raw_data``.
    field: str
    stored_as: str | None = None
    per_unit: int = 1
    unpack: values.Unpack | None = None


def _native(name: str, value: str, field: str) -> OnnxType:
    return OnnxType(name, numpy_dtype(value), value, field)


def _decoded(name: str, storage: type, stored_as: str, unpack: values.Unpack) -> OnnxType:
    return OnnxType(name, np.dtype(storage), "f32", "int32_data", stored_as, 1, unpack)


TYPES: dict[int, OnnxType] = {
    1: _native("FLOAT", "f32", "float_data"),
    2: _native("UINT8", "u8", "int32_data"),
    3: _native("INT8", "i8", "int32_data"),
    4: _native("UINT16", "u16", "int32_data"),
    5: _native("INT16", "i16", "int32_data"),
    6: _native("INT32", "i32", "int32_data"),
    7: _native("INT64", "i64", "int64_data"),
    9: OnnxType("BOOL", np.dtype(np.uint8), "bool", "int32_data", unpack=values.as_bool),
    10: _native("FLOAT16", "f16", "int32_data"),
    11: _native("DOUBLE", "f64", "double_data"),
    12: _native("UINT32", "u32", "uint64_data"),
    13: _native("UINT64", "u64", "uint64_data"),
    14: _native("COMPLEX64", "c64", "float_data"),
    15: _native("COMPLEX128", "c128", "double_data"),
    16: _native("BFLOAT16", "bf16", "int32_data"),
    17: _native("FLOAT8E4M3FN", "f8_e4m3", "int32_data"),
    18: _decoded("FLOAT8E4M3FNUZ", ml_dtypes.float8_e4m3fnuz, "f8_e4m3fnuz", values.as_float32),
    19: _native("FLOAT8E5M2", "f8_e5m2", "int32_data"),
    20: _decoded("FLOAT8E5M2FNUZ", ml_dtypes.float8_e5m2fnuz, "f8_e5m2fnuz", values.as_float32),
    21: OnnxType("UINT4", np.dtype(np.uint8), "u8", "int32_data", "u4", 2, values.nibbles),
    22: OnnxType("INT4", np.dtype(np.uint8), "i8", "int32_data", "i4", 2, values.int4),
    23: OnnxType("FLOAT4E2M1", np.dtype(np.uint8), "f32", "int32_data", "f4_e2m1", 2,
                 values.float4),
    24: _decoded("FLOAT8E8M0", ml_dtypes.float8_e8m0fnu, "f8_e8m0", values.as_float32),
}  # fmt: skip
NOT_READ = {0: "UNDEFINED", 25: "UINT2", 26: "INT2", 27: "FLOAT6E2M3", 28: "FLOAT6E3M2"}

#: The role hint of a tensor, from its value dtype and elements.
RoleHint = Callable[[str, int], "Role | None"]
#: Where an external tensor's bytes are, given its checked ``external_data`` entries.
ExternalBytes = Callable[[str, dict[str, str]], np.ndarray]


@dataclass(frozen=True)
class Tensor:
    """A ``TensorProto`` under the name diffai gives it."""

    name: str
    proto: Message

    def is_string(self) -> bool:
        return self.proto.number("data_type") == STRING


def tensor_ref(
    tensor: Tensor, data: np.ndarray, external: ExternalBytes, hint: RoleHint
) -> TensorRef:
    """``data`` is the whole mapped model file; ``hint(dtype, elements)`` gives the role hint."""
    proto, name = tensor.proto, tensor.name
    kind = _type_of(proto, name)
    shape = _shape(proto, name)
    elements = math.prod(shape)
    units = -(-elements // kind.per_unit)
    source, payload = _payload(tensor, kind, data, external)
    if source in FIXED_WIDTH or source == "raw_data":
        _check_size(name, kind, shape, payload.size, units * kind.storage.itemsize, source)
        pieces = _raw_pieces(payload, kind, elements)
    else:
        counted = values.count_varints(payload)
        _check_size(name, kind, shape, counted, units, source, "values")
        pieces = _varint_pieces(payload, kind, elements)
    reads = {"load": _view(payload, kind, shape)} if pieces is None else {"stream": pieces}
    return TensorRef(
        name, shape, kind.value, **reads, stored_as=kind.stored_as,
        stored_size=units * kind.storage.itemsize if kind.stored_as else None,
        role_hint=hint(kind.value, elements),
    )  # fmt: skip


def _type_of(proto: Message, name: str) -> OnnxType:
    code = proto.number("data_type")
    if code in TYPES:
        return TYPES[code]
    known = f"data type {NOT_READ[code]} ({code})" if code in NOT_READ else f"data type {code}"
    raise OnnxProblem(f"tensor {name!r} has {known}, which diffai does not read")


def _shape(proto: Message, name: str) -> tuple[int, ...]:
    dims = proto.int64s("dims", MAX_DIMS)
    if any(size < 0 for size in dims):
        raise OnnxProblem(f"tensor {name!r} has a negative size in its dims {dims}")
    if proto.has("segment"):
        raise OnnxProblem(f"tensor {name!r} is one segment of a tensor, which ONNX cannot load")
    return tuple(dims)


def _payload(
    tensor: Tensor, kind: OnnxType, data: np.ndarray, external: ExternalBytes
) -> tuple[str, np.ndarray]:
    """Which field holds the units, and its bytes; anything else holding data is refused."""
    proto = tensor.proto
    location = proto.number("data_location")
    if location not in (0, EXTERNAL):
        raise OnnxProblem(f"tensor {tensor.name!r} has data_location {location}, not 0 or 1")
    holders = [name for name in ("raw_data", *TYPED_FIELDS) if proto.has(name)]
    if proto.has("external_data") or location == EXTERNAL:
        holders.append("external_data")
    if location == EXTERNAL and holders == ["external_data"]:
        return "raw_data", external(tensor.name, _entries(proto))
    if len(holders) > 1 or holders not in ([], ["raw_data"], [kind.field]):
        raise OnnxProblem(_holders_problem(tensor.name, kind, holders, location))
    field = proto.one(holders[0]) if holders else None
    span = data[field.start : field.end] if field else data[:0]
    return (holders[0] if holders else kind.field), span


def _holders_problem(name: str, kind: OnnxType, holders: list[str], location: int) -> str:
    if "external_data" in holders and location != EXTERNAL:
        return f"tensor {name!r} has external_data but data_location is not EXTERNAL; ambiguous"
    if len(holders) > 1:
        return f"tensor {name!r} holds its values twice ({' and '.join(holders)}); ambiguous"
    return f"tensor {name!r} ({kind.name}) keeps values in {holders[0]}, where ONNX reads none"


def _entries(proto: Message) -> dict[str, str]:
    entries: dict[str, str] = {}
    for entry in proto.children("external_data", ENTRY):
        key = entry.text("key")
        if key not in EXTERNAL_KEYS:
            raise OnnxProblem(f"external_data has the unknown key {key!r:.60}")
        if key in entries:
            raise OnnxProblem(f"external_data names the key {key!r} twice; ambiguous")
        entries[key] = entry.text("value")
    return entries


def _check_size(
    name: str, kind: OnnxType, shape: tuple[int, ...], found: int | None, needed: int,
    source: str, unit: str = "bytes",
) -> None:  # fmt: skip
    if found != needed:
        held = "malformed varints" if found is None else f"{found:,} {unit}"
        raise OnnxProblem(
            f"tensor {name!r}: {source} holds {held}, but dims {list(shape)} of {kind.name} "
            f"need {needed:,}"
        )


def _view(payload: np.ndarray, kind: OnnxType, shape: tuple[int, ...]) -> Callable[[], np.ndarray]:
    return lambda: payload.view(kind.storage).reshape(shape)


def _raw_pieces(payload: np.ndarray, kind: OnnxType, elements: int) -> ValueStream | None:
    if kind.unpack is None:
        return None
    unpack = kind.unpack

    def stream() -> Iterator[np.ndarray]:
        chunks = values.byte_chunks(payload, kind.storage.itemsize)
        return values.trimmed((unpack(chunk.view(kind.storage)) for chunk in chunks), elements)

    return stream


def _varint_pieces(payload: np.ndarray, kind: OnnxType, elements: int) -> ValueStream:
    bits = np.dtype(f"u{kind.storage.itemsize}")
    unpack = kind.unpack or (lambda units: units)

    def stream() -> Iterator[np.ndarray]:
        # A typed field keeps the low bits of each value (a uint16 for float16, a byte for int4).
        units = (chunk.astype(bits).view(kind.storage) for chunk in values.varint_chunks(payload))
        return values.trimmed((unpack(piece) for piece in units), elements)

    return stream
