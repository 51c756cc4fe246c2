"""ONNX fixtures: the reference reading (the ``onnx`` package's own) and small model builders.

``onnx_reference`` walks a model with ``onnx.load`` and ``numpy_helper.to_array``,
independently of diffai's parser, naming tensors as diffai documents it
(``diffai/formats/onnx/graph.py``): top-level value names, subgraph tensors
under their owning nodes' path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, GraphProto, TensorProto, helper, numpy_helper

#: Constant attributes that hold no tensor diffai measures.
_TEXT = ("value_string", "value_strings")


def onnx_reference(path: Path) -> dict[str, np.ndarray]:
    """Every initializer and Constant value of ``path`` as the onnx package reads it."""
    model = onnx.load(str(path))  # external data loaded from the model's folder
    return dict(_graph_tensors(model.graph, ""))


def _graph_tensors(graph: GraphProto, prefix: str) -> Iterator[tuple[str, np.ndarray]]:
    for initializer in graph.initializer:
        if initializer.data_type != TensorProto.STRING:
            yield prefix + initializer.name, numpy_helper.to_array(initializer)
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant" and node.attribute[0].name not in _TEXT:
            value = helper.get_attribute_value(node.attribute[0])
            array = numpy_helper.to_array(value) if isinstance(value, TensorProto) else value
            dtype = np.float32 if node.attribute[0].name.startswith("value_float") else np.int64
            yield prefix + node.output[0], np.asarray(array, dtype=None if isinstance(
                value, TensorProto) else dtype)  # fmt: skip
        owner = f"{prefix}{node.name or next((o for o in node.output if o), f'#{index}')}/"
        for attribute in node.attribute:
            if attribute.type == AttributeProto.GRAPH:
                yield from _graph_tensors(attribute.g, f"{owner}{attribute.name}/")
            for number, sub in enumerate(attribute.graphs):
                yield from _graph_tensors(sub, f"{owner}{attribute.name}[{number}]/")


def model_of(
    initializers: dict[str, np.ndarray] | list[TensorProto],
    nodes: list[onnx.NodeProto] | None = None,
) -> onnx.ModelProto:
    """A model holding these initializers (arrays or TensorProtos) and nodes, no inputs."""
    tensors = (
        [numpy_helper.from_array(array, name) for name, array in initializers.items()]
        if isinstance(initializers, dict)
        else initializers
    )
    graph = helper.make_graph(nodes or [], "g", [], [], initializer=tensors)
    return helper.make_model(graph, producer_name="diffai-test")


def save(model: onnx.ModelProto, path: Path, external: bool = False) -> Path:
    """Save as the onnx package does; ``external`` puts every tensor in ``<name>.data``."""
    onnx.save_model(
        model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
        location=f"{path.name}.data", size_threshold=0,
    )  # fmt: skip
    return path


def perturbed(source: Path, target: Path, seed: int = 0, scale: float = 1e-3) -> Path:
    """``source`` with every float tensor of more than one element moved a little."""
    model = onnx.load(str(source))
    rng = np.random.default_rng(seed)
    for tensor in _all_tensor_protos(model.graph):
        array = numpy_helper.to_array(tensor)
        if array.dtype.kind == "f" and array.size > 1:
            moved = array + rng.normal(0, scale, array.shape).astype(array.dtype)
            tensor.CopyFrom(numpy_helper.from_array(moved, tensor.name))
    onnx.save(model, str(target))
    return target


def _all_tensor_protos(graph: GraphProto) -> Iterator[TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == AttributeProto.TENSOR:
                yield attribute.t
            if attribute.type == AttributeProto.GRAPH:
                yield from _all_tensor_protos(attribute.g)
            for sub in attribute.graphs:
                yield from _all_tensor_protos(sub)


# --- protobuf by hand, for files no writer makes ------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def field(number: int, payload: bytes | int, wire: int | None = None) -> bytes:
    """One protobuf field: an int as a varint, bytes length-delimited (or ``wire`` forced)."""
    if isinstance(payload, int):
        return varint(number << 3 | (0 if wire is None else wire)) + varint(payload)
    return varint(number << 3 | (2 if wire is None else wire)) + varint(len(payload)) + payload


def tensor_bytes(name: str, dims: list[int], raw: bytes, data_type: int = 1) -> bytes:
    """A TensorProto: dims (unpacked, as onnx writes them), data_type, name, raw_data."""
    return (
        b"".join(field(1, size) for size in dims)
        + field(2, data_type)
        + field(8, name.encode())
        + field(9, raw)
    )


def model_bytes(graph: bytes) -> bytes:
    """A ModelProto: ir_version 8, then the graph."""
    return field(1, 8) + field(7, graph)
