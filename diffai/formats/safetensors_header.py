"""A safetensors header as columns: names, layouts and data offsets, checked a column at a time.

The safetensors library (and every writer built on serde) writes the header
compactly: no whitespace, the metadata first, each entry's keys as
``{"dtype":…,"shape":[…],"data_offsets":[…]}``. Such a header is read in one pass
over its bytes in C (``_opening.header_columns``, diffai/formats/_opening.c), each
distinct dtype and shape worked out once here, instead of a dict, two lists and a
check per tensor: 100,000 entries took 1.1 s of CPU through ``json.loads`` and the
per-entry checks (load average 4), 0.2-0.3 s as columns split in Python, 0.05-0.09 s in
C (the figures in diffai/formats/_opening.c).

``compact_entries`` answers None for anything else (whitespace, escapes, another
key order, any value the strict parse would refuse), and the strict parse then
decides: what it answers is what that parse would have read, so every refusal
keeps its message (``tests/test_safetensors_columns.py`` holds the two side by side).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Any

from diffai.dtypes import itemsize
from diffai.formats._opening import header_columns
from diffai.formats.strictjson import DuplicateKey, InvalidJson, decode_prefix
from diffai.model import Layout, layout

DTYPES = {
    "F64": "f64", "F32": "f32", "F16": "f16", "BF16": "bf16",
    "F8_E4M3": "f8_e4m3", "F8_E5M2": "f8_e5m2",
    "I64": "i64", "I32": "i32", "I16": "i16", "I8": "i8",
    "U64": "u64", "U32": "u32", "U16": "u16", "U8": "u8",
    "BOOL": "bool", "C64": "c64",
}  # fmt: skip
ITEMSIZES = {name: itemsize(dtype) for name, dtype in DTYPES.items()}
CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f]")
METADATA = "__metadata__"

#: At most 18 digits, so every offset and size fits in an int64 (a longer one goes to the
#: strict parse, which reads it exactly).
_NUMBER = "(?:0|[1-9][0-9]{0,17})"
_SHAPE = re.compile(rf":\[(?:{_NUMBER}(?:,{_NUMBER})*)?\],")
#: No size past this can match its data_offsets (under 10**18), so such a header is refused.
_LARGEST_SIZE = 1 << 62


@dataclass
class Entries:
    """The tensors a header lists, in its order, and its ``__metadata__``."""

    metadata: dict[str, str]
    names: list[str]
    layouts: list[Layout]
    begins: list[int]
    ends: list[int]


def compact_entries(text: str, data_len: int) -> Entries | None:
    """The entries of a compactly written header that the strict parse would accept, with
    its data region of ``data_len`` bytes; None when the strict parse must decide."""
    header = text.rstrip(" \t\n\r")
    found = _metadata(header)
    if found is None:
        return None
    metadata, comma = found
    read = header_columns(header, comma, data_len, _layout)
    return None if read is None else Entries(metadata, *read)


def _metadata(header: str) -> tuple[dict[str, str], int] | None:
    """``__metadata__`` when it comes first (else an empty one), and where the entries start:
    at a comma (the header's opening brace counts as one)."""
    opening = '{"' + METADATA + '":'
    if not header.startswith(opening):
        return ({}, 0) if header.startswith("{") else None
    try:
        metadata, end = decode_prefix(header, len(opening))
    except (DuplicateKey, InvalidJson):
        return None
    strings = isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    accepted = strings and encodable(metadata)
    return (metadata, end) if accepted and header.startswith(",", end) else None


def encodable(metadata: dict[str, str]) -> bool:
    """Whether every key and value is text UTF-8 can hold: JSON's ``\\ud800`` escapes decode
    to lone surrogates in Python, where the safetensors library refuses the header."""
    try:
        "".join(itertools.chain.from_iterable(metadata.items())).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _layout(dtype: str, shape_piece: str) -> Layout | None:
    """The layout of an entry's dtype and its shape's piece of the header (``:[8,8],``),
    or None when the strict parse must decide."""
    if dtype not in DTYPES or not _SHAPE.fullmatch(shape_piece):
        return None
    sizes = shape_piece[2:-2]
    shape = tuple(map(int, sizes.split(","))) if sizes else ()
    elements = math.prod(shape)
    nbytes = elements * ITEMSIZES[dtype]
    return Layout(DTYPES[dtype], shape, elements, nbytes) if nbytes < _LARGEST_SIZE else None


def entries_of(header: dict[str, Any]) -> Entries:
    """The columns of a header the strict parse accepted, entries as ``_check_entry`` let them."""
    tensors = [(name, entry) for name, entry in header.items() if name != METADATA]
    return Entries(
        metadata=header.get(METADATA) or {},
        names=[name for name, _ in tensors],
        layouts=[layout(DTYPES[entry["dtype"]], tuple(entry["shape"])) for _, entry in tensors],
        begins=[entry["data_offsets"][0] for _, entry in tensors],
        ends=[entry["data_offsets"][1] for _, entry in tensors],
    )
