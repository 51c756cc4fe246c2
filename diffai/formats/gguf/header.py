"""The GGUF header (v2 and v3), parsed strictly by hand from the mapped file.

Not ``gguf.GGUFReader``: it trusts the file's counts (``for idx in range(alen[0])``
over an untrusted array length, ``np.prod(dims)`` unchecked), answers lying ones with
numpy's ``IndexError``/``ValueError``, accepts two tensors at one offset (which
llama.cpp refuses) and builds a numpy view per array element (5.3 s for a 0.72 MB
vocabulary file, 0.2 s here). Here every count and length is checked
against the bytes left in the file before anything is built for it, and the rules
llama.cpp's loader (``gguf.cpp``) enforces are enforced the same way, so diffai
reads what llama.cpp reads: unique keys and tensor names, names under 64 bytes, at
most 4 dimensions, rows a whole number of blocks, a power-of-two ``u32``
``general.alignment``, and tensors laid one after the other at exactly the
offsets ggml computes (each padded to the alignment).

Layout (little-endian): ``GGUF``, u32 version, u64 tensor count, u64 key/value
count; each key/value a string key, a u32 type and its value; each tensor info a
string name, u32 dims, u64 sizes (``ne[0]`` the fastest axis), u32 ggml type, u64
offset into the data section, which starts at the next multiple of the alignment.
A string is a u64 length and that many bytes of UTF-8.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass

from diffai.formats.gguf.types import GGML_TYPES, GgmlType
from diffai.formats.limits import MAX_TENSORS
from diffai.model import Scalar

MAGIC = b"GGUF"
VERSIONS = (2, 3)
#: What versions 2 and 3 read as when a big-endian file is read little-endian.
BIG_ENDIAN_VERSIONS = (2 << 24, 3 << 24)
DEFAULT_ALIGNMENT = 32
ALIGNMENT_KEY = "general.alignment"
#: llama.cpp's GGML_MAX_NAME is 64 bytes with the NUL, GGML_MAX_DIMS 4.
MAX_NAME_BYTES = 63
MAX_DIMS = 4
#: Real files hold about 50 keys; a tokenizer's arrays hold up to ~300,000 strings each.
MAX_KEYS = 10_000
MAX_STRINGS = 4_000_000
#: Arrays up to this length are scalars as they are; longer ones (the vocabulary) a summary.
SHORT_ARRAY = 16
#: Strings longer than this (a chat template) are summarised too.
SHORT_STRING = 256
#: The smallest tensor info: an empty name (8), 0 dims (4), the type (4), the offset (8).
MIN_TENSOR_INFO = 24
#: The smallest key/value: an empty key (8), the type (4), a one-byte value.
MIN_KEY_VALUE = 13
STRING, ARRAY, U32 = 8, 9, 4
#: The key/value types with a fixed size, as struct formats.
FIXED_TYPES = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
    11: "<q", 12: "<d",
}  # fmt: skip
MAX_INT64 = 2**63 - 1


class GgufError(ValueError):
    """The header breaks a rule; the reader turns it into ``MalformedModel``."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header describes it; ``shape`` in C order (``ne`` reversed)."""

    name: str
    shape: tuple[int, ...]
    ggml: GgmlType
    offset: int  # from the start of the file
    nbytes: int


@dataclass(frozen=True)
class Header:
    version: int
    scalars: dict[str, Scalar]
    tensors: list[TensorInfo]
    alignment: int
    data_start: int


class _Cursor:
    """Reads forward through the file's bytes; every read is checked against the end."""

    def __init__(self, data: memoryview) -> None:
        self.data, self.position = data, 0

    @property
    def left(self) -> int:
        return len(self.data) - self.position

    def take(self, length: int, what: str) -> memoryview:
        if length > self.left:
            raise GgufError(
                f"{what} needs {length:,} bytes at byte {self.position:,}, "
                f"but the file has {self.left:,} left"
            )
        start, self.position = self.position, self.position + length
        return self.data[start : self.position]

    def fixed(self, fmt: str, what: str) -> int | float | bool:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def u32(self, what: str) -> int:
        return int(self.fixed("<I", what))

    def u64(self, what: str) -> int:
        return int(self.fixed("<Q", what))

    def raw_string(self, what: str) -> memoryview:
        return self.take(self.u64(f"the length of {what}"), what)

    def text(self, what: str) -> str:
        raw = self.raw_string(what)
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as exc:
            raise GgufError(f"{what} is not UTF-8 ({exc.reason})") from exc


def parse_header(data: memoryview) -> Header:
    cursor = _Cursor(data)
    version, tensor_count, key_count = _preamble(cursor)
    scalars, alignment = _key_values(cursor, key_count)
    infos = [_tensor_info(cursor, index) for index in range(tensor_count)]
    data_start = _aligned(cursor.position, alignment)
    tensors = _place(infos, data_start, alignment, len(data))
    return Header(version, scalars, tensors, alignment, data_start)


def _preamble(cursor: _Cursor) -> tuple[int, int, int]:
    if bytes(cursor.take(4, "the magic")) != MAGIC:
        raise GgufError("not a GGUF file (no GGUF magic)")
    version = cursor.u32("the version")
    if version not in VERSIONS:
        swapped = " (a big-endian file?)" if version in BIG_ENDIAN_VERSIONS else ""
        raise GgufError(f"GGUF version {version}{swapped} is not one diffai reads (2 or 3)")
    tensor_count, key_count = cursor.u64("the tensor count"), cursor.u64("the key count")
    _check_count(cursor, tensor_count, "tensors", MIN_TENSOR_INFO, MAX_TENSORS)
    _check_count(cursor, key_count, "keys", MIN_KEY_VALUE, MAX_KEYS)
    return version, tensor_count, key_count


def _check_count(cursor: _Cursor, count: int, what: str, least_bytes: int, limit: int) -> None:
    if count > limit:
        raise GgufError(f"the header claims {count:,} {what}, over the limit of {limit:,}")
    if count * least_bytes > cursor.left:
        raise GgufError(
            f"the header claims {count:,} {what}, more than the file's "
            f"{cursor.left:,} remaining bytes can hold"
        )


# --- key/values -----------------------------------------------------------------------------


def _key_values(cursor: _Cursor, count: int) -> tuple[dict[str, Scalar], int]:
    scalars: dict[str, Scalar] = {}
    budget = _StringBudget()
    alignment = DEFAULT_ALIGNMENT
    for _ in range(count):
        key = cursor.text("a key")
        if key in scalars:
            raise GgufError(f"key {key!r} appears twice")
        value_type = cursor.u32(f"the type of key {key!r}")
        if key == ALIGNMENT_KEY:
            alignment = _alignment(cursor, value_type)
            scalars[key] = alignment
        else:
            scalars[key] = _value(cursor, key, value_type, budget)
    return scalars, alignment


def _alignment(cursor: _Cursor, value_type: int) -> int:
    if value_type != U32:
        raise GgufError(f"{ALIGNMENT_KEY} has type {value_type}, not u32 ({U32})")
    alignment = cursor.u32(ALIGNMENT_KEY)
    if alignment == 0 or alignment & (alignment - 1):
        raise GgufError(f"{ALIGNMENT_KEY} is {alignment:,}, not a power of two")
    return alignment


class _StringBudget:
    """Strings in arrays are walked one by one, so their total is bounded."""

    def __init__(self) -> None:
        self.left = MAX_STRINGS

    def spend(self, count: int, key: str) -> None:
        self.left -= count
        if self.left < 0:
            raise GgufError(
                f"key {key!r} brings the header's strings over the limit of {MAX_STRINGS:,}"
            )


def _value(cursor: _Cursor, key: str, value_type: int, budget: _StringBudget) -> Scalar:
    if value_type in FIXED_TYPES:
        return cursor.fixed(FIXED_TYPES[value_type], f"the value of key {key!r}")
    if value_type == STRING:
        return _shown_string(cursor.raw_string(f"the value of key {key!r}"))
    if value_type == ARRAY:
        return _array(cursor, key, budget)
    raise GgufError(f"key {key!r} has unknown value type {value_type}")


def _shown_string(raw: memoryview) -> str:
    text = str(raw, "utf-8", "backslashreplace")
    if len(text) <= SHORT_STRING:
        return text
    return f"{len(text):,} characters, sha256 {_digest(raw)}"


def _digest(raw: memoryview) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def _array(cursor: _Cursor, key: str, budget: _StringBudget) -> Scalar:
    element_type = cursor.u32(f"the element type of key {key!r}")
    count = cursor.u64(f"the length of key {key!r}")
    start = cursor.position
    if element_type in FIXED_TYPES:
        values = _fixed_array(cursor, key, FIXED_TYPES[element_type], count)
    elif element_type == STRING:
        values = _string_array(cursor, key, count, budget)
    else:
        raise GgufError(
            f"key {key!r} is an array of type {element_type}, which GGUF does not allow"
        )
    if count <= SHORT_ARRAY:
        return values
    kind = "strings" if element_type == STRING else "values"
    return f"{count:,} {kind}, sha256 {_digest(cursor.data[start : cursor.position])}"


def _fixed_array(cursor: _Cursor, key: str, fmt: str, count: int) -> list[Scalar]:
    """The first ``SHORT_ARRAY`` values; the rest is skipped in one step."""
    size = struct.calcsize(fmt)
    raw = cursor.take(count * size, f"the array of key {key!r}")
    return [value for (value,) in struct.iter_unpack(fmt, raw[: SHORT_ARRAY * size])]


def _string_array(cursor: _Cursor, key: str, count: int, budget: _StringBudget) -> list[Scalar]:
    """Every length is walked (and checked); only the first ``SHORT_ARRAY`` are decoded."""
    if count * 8 > cursor.left:
        raise GgufError(f"key {key!r} claims {count:,} strings, more than the file holds")
    budget.spend(count, key)
    shown: list[Scalar] = []
    for index in range(count):
        raw = cursor.raw_string(f"string {index:,} of key {key!r}")
        if index < SHORT_ARRAY:
            shown.append(_shown_string(raw))
    return shown


# --- tensor infos ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _RawInfo:
    name: str
    dims: tuple[int, ...]
    ggml: GgmlType
    offset: int


def _tensor_info(cursor: _Cursor, index: int) -> _RawInfo:
    name = cursor.text(f"the name of tensor {index}")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise GgufError(
            f"tensor name {name[:40]!r}... is {len(name.encode()):,} bytes long, "
            f"over llama.cpp's limit of {MAX_NAME_BYTES}"
        )
    n_dims = cursor.u32(f"the dimensions of tensor {name!r}")
    if n_dims > MAX_DIMS:
        raise GgufError(f"tensor {name!r} has {n_dims:,} dimensions, over ggml's {MAX_DIMS}")
    dims = tuple(cursor.u64(f"the sizes of tensor {name!r}") for _ in range(n_dims))
    type_id = cursor.u32(f"the type of tensor {name!r}")
    offset = cursor.u64(f"the offset of tensor {name!r}")
    return _RawInfo(name, dims, _ggml_type(name, type_id, dims), offset)


def _ggml_type(name: str, type_id: int, dims: tuple[int, ...]) -> GgmlType:
    ggml = GGML_TYPES.get(type_id)
    if ggml is None:
        raise GgufError(f"tensor {name!r} has unknown ggml type {type_id}")
    if any(size > MAX_INT64 for size in dims) or math.prod(dims) > MAX_INT64:
        raise GgufError(f"tensor {name!r}: sizes {list(dims)} overflow ggml's 64-bit counts")
    if dims and dims[0] % ggml.block:
        raise GgufError(
            f"tensor {name!r}: rows of {dims[0]:,} elements are not a whole number of "
            f"{ggml.name} blocks ({ggml.block})"
        )
    return ggml


def _place(
    infos: list[_RawInfo], data_start: int, alignment: int, file_size: int
) -> list[TensorInfo]:
    """Each tensor at the offset ggml computes, inside the file; nothing hidden after them."""
    tensors, expected, seen = [], 0, set()
    for info in infos:
        if info.name in seen:
            raise GgufError(f"tensor name {info.name!r} appears twice")
        seen.add(info.name)
        _check_offset(info, expected, alignment)
        nbytes = info.ggml.nbytes(math.prod(info.dims))
        end = data_start + info.offset + nbytes
        if end > file_size:
            raise GgufError(
                f"tensor {info.name!r} ({math.prod(info.dims):,} elements of {info.ggml.name}, "
                f"{nbytes:,} bytes) ends at byte {end:,}, "
                f"past the end of the file ({file_size:,} bytes)"
            )
        tensors.append(
            TensorInfo(info.name, info.dims[::-1], info.ggml, data_start + info.offset, nbytes)
        )
        expected = _aligned(info.offset + nbytes, alignment)
    _check_trailing(data_start + expected if infos else data_start, file_size)
    return tensors


def _check_offset(info: _RawInfo, expected: int, alignment: int) -> None:
    if info.offset % alignment:
        raise GgufError(
            f"tensor {info.name!r} starts at data offset {info.offset:,}, "
            f"not a multiple of the alignment ({alignment})"
        )
    if info.offset != expected:
        raise GgufError(
            f"tensor {info.name!r} starts at data offset {info.offset:,}, but llama.cpp "
            f"expects {expected:,} (tensors follow one another, each padded to the alignment)"
        )


def _check_trailing(end: int, file_size: int) -> None:
    if file_size > end:
        raise GgufError(f"{file_size - end:,} bytes after the last tensor, which no loader reads")


def _aligned(position: int, alignment: int) -> int:
    return -(-position // alignment) * alignment
