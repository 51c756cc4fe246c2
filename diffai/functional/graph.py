"""What an ONNX graph needs before ONNX Runtime may run it, read without running it.

ONNX Runtime runs whatever operators a graph names and opens whatever external
data files its tensors point at. So before a session is made, the whole file
is walked with diffai's own protobuf walker (``diffai.formats.onnx.wire``):
every node of every graph (subgraphs, model-local functions, training graphs)
must use a standard operator domain or a function the model itself defines
from them, and every tensor anywhere (initializers, sparse initializers, node
attributes) that keeps its bytes outside the file must name a regular file
inside the model's folder (``diffai.formats.onnx.external``, the reader's own
check). A graph that fails either is refused before anything runs.

The same walk gives the declared input and output signature the probes are
built from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from diffai.errors import MalformedModel
from diffai.formats.limits import MAX_DIMS
from diffai.formats.mapped import map_bytes
from diffai.formats.onnx.external import ExternalFiles
from diffai.formats.onnx.graph import MAX_GRAPH_ITEMS, MAX_SUBGRAPH_DEPTH
from diffai.formats.onnx.schemas import OPSET
from diffai.formats.onnx.tensors import EXTERNAL, NOT_READ, TYPES, _entries
from diffai.formats.onnx.wire import LENGTH, VARINT, Message, OnnxProblem, Schema

#: The operator domains of the ONNX standard, which ONNX Runtime implements and tests
#: against the standard's conformance suite.
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
#: ONNX Runtime's own contrib operators: allowed only when the policy says so.
CONTRIB_DOMAIN = "com.microsoft"
#: Larger declared sizes (or negative ones) are read as unknown.
MAX_DIM = 1 << 31
#: Named dims are at most this long in a message.
SHOWN = 60

_V, _L = frozenset({VARINT}), frozenset({LENGTH})
MODEL = Schema(
    "ModelProto",
    {7: ("graph", _L), 8: ("opset_import", _L), 20: ("training_info", _L), 25: ("functions", _L)},
    frozenset({"opset_import", "training_info", "functions"}),
)
GRAPH = Schema(
    "GraphProto",
    {1: ("node", _L), 5: ("initializer", _L), 11: ("input", _L), 12: ("output", _L),
     15: ("sparse_initializer", _L)},
    frozenset({"node", "initializer", "input", "output", "sparse_initializer"}),
)  # fmt: skip
NODE = Schema(
    "NodeProto",
    {1: ("input", _L), 4: ("op_type", _L), 5: ("attribute", _L), 7: ("domain", _L)},
    frozenset({"input", "attribute"}),
)
ATTRIBUTE = Schema(
    "AttributeProto",
    {1: ("name", _L), 5: ("t", _L), 6: ("g", _L), 10: ("tensors", _L), 11: ("graphs", _L),
     22: ("sparse_tensor", _L), 23: ("sparse_tensors", _L)},
    frozenset({"tensors", "graphs", "sparse_tensors"}),
)  # fmt: skip
TENSOR = Schema(
    "TensorProto",
    {1: ("dims", frozenset({VARINT, LENGTH})), 8: ("name", _L), 13: ("external_data", _L),
     14: ("data_location", _V)},
    frozenset({"dims", "external_data"}),
)  # fmt: skip
SPARSE = Schema("SparseTensorProto", {1: ("values", _L), 2: ("indices", _L)})
FUNCTION = Schema(
    "FunctionProto",
    {1: ("name", _L), 7: ("node", _L), 10: ("domain", _L)},
    frozenset({"node"}),
)
TRAINING = Schema("TrainingInfoProto", {1: ("initialization", _L), 2: ("algorithm", _L)})
VALUE_INFO = Schema("ValueInfoProto", {1: ("name", _L), 2: ("type", _L)})
TYPE = Schema(
    "TypeProto",
    {1: ("tensor_type", _L), 4: ("sequence_type", _L), 5: ("map_type", _L),
     8: ("sparse_tensor_type", _L), 9: ("optional_type", _L)},
)  # fmt: skip
TENSOR_TYPE = Schema("TypeProto.Tensor", {1: ("elem_type", _V), 2: ("shape", _L)})
SHAPE = Schema("TensorShapeProto", {1: ("dim", _L)}, frozenset({"dim"}))
DIM = Schema("Dimension", {1: ("dim_value", _V), 2: ("dim_param", _L)})

#: A declared axis: its size, the name of a symbolic one, or None (unknown).
Dim = int | str | None


@dataclass(frozen=True)
class Port:
    """One declared graph input or output: name, diffai dtype name (None: not a tensor)."""

    name: str
    dtype: str | None
    dims: tuple[Dim, ...] | None
    kind: str = "tensor"

    def described(self) -> str:
        if self.dtype is None:
            return f"{self.name} ({self.kind})"
        shown = "x".join("?" if d is None else str(d)[:SHOWN] for d in self.dims or ())
        return f"{self.name} {self.dtype}[{shown}]"


@dataclass(frozen=True)
class Signature:
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    #: Integer inputs that index an embedding table (``Gather`` of an initializer on axis 0):
    #: the table's rows, the vocabulary their token ids must stay within.
    vocabularies: dict[str, int] = field(default_factory=dict)


@dataclass
class _Walk:
    allowed: frozenset[str]
    functions: frozenset[tuple[str, str]]
    external: ExternalFiles
    items: int = 0

    def counted(self) -> None:
        self.items += 1
        if self.items > MAX_GRAPH_ITEMS:
            raise OnnxProblem(f"its graphs hold over {MAX_GRAPH_ITEMS:,} nodes and attributes")


def admit(path: Path, allow_contrib: bool = False) -> Signature:
    """The model's signature, once its whole file passed the checks above; else refused
    (``MalformedModel`` naming the operator or the tensor; nothing was run)."""
    if path.stat().st_size == 0:
        raise MalformedModel(path, "the ONNX file is empty")
    data = map_bytes(path)
    try:
        model = Message(memoryview(data), 0, data.size, MODEL)
        if not model.has("graph"):
            raise OnnxProblem("the ONNX model holds no graph")
        graph = model.child(model.one("graph"), GRAPH)
        _check_model(path, model, graph, allow_contrib)
        inputs = _ports(graph, "input", _initializer_names(graph))
        return Signature(inputs, _ports(graph, "output"), _vocabularies(graph, inputs))
    except OnnxProblem as exc:
        raise MalformedModel(path, f"{exc}; refused before running it") from None


def _check_model(path: Path, model: Message, graph: Message, allow_contrib: bool) -> None:
    allowed = STANDARD_DOMAINS | ({CONTRIB_DOMAIN} if allow_contrib else frozenset())
    functions = list(model.children("functions", FUNCTION))
    local = frozenset((f.text("domain"), f.text("name")) for f in functions)
    walk = _Walk(allowed, local, ExternalFiles(path))
    _graph(walk, graph, 0)
    for function in functions:
        for node in function.children("node", NODE):
            _node(walk, node, 1)
    for training in model.children("training_info", TRAINING):
        for key in ("initialization", "algorithm"):
            if training.has(key):
                _graph(walk, training.child(training.one(key), GRAPH), 1)
    for opset in model.children("opset_import", OPSET):
        opset.text("domain")  # UTF-8 checked; an unused import runs nothing


def _graph(walk: _Walk, graph: Message, depth: int) -> None:
    walk.counted()
    if depth > MAX_SUBGRAPH_DEPTH:
        raise OnnxProblem(f"subgraphs nest over {MAX_SUBGRAPH_DEPTH} levels deep")
    for tensor in graph.children("initializer", TENSOR):
        _tensor(walk, tensor)
    for sparse in graph.children("sparse_initializer", SPARSE):
        _sparse(walk, sparse)
    for node in graph.children("node", NODE):
        _node(walk, node, depth)


def _node(walk: _Walk, node: Message, depth: int) -> None:
    walk.counted()
    domain, op_type = node.text("domain"), node.text("op_type")
    if domain not in walk.allowed and (domain, op_type) not in walk.functions:
        raise OnnxProblem(_domain_problem(domain, op_type))
    for attribute in node.children("attribute", ATTRIBUTE):
        walk.counted()
        for key in ("t", "tensors"):
            for tensor in attribute.children(key, TENSOR):
                _tensor(walk, tensor)
        for key in ("sparse_tensor", "sparse_tensors"):
            for sparse in attribute.children(key, SPARSE):
                _sparse(walk, sparse)
        for key in ("g", "graphs"):
            for graph in attribute.children(key, GRAPH):
                _graph(walk, graph, depth + 1)


def _domain_problem(domain: str, op_type: str) -> str:
    what = f"operator {op_type!r:.{SHOWN}} of domain {domain!r:.{SHOWN}}"
    if domain == CONTRIB_DOMAIN:
        return (
            f"it uses {what}, an ONNX Runtime contrib operator; set "
            "regression_test.functional.allow_contrib_ops to run it"
        )
    return f"it uses {what}, which is not a standard ONNX operator domain (custom operators)"


def _tensor(walk: _Walk, tensor: Message) -> None:
    """A tensor whose bytes live elsewhere must name a checked file beside the model."""
    external = tensor.number("data_location") == EXTERNAL or tensor.has("external_data")
    if external:
        walk.external(tensor.text("name") or "(unnamed)", _entries(tensor))


def _sparse(walk: _Walk, sparse: Message) -> None:
    for key in ("values", "indices"):
        if sparse.has(key):
            _tensor(walk, sparse.child(sparse.one(key), TENSOR))


def _vocabularies(graph: Message, inputs: tuple[Port, ...]) -> dict[str, int]:
    integers = {port.name for port in inputs if port.dtype and port.dtype[0] in "iu"}
    rows = {
        t.text("name"): t.int64s("dims", MAX_DIMS) for t in graph.children("initializer", TENSOR)
    }
    found: dict[str, int] = {}
    for node in graph.children("node", NODE):
        if node.text("op_type") != "Gather" or node.text("domain") not in ("", "ai.onnx"):
            continue
        names = [node.decode(field, "input") for field in node.all("input")]
        if len(names) == 2 and names[1] in integers and rows.get(names[0]) and _axis_0(node):
            found.setdefault(names[1], rows[names[0]][0])
    return found


def _axis_0(node: Message) -> bool:
    attributes = list(node.children("attribute", GATHER_ATTRIBUTE))
    return all(a.text("name") != "axis" or a.int64s("i", 1) == [0] for a in attributes)


GATHER_ATTRIBUTE = Schema("AttributeProto", {1: ("name", _L), 3: ("i", _V)})


def _initializer_names(graph: Message) -> frozenset[str]:
    """Inputs that an initializer also fills (IR < 4 lists them) are not the caller's to give."""
    return frozenset(t.text("name") for t in graph.children("initializer", TENSOR))


def _ports(graph: Message, key: str, skip: frozenset[str] = frozenset()) -> tuple[Port, ...]:
    ports = [_port(info) for info in graph.children(key, VALUE_INFO)]
    return tuple(port for port in ports if port.name not in skip)


def _port(info: Message) -> Port:
    name = info.text("name")
    if not info.has("type"):
        return Port(name, None, None, "untyped")
    kind = info.child(info.one("type"), TYPE)
    if not kind.has("tensor_type"):
        held = next((k for k in TYPE.numbers if kind.has(k)), "untyped")
        return Port(name, None, None, held.removesuffix("_type"))
    tensor = kind.child(kind.one("tensor_type"), TENSOR_TYPE)
    code = tensor.number("elem_type")
    dtype = TYPES[code].value if code in TYPES and TYPES[code].stored_as is None else None
    if dtype is None:
        return Port(name, None, None, f"type {NOT_READ.get(code, code)}")
    dims = _dims(tensor.child(tensor.one("shape"), SHAPE)) if tensor.has("shape") else None
    return Port(name, dtype, dims)


def _dims(shape: Message) -> tuple[Dim, ...]:
    return tuple(_dim(dim) for dim in shape.children("dim", DIM))


def _dim(dim: Message) -> Dim:
    if dim.has("dim_value"):
        size = dim.number("dim_value")
        return size if size <= MAX_DIM else None  # a negative size, written as a varint
    return dim.text("dim_param") or None
