"""GGUF (llama.cpp, Ollama): every tensor with the values inference uses, metadata as scalars.

The header is parsed by hand (``header``: strict, every count checked before it
is used); the file is memory-mapped once. Plain tensors (f32, f16, bf16, f64,
integers) are views of the map; quantized ones (``q8_0``, ``q4_k``, ``iq2_xs`` ...)
stream as f32, dequantized by ``gguf.quants.dequantize`` a bounded run of whole
blocks at a time, so memory stays bounded whatever the tensor's size. The stored
dtype is the ggml type's name and the stored bytes are the blocks' bytes.

Shapes are in C order, as numpy and the ``gguf`` package's views give them: GGUF
lists ``ne[0]`` (the fastest axis) first, so a llama ``blk.0.attn_q.weight`` of
``ne = [4096, 1024]`` has shape ``[1024, 4096]`` here. Names are as stored.

The key/values become scalars under their keys (``general.architecture``,
``llama.context_length`` ...); an array of more than 16 values (the vocabulary)
or a string of more than 256 characters (a chat template) becomes one summary
string, its length and a SHA-256 prefix of its bytes, so a change still shows.

Split files (``model-00001-of-00003.gguf``, with ``split.count``): given the
first, the whole series is read as one model (``splits``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from diffai.dtypes import numpy_dtype
from diffai.errors import MalformedModel, MissingExtra, UnreadableModel
from diffai.formats.gguf import splits
from diffai.formats.gguf.header import GgufError, Header, TensorInfo, parse_header
from diffai.formats.gguf.types import GgmlType
from diffai.formats.mapped import map_bytes
from diffai.model import CHUNK_ELEMENTS, Model, TensorRef
from diffai.text import one_line

if TYPE_CHECKING:
    from diffai.sources import ByteSource, Prefix

FORMAT = "gguf"
EXTENSIONS = (".gguf",)


def matches(path: Path, head: bytes) -> bool:
    return head.startswith(b"GGUF")


def read(path: Path) -> Model:
    return splits.read_series(path, read_one)


def read_one(path: Path) -> Model:
    """One GGUF file, a split of a series included."""
    data = _map(path)
    try:
        header = parse_header(memoryview(data))
    except GgufError as exc:
        raise MalformedModel(path, str(exc)) from None
    _check_dequantizable(path, header)
    return Model(
        path=str(path),
        format=FORMAT,
        size_bytes=len(data),
        tensors={info.name: _tensor_ref(info, data) for info in header.tensors},
        scalars=header.scalars,
        metadata=_metadata(header),
    )


def read_source(source: ByteSource) -> Model:
    """A remote GGUF file: its header parsed from a growing prefix, each tensor streamed from
    its own range (a split series is read only locally: its files are found by name)."""
    from diffai.sources import Prefix

    prefix = Prefix(source)
    try:
        header = parse_header(prefix)  # type: ignore[arg-type]  (slices like a memoryview)
    except GgufError as exc:
        raise MalformedModel(source.name, str(exc)) from None
    _check_dequantizable(source.name, header)
    if int(header.scalars.get(splits.COUNT_KEY, 1) or 1) > 1:  # type: ignore[call-overload]
        raise UnreadableModel(source.name, "a split GGUF series is read only from a local copy")
    tensors = {info.name: _ranged_ref(info, prefix) for info in header.tensors}
    return Model(path=source.name, format=FORMAT, size_bytes=source.size, tensors=tensors,
                 scalars=header.scalars, metadata=_metadata(header))  # fmt: skip


def _ranged_ref(info: TensorInfo, prefix: Prefix) -> TensorRef:
    from diffai.sources import whole_elements

    ggml = info.ggml
    unit = numpy_dtype(ggml.plain).itemsize if ggml.plain is not None else ggml.size

    def pieces() -> Iterator[np.ndarray]:
        raw = whole_elements(prefix.ranges(info.offset, info.offset + info.nbytes), unit)
        return (np.frombuffer(piece, np.uint8) for piece in raw)

    if ggml.plain is not None:
        dtype = numpy_dtype(ggml.plain)
        stream = lambda: (piece.view(dtype) for piece in pieces())  # noqa: E731
        return TensorRef(name=info.name, shape=info.shape, dtype=ggml.plain, stream=stream)
    return TensorRef(
        name=info.name, shape=info.shape, dtype=ggml.values,
        stream=lambda: (values for piece in pieces() for values in _dequantized(piece, ggml)),
        stored_as=ggml.name, stored_size=info.nbytes,
    )  # fmt: skip


def _map(path: Path) -> np.ndarray:
    try:
        return map_bytes(path) if path.stat().st_size else np.empty(0, np.uint8)
    except OSError as exc:
        raise UnreadableModel(path, f"cannot map the file: {one_line(exc)}") from exc


def _metadata(header: Header) -> dict[str, object]:
    return {"gguf_version": header.version, "alignment": header.alignment}


def _tensor_ref(info: TensorInfo, data: np.ndarray) -> TensorRef:
    ggml = info.ggml
    blocks = data[info.offset : info.offset + info.nbytes]
    if ggml.plain is not None:
        dtype = numpy_dtype(ggml.plain)
        return TensorRef(
            name=info.name,
            shape=info.shape,
            dtype=ggml.plain,
            load=lambda: blocks.view(dtype).reshape(info.shape),
        )
    return TensorRef(
        name=info.name,
        shape=info.shape,
        dtype=ggml.values,
        stream=lambda: _dequantized(blocks, ggml),
        stored_as=ggml.name,
        stored_size=info.nbytes,
    )


def _dequantized(blocks: np.ndarray, ggml: GgmlType) -> Iterator[np.ndarray]:
    """Runs of whole blocks, about ``CHUNK_ELEMENTS`` values each, dequantized one at a time."""
    from gguf.quants import dequantize

    step = max(1, CHUNK_ELEMENTS // ggml.block) * ggml.size
    qtype = _quant_type(ggml)
    for start in range(0, len(blocks), step):
        yield dequantize(blocks[start : start + step], qtype).reshape(-1)


def _quant_type(ggml: GgmlType) -> object:
    from gguf.constants import GGMLQuantizationType

    return GGMLQuantizationType[ggml.name.upper()]


def _check_dequantizable(path: str | Path, header: Header) -> None:
    """Refused now, in one line, rather than halfway through the statistics."""
    needed = {info.ggml: info.name for info in header.tensors if info.ggml.plain is None}
    if not needed:
        return
    try:
        from gguf.quants import dequantize
    except ImportError:
        kinds = ", ".join(sorted(ggml.name for ggml in needed))
        raise MissingExtra(
            path, f"dequantizing its {kinds} tensors needs the gguf package", "gguf"
        ) from None
    for ggml, name in needed.items():
        try:
            dequantize(np.zeros(ggml.size, np.uint8), _quant_type(ggml))
        except (NotImplementedError, KeyError):
            raise MalformedModel(
                path,
                f"tensor {name!r} is {ggml.name}, which the gguf package cannot dequantize "
                "(so diffai cannot either)",
            ) from None
