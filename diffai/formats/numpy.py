"""NumPy ``.npy`` and ``.npz`` files, memory-mapped and never unpickled.

Every array header is parsed and its dtype checked before any data is touched,
so an object array is refused with a message that says why (numpy's own error
only mentions ``allow_pickle``) and pickle never runs. One code path serves
both formats: a ``.npy`` file and an npz member are each "an npy header, then
raw bytes". Stored npz members (``np.savez``) are mapped straight from the
archive; compressed ones (``np.savez_compressed``) are inflated as the statistics
read them, a bounded piece at a time (``zipstream``), so neither opening nor
comparing ever holds a member whole.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from tokenize import TokenError
from typing import IO, TYPE_CHECKING

import numpy as np

from diffai.dtypes import NAMES, canonical_name
from diffai.errors import MalformedModel, UnreadableModel
from diffai.formats.flatten import ROOT_NAME
from diffai.formats.limits import check_tensor_count
from diffai.formats.mapped import map_bytes
from diffai.formats.zipmembers import MEMBER_ERRORS, OPEN_ERRORS, ZipMembers
from diffai.formats.zipstream import member_pieces, spilled
from diffai.model import CHUNK_ELEMENTS, Model, TensorRef
from diffai.sources.plan import RangeValues
from diffai.text import one_line

if TYPE_CHECKING:
    from diffai.sources import ByteSource

FORMAT = "numpy"
EXTENSIONS = (".npy", ".npz")

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
HEADER_LENGTHS = {(1, 0): struct.Struct("<H"), (2, 0): struct.Struct("<I")}
#: numpy's own ``max_header_size``: no legitimate header comes near it.
MAX_HEADER_BYTES = 10_000
MEMBER_SUFFIX = ".npy"
# Version 3.0 only exists for structured dtypes with non-ASCII field names,
# which diffai refuses anyway.
HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}
ZIP_ERRORS = (*MEMBER_ERRORS, *OPEN_ERRORS)


@dataclass(frozen=True)
class _Header:
    """An npy header: what the array is and where its bytes start."""

    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype
    offset: int

    @property
    def data_bytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def matches(path: Path, head: bytes) -> bool:
    """An npy magic string, or a zip holding nothing but ``.npy`` members."""
    if head.startswith(NPY_MAGIC):
        return True
    return head.startswith(ZIP_MAGICS) and _is_npz(path)


def _is_npz(path: Path) -> bool:
    """A torch zip carries ``data.pkl``, so "only .npy members" leaves it to the PyTorch reader."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except ZIP_ERRORS:
        return False
    return bool(names) and all(name.endswith(MEMBER_SUFFIX) for name in names)


def read(path: Path) -> Model:
    with path.open("rb") as handle:
        is_npy = handle.read(len(NPY_MAGIC)) == NPY_MAGIC
    tensors = _read_npy(path) if is_npy else _read_npz(path)
    return Model(path=str(path), format=FORMAT, size_bytes=path.stat().st_size, tensors=tensors)


def _read_npy(path: Path) -> dict[str, TensorRef]:
    with path.open("rb") as handle:
        header = _parse_header(path, "the array", handle)
    dtype = _checked_dtype(path, "the array", header, path.stat().st_size - header.offset)
    data = map_bytes(path)
    return {ROOT_NAME: _tensor_ref(ROOT_NAME, header, dtype, lambda: data)}


def read_source(source: ByteSource) -> Model:
    """A remote ``.npy``, its data streamed by ranges; an npz needs its zip directory and
    random access into members, so it is read from a local copy."""
    head = source.read(0, min(source.size, MAX_HEADER_BYTES + 16))
    if not head.startswith(NPY_MAGIC):
        raise UnreadableModel(source.name, "an .npz archive is read only from a local copy")
    header = _parse_header(source.name, "the array", io.BytesIO(head))
    dtype = _checked_dtype(source.name, "the array", header, source.size - header.offset)
    if header.fortran and len(header.shape) > 1:
        raise UnreadableModel(
            source.name, "an array in Fortran order is read only from a local copy (its values "
            "are not in the C order the statistics stream)",
        )  # fmt: skip
    tensors = {ROOT_NAME: _ranged_ref(header, dtype, source)}
    return Model(path=source.name, format=FORMAT, size_bytes=source.size, tensors=tensors)


def _ranged_ref(header: _Header, dtype: str, source: ByteSource) -> TensorRef:
    start = header.offset
    stream = RangeValues(source, start, start + header.data_bytes, header.dtype)
    return TensorRef(name=ROOT_NAME, shape=header.shape, dtype=dtype, stream=stream)


def _read_npz(path: Path) -> dict[str, TensorRef]:
    members = ZipMembers(path)
    check_tensor_count(path, "the archive holds", len(members.names()))
    tensors: dict[str, TensorRef] = {}
    for member in _unique(path, members.names()):
        name = _tensor_name(path, member)
        label = f"member {member!r}"
        header = _member_header(path, members, member, label)
        available = members.archive.getinfo(member).file_size - header.offset
        dtype = _checked_dtype(path, label, header, available)
        tensors[name] = _member_ref(name, header, dtype, members, member)
    return tensors


def _member_ref(
    name: str, header: _Header, dtype: str, members: ZipMembers, member: str
) -> TensorRef:
    """Stored members are mapped; deflated ones streamed, or spilled to a mapped temporary
    file when in Fortran order, which no stream in C order can follow."""
    if members.archive.getinfo(member).compress_type == zipfile.ZIP_STORED:
        return _tensor_ref(name, header, dtype, partial(members.member_array, member))
    if header.fortran and len(header.shape) > 1:
        length = header.offset + header.data_bytes
        return _tensor_ref(name, header, dtype, cache(partial(spilled, members, member, length)))
    return _streamed_ref(name, header, dtype, members, member)


def _streamed_ref(
    name: str, header: _Header, dtype: str, members: ZipMembers, member: str
) -> TensorRef:
    piece = header.dtype.itemsize * CHUNK_ELEMENTS

    def stream() -> Iterator[np.ndarray]:
        blocks = member_pieces(members, member, header.offset, header.data_bytes, piece)
        return (np.frombuffer(block, header.dtype) for block in blocks)

    return TensorRef(name=name, shape=header.shape, dtype=dtype, stream=stream)


def _unique(path: Path, members: list[str]) -> list[str]:
    """A zip may repeat a name; only one copy would be read, hiding the other."""
    seen: set[str] = set()
    for member in members:
        if member in seen:
            raise MalformedModel(path, f"npz member {member!r} appears more than once")
        seen.add(member)
    return members


def _tensor_name(path: Path, member: str) -> str:
    """``np.savez(w=...)`` stores ``w.npy``; anything else in the archive is not numpy's doing."""
    if not member.endswith(MEMBER_SUFFIX):
        raise UnreadableModel(path, f"npz member {member!r} is not an .npy array")
    return member[: -len(MEMBER_SUFFIX)]


def _member_header(path: Path, members: ZipMembers, member: str, label: str) -> _Header:
    """Streamed, so a compressed member is inflated only as far as its header."""
    try:
        with members.archive.open(member) as stream:
            return _parse_header(path, label, stream)
    except ZIP_ERRORS as exc:
        raise MalformedModel(path, f"cannot read {label}: {one_line(exc)}") from exc


def _parse_header(path: str | Path, label: str, stream: IO[bytes]) -> _Header:
    try:
        version = np.lib.format.read_magic(stream)
        read_header = HEADER_READERS.get(version)
        if read_header is None:
            raise MalformedModel(path, f"{label}: npy format version {version} is not supported")
        shape, fortran, dtype = read_header(_bounded_header(path, label, stream, version))
    except (ValueError, TokenError) as exc:
        # numpy tokenizes headers it cannot parse at first, hence TokenError.
        raise MalformedModel(path, f"{label}: bad npy header: {one_line(exc)}") from exc
    if any(size < 0 for size in shape):
        raise MalformedModel(path, f"{label}: bad npy header: negative size in shape {shape}")
    return _Header(shape=shape, fortran=fortran, dtype=dtype, offset=stream.tell())


def _bounded_header(
    path: str | Path, label: str, stream: IO[bytes], version: tuple[int, int]
) -> IO[bytes]:
    """The length field and the header, read only once the length is known to be sane.

    numpy reads a header whole before it checks its size, and a compressed npz
    member can declare a header of 4 GB of spaces in a few kilobytes.
    """
    length_field = HEADER_LENGTHS[version]
    raw_length = stream.read(length_field.size)
    if len(raw_length) < length_field.size:
        raise MalformedModel(path, f"{label}: bad npy header: it ends before its length")
    (length,) = length_field.unpack(raw_length)
    if length > MAX_HEADER_BYTES:
        raise MalformedModel(
            path,
            f"{label}: bad npy header: {length:,} bytes long, over numpy's limit of "
            f"{MAX_HEADER_BYTES:,}",
        )
    return io.BytesIO(raw_length + stream.read(length))


def _checked_dtype(path: str | Path, label: str, header: _Header, available: int) -> str:
    """The canonical dtype, once the data is known to be exactly the promised bytes.

    Short data cannot be read, and extra bytes would be data nobody sees.
    """
    dtype = _canonical_dtype(path, label, header.dtype)
    if available != header.data_bytes:
        raise MalformedModel(
            path,
            f"{label}: header promises {header.data_bytes} bytes of data, found {available}",
        )
    return dtype


def _canonical_dtype(path: str | Path, label: str, dtype: np.dtype) -> str:
    name = canonical_name(dtype)
    if name is not None:
        return name
    if dtype.hasobject:
        raise UnreadableModel(
            path,
            f"{label} holds an object array (dtype {dtype.str!r}); "
            "object arrays need pickle, which diffai never runs",
        )
    raise UnreadableModel(
        path,
        f"{label} has dtype {dtype.str!r} ({dtype}), not a numeric type diffai compares "
        f"({', '.join(NAMES)})",
    )


def _tensor_ref(name: str, header: _Header, dtype: str, raw: Callable[[], np.ndarray]) -> TensorRef:
    """``raw`` gives the bytes of the whole file or member, header included."""
    order = "F" if header.fortran else "C"

    def load() -> np.ndarray:
        values = raw()[header.offset :].view(header.dtype)
        return values.reshape(header.shape, order=order)

    return TensorRef(name=name, shape=header.shape, dtype=dtype, load=load)
