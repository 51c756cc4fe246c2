"""The tensors an ONNX graph holds: initializers and ``Constant`` nodes, subgraphs included.

Names: a top-level initializer or constant keeps its value name (what a torch
export takes from the state dict, so the same weights in safetensors pair with
it). Inside a subgraph (an ``If`` branch, a ``Loop`` or ``Scan`` body, any node's
graph attribute) names are unique only there, so the path of owning nodes comes
first: ``If_0/then_branch/<value name>``, a node named by its name, else its first
output, else ``#<index>``. Two tensors under one name are refused, never merged.

Subgraphs nest at most ``MAX_SUBGRAPH_DEPTH`` deep: protobuf's own parser stops at
100 nested messages, three per subgraph level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from diffai.formats.limits import MAX_TENSORS
from diffai.formats.onnx.schemas import ATTRIBUTE, GRAPH, NODE, TENSOR
from diffai.formats.onnx.tensors import Tensor
from diffai.formats.onnx.wire import LENGTH, Message, OnnxProblem
from diffai.model import TensorRef
from diffai.roles import graph_constant_hint

MAX_SUBGRAPH_DEPTH = 30
#: Values of a ``value_ints``/``value_floats`` written one by one (not packed).
MAX_LISTED_VALUES = 1 << 20
#: Nodes, attributes and graphs of one model, subgraphs included: the largest real graphs
#: (decomposed LLMs) hold about 10**5 nodes, and each item walked costs about 10 us.
MAX_GRAPH_ITEMS = 1_000_000
CONSTANT_DOMAINS = ("", "ai.onnx")
#: Constant attributes that hold no tensor diffai measures.
TEXT_VALUES = ("value_string", "value_strings")
#: AttributeProto.type for each value field: ONNX Runtime reads the field its type names.
ATTRIBUTE_TYPES = {"f": 1, "i": 2, "t": 4, "g": 5, "floats": 6, "ints": 7, "graphs": 10}
#: The field holding each Constant value.
CONSTANT_FIELDS = {
    "value": "t", "value_float": "f", "value_floats": "floats", "value_int": "i",
    "value_ints": "ints",
}  # fmt: skip


@dataclass
class Found:
    """What a walk finds: TensorProtos to build, small constants built already."""

    tensors: list[tuple[Tensor, bool]] = field(default_factory=list)
    built: list[TensorRef] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    skipped_text: int = 0
    items: int = 0

    def walked(self, item: Message) -> Message:
        self.items += 1
        if self.items > MAX_GRAPH_ITEMS:
            raise OnnxProblem(f"its graphs hold over {MAX_GRAPH_ITEMS:,} nodes and attributes")
        return item

    def name(self, name: str) -> str:
        if name in self.names:
            raise OnnxProblem(f"two tensors are named {name!r}; refused as ambiguous")
        if len(self.names) >= MAX_TENSORS:
            raise OnnxProblem(f"it holds over {MAX_TENSORS:,} tensors, the limit")
        self.names.add(name)
        return name


def walk(graph: Message) -> Found:
    found = Found()
    _graph(graph, "", 0, found)
    return found


def _graph(graph: Message, prefix: str, depth: int, found: Found) -> None:
    found.walked(graph)
    if depth > MAX_SUBGRAPH_DEPTH:
        raise OnnxProblem(f"subgraphs nest over {MAX_SUBGRAPH_DEPTH} levels deep")
    if graph.has("sparse_initializer"):
        raise OnnxProblem("it holds a sparse initializer, which diffai does not read yet")
    for initializer in graph.children("initializer", TENSOR):
        name = initializer.text("name")
        if not name:
            raise OnnxProblem("an initializer has no name")
        _add(found, Tensor(found.name(prefix + name), initializer), constant=False)
    for index, node in enumerate(graph.children("node", NODE)):
        _node(found.walked(node), index, prefix, depth, found)


def _add(found: Found, tensor: Tensor, constant: bool) -> None:
    if tensor.is_string():
        found.skipped_text += 1
    else:
        found.tensors.append((tensor, constant))


def _node(node: Message, index: int, prefix: str, depth: int, found: Found) -> None:
    is_constant = node.text("op_type") == "Constant" and node.text("domain") in CONSTANT_DOMAINS
    if is_constant:
        _constant(node, prefix, found)
    owner = f"{prefix}{_label(node, index)}/"
    for attribute in node.children("attribute", ATTRIBUTE):
        name = found.walked(attribute).text("name")
        for held in ("g", "graphs"):
            if attribute.has(held):
                _check_type(attribute, name, held)
        for graph in attribute.children("g", GRAPH):
            _graph(graph, f"{owner}{name}/", depth + 1, found)
        for number, graph in enumerate(attribute.children("graphs", GRAPH)):
            _graph(graph, f"{owner}{name}[{number}]/", depth + 1, found)


def _check_type(attribute: Message, name: str, held: str) -> None:
    """The value field must be the one the attribute's type names: the onnx package reads
    the field, ONNX Runtime the type, and they must not read different things."""
    declared = attribute.number("type")
    if declared != ATTRIBUTE_TYPES[held]:
        raise OnnxProblem(
            f"attribute {name!r:.60} holds {held} but declares type {declared}, not "
            f"{ATTRIBUTE_TYPES[held]}; refused as ambiguous"
        )


def _label(node: Message, index: int) -> str:
    return node.text("name") or node.first_text("output") or f"#{index}"


def _constant(node: Message, prefix: str, found: Found) -> None:
    output = node.first_text("output")
    if not output:
        raise OnnxProblem(f"a Constant node ({node.text('name')!r:.60}) has no output")
    if node.count("attribute") != 1:
        raise OnnxProblem(
            f"Constant {output!r} has {node.count('attribute'):,} attributes, not one value"
        )
    attribute = next(node.children("attribute", ATTRIBUTE))
    kind = attribute.text("name")
    name = found.name(prefix + output)
    if kind in CONSTANT_FIELDS:
        _check_type(attribute, kind, CONSTANT_FIELDS[kind])
    if kind == "value" and attribute.has("t"):
        _add(found, Tensor(name, attribute.child(attribute.one("t"), TENSOR)), constant=True)
    elif kind in LISTED:
        found.built.append(LISTED[kind](attribute, name))
    elif kind in TEXT_VALUES:
        found.skipped_text += 1
    else:
        raise OnnxProblem(f"Constant {output!r} holds {kind!r:.40}, which diffai does not read")


def _float(attribute: Message, name: str) -> TensorRef:
    return _small(name, _floats(attribute, "f"), ())


def _floats_list(attribute: Message, name: str) -> TensorRef:
    array = _floats(attribute, "floats")
    return _small(name, array, array.shape)


def _int(attribute: Message, name: str) -> TensorRef:
    if not attribute.has("i"):
        raise OnnxProblem(f"Constant {name!r} has value_int but no integer")
    return _small(name, np.array(attribute.int64s("i", 1), np.int64).reshape(()), ())


def _ints_list(attribute: Message, name: str) -> TensorRef:
    array = np.array(attribute.int64s("ints", MAX_LISTED_VALUES), np.int64)
    return _small(name, array, array.shape)


def _floats(attribute: Message, key: str) -> np.ndarray:
    if attribute.count(key) > MAX_LISTED_VALUES:
        raise OnnxProblem(f"a Constant's {key} holds over {MAX_LISTED_VALUES:,} values")
    pieces = list(attribute.all(key))
    if any(piece.wire == LENGTH and (piece.end - piece.start) % 4 for piece in pieces):
        raise OnnxProblem(f"a Constant's packed {key} is not a whole number of floats")
    spans = [attribute.buf[piece.start : piece.end] for piece in pieces]
    return np.frombuffer(b"".join(spans), "<f4").astype(np.float32)


def _small(name: str, array: np.ndarray, shape: tuple[int, ...]) -> TensorRef:
    """A constant from an attribute: built now, since the attribute's own bytes bound it."""
    dtype = "f32" if array.dtype == np.float32 else "i64"
    if shape == () and array.size != 1:
        raise OnnxProblem(f"Constant {name!r} holds {array.size} values, not one")
    values = array.reshape(shape)
    hint = graph_constant_hint(dtype, values.size)
    return TensorRef(name, shape, dtype, load=lambda: values, role_hint=hint)


LISTED: dict[str, Callable[[Message, str], TensorRef]] = {
    "value_float": _float, "value_floats": _floats_list,
    "value_int": _int, "value_ints": _ints_list,
}  # fmt: skip
