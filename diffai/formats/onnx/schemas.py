"""The parts of ``onnx.proto`` diffai reads, as wire schemas (field numbers from onnx 1.23).

A field not named here is skipped by its length, whatever it holds (value_info,
doc strings, training_info, functions), so its nesting costs nothing.
"""

from __future__ import annotations

from diffai.formats.onnx.wire import FIXED32, LENGTH, VARINT, Schema

_V = frozenset({VARINT})
_L = frozenset({LENGTH})
#: Repeated scalars protobuf accepts packed (one length-delimited run) or one by one.
_INTS = frozenset({VARINT, LENGTH})
_FLOATS = frozenset({FIXED32, LENGTH})

MODEL = Schema(
    "ModelProto",
    {1: ("ir_version", _V), 2: ("producer_name", _L), 3: ("producer_version", _L),
     7: ("graph", _L), 8: ("opset_import", _L)},
    frozenset({"opset_import"}),
)  # fmt: skip
OPSET = Schema("OperatorSetIdProto", {1: ("domain", _L), 2: ("version", _V)})
GRAPH = Schema(
    "GraphProto",
    {1: ("node", _L), 2: ("name", _L), 5: ("initializer", _L), 15: ("sparse_initializer", _L)},
    frozenset({"node", "initializer", "sparse_initializer"}),
)
NODE = Schema(
    "NodeProto",
    {2: ("output", _L), 3: ("name", _L), 4: ("op_type", _L), 5: ("attribute", _L),
     7: ("domain", _L)},
    frozenset({"output", "attribute"}),
)  # fmt: skip
ATTRIBUTE = Schema(
    "AttributeProto",
    {1: ("name", _L), 2: ("f", frozenset({FIXED32})), 3: ("i", _V), 5: ("t", _L), 6: ("g", _L),
     7: ("floats", _FLOATS), 8: ("ints", _INTS), 9: ("strings", _L), 4: ("s", _L),
     10: ("tensors", _L), 11: ("graphs", _L), 20: ("type", _V), 22: ("sparse_tensor", _L),
     23: ("sparse_tensors", _L)},
    frozenset({"floats", "ints", "strings", "tensors", "graphs", "sparse_tensors"}),
)  # fmt: skip
TENSOR = Schema(
    "TensorProto",
    {1: ("dims", _INTS), 2: ("data_type", _V), 3: ("segment", _L), 4: ("float_data", _L),
     5: ("int32_data", _L), 6: ("string_data", _L), 7: ("int64_data", _L), 8: ("name", _L),
     9: ("raw_data", _L), 10: ("double_data", _L), 11: ("uint64_data", _L),
     13: ("external_data", _L), 14: ("data_location", _V)},
    frozenset({"dims", "string_data", "external_data"}),
)  # fmt: skip
ENTRY = Schema("StringStringEntryProto", {1: ("key", _L), 2: ("value", _L)})

#: The typed value fields, packed as one length-delimited run each (what every writer does).
TYPED_FIELDS = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data")
#: Their wire encodings: fixed-width little-endian runs, or varints.
FIXED_WIDTH = {"float_data": 4, "double_data": 8}
