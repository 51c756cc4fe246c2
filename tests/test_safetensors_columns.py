"""The column-wise reading of compact safetensors headers agrees with the strict parse.

``compact_entries`` may decline any header (the strict parse then decides), but when it
answers, its entries must be exactly the strict parse's, and it must decline every header
the strict parse refuses, so a refusal always keeps its message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from diffai.errors import MalformedModel
from diffai.formats import open_model, safetensors
from diffai.formats.safetensors_header import Entries, compact_entries, entries_of
from tests.conftest import raw_safetensors

COMPACT = {"separators": (",", ":")}


def entry(dtype: str, shape: list[Any], begin: Any, end: Any) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def strict_entries(text: str, data_len: int) -> Entries | str:
    """What the strict parse makes of a header: its entries, or its refusal's message."""
    try:
        header = safetensors._parse_header_json("h", text)
        safetensors._check_layout("h", safetensors._tensor_entries("h", header), data_len)
    except MalformedModel as exc:
        return str(exc)
    return entries_of(header)


def _every_dtype() -> dict[str, Any]:
    """One element of each dtype, back to back."""
    sizes = safetensors.ITEMSIZES
    begins = np.cumsum([0, *sizes.values()])[:-1].tolist()
    return {
        name.lower(): entry(name, [1], begin, begin + size)
        for (name, size), begin in zip(sizes.items(), begins, strict=True)
    }


ACCEPTED = {
    "metadata first": {"__metadata__": {"format": "pt"}, "a": entry("F32", [2, 2], 0, 16)},
    "no metadata": {"a": entry("F32", [2], 0, 8), "b": entry("I8", [3], 8, 11)},
    "empty metadata": {"__metadata__": {}, "a": entry("U8", [1], 0, 1)},
    "scalar and empty": {"s": entry("F64", [], 0, 8), "e": entry("F32", [0, 3], 8, 8)},
    "offsets out of order": {"b": entry("F16", [2], 4, 8), "a": entry("F16", [2], 0, 4)},
    "every dtype": _every_dtype(),
    "unicode name": {"層.重み": entry("BF16", [4], 0, 8)},
    "18-digit size": {"a": entry("U8", [10**17], 0, 10**17)},
}

#: Headers the strict parse refuses, or that are not written compactly: all left to it.
OUTSIDE_DICTS = {
    "gap": {"a": entry("F32", [1], 0, 4), "b": entry("F32", [1], 8, 12)},
    "overlap": {"a": entry("F32", [2], 0, 8), "b": entry("F32", [1], 4, 8)},
    "size mismatch": {"a": entry("F32", [3], 0, 8)},
    "reversed offsets": {"a": entry("U8", [0], 4, 0)},
    "unknown dtype": {"a": entry("F128", [1], 0, 16)},
    "negative size": {"a": entry("U8", [-1], 0, 1)},
    "float size": {"a": entry("U8", [1.0], 0, 1)},
    "bool size": {"a": entry("U8", [True], 0, 1)},
    "19-digit offset": {"a": entry("U8", [10**18], 0, 10**18)},
    "product past int64": {"a": entry("U8", [2**32, 2**32], 0, 0)},
    "wrapping product": {"a": entry("U8", [2**62, 4], 0, 0)},
    "DEL in name": {"a\x7fb": entry("U8", [1], 0, 1)},
    "tab in name": {"a\tb": entry("U8", [1], 0, 1)},
    "metadata of numbers": {"__metadata__": {"epoch": 3}, "a": entry("U8", [1], 0, 1)},
    "metadata null": {"__metadata__": None, "a": entry("U8", [1], 0, 1)},
    "metadata last": {"a": entry("U8", [1], 0, 1), "__metadata__": {"format": "pt"}},
    "extra key": {"a": {**entry("U8", [1], 0, 1), "x": 1}},
    "keys reordered": {"a": {"shape": [1], "dtype": "U8", "data_offsets": [0, 1]}},
    "tensor named __metadata__": {"__metadata__": entry("U8", [1], 0, 1)},
    "three offsets": {"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 1]}},
    "no tensors": {"__metadata__": {"format": "pt"}},
    "empty": {},
}

OUTSIDE_TEXTS = {
    "repeated name": '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
    '"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}',
    "repeated metadata key": '{"__metadata__":{"k":"1","k":"2"},'
    '"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}',
    "leading zero": '{"a":{"dtype":"U8","shape":[01],"data_offsets":[0,1]}}',
    "trailing comma": '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},}',
    "extra brace": '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}}',
    "two objects": '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}{}',
    "raw newline in name": '{"a\nb":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}',
    "spaced": '{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}',
    "escaped name": '{"\\u0061":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}',
    "escaped quote": '{"a\\"":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}',
    "not an object": '["a"]',
    "offsets shifted across entries": '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
    ':[1,2]},"b":{"dtype":"U8","shape":[1],"data_offsets""c":{"dtype":"U8","shape":[1],'
    '"data_offsets":[2,3]}}',
}


def _data_len(header: dict[str, Any]) -> int:
    ends = [e["data_offsets"][-1] for n, e in header.items() if n != "__metadata__"]
    return max((end for end in ends if isinstance(end, int)), default=0)


@pytest.mark.parametrize("header", ACCEPTED.values(), ids=ACCEPTED)
def test_compact_headers_read_as_the_strict_parse_reads_them(header: dict[str, Any]) -> None:
    text = json.dumps(header, ensure_ascii=False, **COMPACT)
    answer = compact_entries(text + "   ", _data_len(header))
    assert answer is not None
    assert answer == strict_entries(text, _data_len(header))


LEFT_TO_STRICT = {
    **{name: (json.dumps(h, **COMPACT), _data_len(h)) for name, h in OUTSIDE_DICTS.items()},
    **{name: (text, 1) for name, text in OUTSIDE_TEXTS.items()},
}


@pytest.mark.parametrize(("text", "data_len"), LEFT_TO_STRICT.values(), ids=LEFT_TO_STRICT)
def test_what_the_compact_form_does_not_cover_is_left_to_the_strict_parse(
    text: str, data_len: int
) -> None:
    assert compact_entries(text, data_len) is None


@pytest.mark.parametrize(("data_len", "problem"), [(4, "trailing"), (2, "past the data")])
def test_a_compact_header_keeps_the_strict_message(
    tmp_path: Path, data_len: int, problem: str
) -> None:
    header = json.dumps({"a": entry("U8", [3], 0, 3)}, **COMPACT).encode()
    path = raw_safetensors(tmp_path / "m.safetensors", header, bytes(data_len))
    with pytest.raises(MalformedModel, match=problem):
        open_model(path)


def test_compact_and_spaced_files_open_alike(tmp_path: Path) -> None:
    header = {"__metadata__": {"format": "pt"}, **ACCEPTED["every dtype"]}
    data = bytes(range(_data_len(header)))
    compact = raw_safetensors(
        tmp_path / "c.safetensors", json.dumps(header, **COMPACT).encode(), data
    )
    spaced = raw_safetensors(tmp_path / "s.safetensors", header, data)
    one, other = open_model(compact), open_model(spaced)
    assert one.metadata == other.metadata == {"format": "pt"}
    assert list(one.tensors.items()) == list(other.tensors.items())
    for name, ref in one.tensors.items():
        assert (ref.elements, ref.nbytes) == (
            other.tensors[name].elements,
            other.tensors[name].nbytes,
        )
        assert ref.array().tobytes() == other.tensors[name].array().tobytes()
