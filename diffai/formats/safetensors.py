"""Safetensors, parsed strictly by hand and memory-mapped.

Written by hand rather than with ``safetensors.safe_open``: its numpy backend
copies every tensor (about 4x slower here), and this parser refuses more than
the reference one does: duplicate keys, control characters in names, gaps,
overlaps and trailing bytes, all of which hide data a reviewer never sees.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffai.dtypes import numpy_dtype
from diffai.errors import MalformedModel, UnreadableModel
from diffai.formats._opening import mapped_refs
from diffai.formats.limits import check_tensor_count
from diffai.formats.mapped import map_bytes
from diffai.formats.pairmemo import once_per_pair
from diffai.formats.safetensors_header import (
    CONTROL_CHARACTER,
    DTYPES,
    ITEMSIZES,
    METADATA,
    Entries,
    compact_entries,
    encodable,
    entries_of,
)
from diffai.formats.strictjson import DuplicateKey, InvalidJson, loads_strict
from diffai.model import Layout, Model, TensorRef, mapped_view
from diffai.sources.plan import RangeValues
from diffai.text import one_line

if TYPE_CHECKING:
    from diffai.sources import ByteSource

FORMAT = "safetensors"
EXTENSIONS = (".safetensors",)

MAX_HEADER_BYTES = 100 * 1024 * 1024
ENTRY_KEYS = {"dtype", "shape", "data_offsets"}


def matches(path: Path, head: bytes) -> bool:
    """An 8-byte little-endian header length followed by a JSON object."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return header_len >= 2


def read(path: Path) -> Model:
    file_size = path.stat().st_size
    with path.open("rb") as handle:
        read_on = lambda start, end: handle.read(end - start)  # noqa: E731 (read in order)
        header_len, raw = _read_header(path, file_size, read_on)
    data_start = 8 + header_len
    entries = _shared_entries(path, raw, file_size - data_start)
    data = _map_data(path, data_start, file_size - data_start)
    # Each load a partial(mapped_view, data, begin, end, layout): the batched kernel reads the
    # bytes in place. Built in C past TensorRef's __init__ (its fields left out keep their
    # class defaults, elements and nbytes from the layout): see diffai/formats/_opening.c.
    columns = entries.names, entries.layouts, entries.begins, entries.ends
    tensors = mapped_refs(TensorRef, *columns, data, mapped_view)
    return _model(path, file_size, entries.metadata, tensors)


def read_source(source: ByteSource) -> Model:
    """The same strict parse over a byte source (``diffai.sources``: a remote file), each
    tensor streaming exactly its own range, so ``--include`` and ``--shard`` fetch no more."""
    header_len, raw = _read_header(source.name, source.size, source.read)
    data_start = 8 + header_len
    entries = _shared_entries(source.name, raw, source.size - data_start)
    columns = zip(entries.names, entries.layouts, entries.begins, entries.ends, strict=True)
    tensors = {
        name: _streamed_ref(name, layout, source, data_start + begin, data_start + end)
        for name, layout, begin, end in columns
    }
    return _model(source.name, source.size, entries.metadata, tensors)


def _model(path: str | Path, size: int, metadata: dict[str, str],
           tensors: dict[str, TensorRef]) -> Model:  # fmt: skip
    # Its own metadata: a side's columns may be the other's (formats.pairmemo).
    return Model(path=str(path), format=FORMAT, size_bytes=size, tensors=tensors,
                 metadata=dict(metadata))  # fmt: skip


#: Bytes ``start..end``; the header is read in order, so a local file handle just reads on.
ReadAt = Callable[[int, int], bytes]


def _read_header(path: str | Path, file_size: int, read_at: ReadAt) -> tuple[int, bytes]:
    if file_size < 8:
        raise MalformedModel(path, f"safetensors file is {file_size} bytes, too short for a header")
    (header_len,) = struct.unpack("<Q", read_at(0, 8))
    if header_len > MAX_HEADER_BYTES:
        raise MalformedModel(
            path, f"safetensors header claims {header_len} bytes, over the 100 MB limit"
        )
    if 8 + header_len > file_size:
        raise MalformedModel(
            path, f"safetensors header claims {header_len} bytes but the file has {file_size}"
        )
    raw = read_at(8, 8 + header_len)
    # Every entry names its data_offsets: counted in the bytes, before JSON builds a dict each.
    check_tensor_count(path, "safetensors header lists", raw.count(b'"data_offsets"'))
    return header_len, raw


def _shared_entries(path: str | Path, raw: bytes, data_len: int) -> Entries:
    """The entries, parsed once for both sides of a pair whose headers are the same bytes."""
    return once_per_pair((FORMAT, raw, data_len), lambda: _entries(path, raw, data_len))


def _entries(path: str | Path, raw: bytes, data_len: int) -> Entries:
    """Columns straight from a compactly written header, or from the strict parse and its
    checks entry by entry, which also name what is wrong with a header the columns refuse."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedModel(path, f"safetensors header is not UTF-8 ({exc.reason})") from exc
    entries = compact_entries(text, data_len)
    if entries is not None:
        return entries
    header = _parse_header_json(path, text)
    _check_layout(path, _tensor_entries(path, header), data_len)
    return entries_of(header)


def _parse_header_json(path: str | Path, text: str) -> dict[str, Any]:
    try:
        header = loads_strict(text, parse_int=_as_the_library_reads)
    except InvalidJson as exc:
        problem = f"safetensors header is not valid JSON: {one_line(exc)}"
        raise MalformedModel(path, problem) from exc
    except DuplicateKey as exc:
        raise MalformedModel(path, f"safetensors header repeats the key {exc.key!r}") from exc
    if not isinstance(header, dict):
        raise MalformedModel(path, "safetensors header is not a JSON object")
    _check_metadata(path, header.get(METADATA))
    return header


def _as_the_library_reads(digits: str) -> int | float:
    """``-0`` is the float -0.0 to the safetensors library (serde), which then refuses it as a
    size or offset; Python's int 0 would let diffai pass a file the library cannot load."""
    return -0.0 if digits == "-0" else int(digits)


def _check_metadata(path: str | Path, metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise MalformedModel(path, "safetensors __metadata__ must map strings to strings")
    if not encodable(metadata):
        raise MalformedModel(
            path, "safetensors __metadata__ holds a lone surrogate escape (such as \\ud800), "
            "which the safetensors library refuses"
        )  # fmt: skip


def _tensor_entries(path: str | Path, header: dict[str, Any]) -> dict[str, dict[str, Any]]:
    entries = {name: entry for name, entry in header.items() if name != METADATA}
    # One search over all names (0.02 s per 100,000); name by name only to say which one.
    badly_named = CONTROL_CHARACTER.search("".join(entries)) is not None
    for name, entry in entries.items():
        if badly_named:
            _check_name(path, name)
        _check_entry(path, name, entry)
    return entries


def _check_name(path: str | Path, name: str) -> None:
    bad = CONTROL_CHARACTER.search(name)
    if bad:
        raise MalformedModel(
            path, f"tensor name {name!r} contains the control character {bad.group()!r}"
        )


def _check_entry(path: str | Path, name: str, entry: Any) -> None:
    if type(entry) is not dict or entry.keys() != ENTRY_KEYS:
        keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise MalformedModel(
            path,
            f"tensor {name!r}: entry must have exactly dtype, shape, data_offsets (got {keys})",
        )
    if not isinstance(entry["dtype"], str) or entry["dtype"] not in DTYPES:
        raise MalformedModel(path, f"tensor {name!r}: unknown dtype {entry['dtype']!r:.40}")
    shape, offsets = entry["shape"], entry["data_offsets"]
    if not _is_int_list(shape):
        raise MalformedModel(path, f"tensor {name!r}: shape {shape!r} is not a list of sizes")
    if not (_is_int_list(offsets) and len(offsets) == 2 and offsets[0] <= offsets[1]):
        raise MalformedModel(
            path, f"tensor {name!r}: data_offsets {offsets!r} are not [begin, end]"
        )
    expected = math.prod(shape) * ITEMSIZES[entry["dtype"]]
    if offsets[1] - offsets[0] != expected:
        raise MalformedModel(
            path,
            f"tensor {name!r}: {offsets[1] - offsets[0]} bytes of data, but shape {shape} "
            f"of {entry['dtype']} needs {expected}",
        )


def _is_int_list(value: Any) -> bool:
    """A list of non-negative ints (not bools), checked in C: ``map(type)``, then ``min``."""
    return type(value) is list and _INT.issuperset(map(type, value)) and min(value, default=0) >= 0


_INT = frozenset({int})


def _check_layout(path: str | Path, entries: dict[str, dict[str, Any]], data_len: int) -> None:
    """The tensors must tile the data region exactly: no overlap, no gap, nothing after."""
    position, previous = 0, None
    for name, entry in sorted(entries.items(), key=lambda item: tuple(item[1]["data_offsets"])):
        begin, end = entry["data_offsets"]
        if begin < position:
            raise MalformedModel(path, f"tensor {name!r} overlaps tensor {previous!r}")
        if begin > position:
            raise MalformedModel(
                path, f"gap of {begin - position} unaccounted bytes before tensor {name!r}"
            )
        position, previous = end, name
    if position < data_len:
        raise MalformedModel(path, f"{data_len - position} trailing bytes after the last tensor")
    if position > data_len:
        raise MalformedModel(
            path, f"tensor {previous!r} ends at byte {position}, past the data ({data_len} bytes)"
        )


def _map_data(path: Path, offset: int, length: int) -> np.ndarray:
    if length == 0:
        return np.empty(0, dtype=np.uint8)
    try:
        return map_bytes(path, offset, length)
    except OSError as exc:
        raise UnreadableModel(path, f"cannot map the tensor data: {one_line(exc)}") from exc


def _streamed_ref(name: str, layout: Layout, source: ByteSource, begin: int, end: int) -> TensorRef:
    stream = RangeValues(source, begin, end, numpy_dtype(layout.dtype))
    return TensorRef(name=name, shape=layout.shape, dtype=layout.dtype, stream=stream)
