"""The column-wise reading of compact safetensors headers agrees with the strict parse.

``compact_entries`` may decline any header (the strict parse then decides), but when it
answers, its entries must be exactly the strict parse's, and it must decline every header
the strict parse refuses, so a refusal always keeps its message.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import deserialize

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


def assert_agrees(text: str, data_len: int) -> None:
    """The contract: ``compact_entries`` answers None, or exactly the strict parse's entries
    (``repr`` too, so an ``np.int64`` where the strict parse holds an ``int`` shows)."""
    fast = compact_entries(text, data_len)
    if fast is None:
        return
    strict = strict_entries(text, data_len)
    assert isinstance(strict, Entries), f"{text!r}: the strict parse refuses it: {strict}"
    assert fast == strict, f"{text!r} (data_len {data_len}): {fast!r} against {strict!r}"
    assert repr(fast) == repr(strict)
    assert list(fast.metadata.items()) == list(strict.metadata.items())


def assert_library_agrees(text: str, data_len: int) -> None:
    """The reference loader: a header diffai reads (by either path), the safetensors library
    reads too, as the same tensors; diffai may refuse more, never less."""
    try:
        ours = safetensors._entries("h", text.encode(), data_len)
    except MalformedModel:
        return
    stored = {value: name for name, value in safetensors.DTYPES.items()}
    raw = struct.pack("<Q", len(text.encode())) + text.encode() + bytes(data_len)
    theirs = sorted((name, info["dtype"], info["shape"]) for name, info in deserialize(raw))
    layouts = zip(ours.names, ours.layouts, strict=True)
    assert sorted((n, stored[lay.dtype], list(lay.shape)) for n, lay in layouts) == theirs


def _header(*entries: str, after: str = "") -> str:
    """A compact header of the given ``name":{...}`` pairs (each from ``_pair``)."""
    return "{" + ",".join(entries) + "}" + after


def _pair(name: str, dtype: str, shape: str, offsets: str) -> str:
    return f'"{name}":{{"dtype":"{dtype}","shape":[{shape}],"data_offsets":[{offsets}]}}'


ONE = _pair("a", "U8", "1", "0,1")
#: Edges of the contract tried by hand: the compact reader answers, as the strict parse does.
ANSWERED = {
    "empty name": (_header(_pair("", "U8", "1", "0,1")), 1),
    "JSON punctuation in a name": (_header(_pair("a:{},[] ", "U8", "1", "0,1")), 1),
    "names that are entry keys": (
        _header(_pair("dtype", "U8", "1", "0,1"), _pair("data_offsets", "U8", "1", "1,2")),
        2,
    ),
    "zero-size tensors sharing an offset": (
        _header(
            _pair("a", "F32", "0", "1,1"),
            _pair("b", "U8", "1", "0,1"),
            _pair("c", "I8", "2,0", "1,1"),
        ),
        1,
    ),
    "spaced and escaped metadata": ('{"__metadata__":{ "k\\n" : "v\\u00e9" },' + ONE + "}", 1),
    "1,025-character name (check_model's limit, for both)": (
        _header(_pair("n" * 1025, "U8", "1", "0,1")),
        1,
    ),
    "padded with every JSON whitespace": (_header(ONE, after=" \t\r\n  "), 1),
    "separators and C1 controls in a name": (_header(_pair("\u2028\x85é", "U8", "1", "0,1")), 1),
}

#: Edges the compact reader leaves to the strict parse (which accepts some of them).
DECLINED = {
    "minus zero (the safetensors library refuses it)": (
        _header(_pair("a", "U8", "-0", "0,0")),
        0,
    ),
    "plus sign": (_header(_pair("a", "U8", "1", "+0,1")), 1),
    "exponent": (_header(_pair("a", "U8", "1e0", "0,1")), 1),
    "byte order mark": ("\ufeff" + _header(ONE), 1),
    "NUL after the header": (_header(ONE, after="\x00"), 1),
    "form feed after the header": (_header(ONE, after="\x0c"), 1),
    "ideographic space after the header": (_header(ONE, after="\u3000"), 1),
    "metadata repeated last": ('{"__metadata__":{},' + ONE + ',"__metadata__":{}}', 1),
    "tensor named __metadata__ after the metadata": (
        '{"__metadata__":{},' + _pair("__metadata__", "U8", "1", "0,1") + "}",
        1,
    ),
    "nested metadata": ('{"__metadata__":{"k":{"x":"y"}},' + ONE + "}", 1),
    "space before the comma after the metadata": ('{"__metadata__":{} ,' + ONE + "}", 1),
    "lowercase dtype": (_header(_pair("a", "u8", "1", "0,1")), 1),
    "key repeated in an entry": (
        '{"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}',
        1,
    ),
    "zero-size tensor past the data": (_header(_pair("a", "U8", "0", "5,5")), 0),
    "data length past int64": (_header(ONE), 2**70),
}


@pytest.mark.parametrize(("text", "data_len"), ANSWERED.values(), ids=ANSWERED)
def test_edges_the_compact_reader_answers_as_the_strict_parse(text: str, data_len: int) -> None:
    assert compact_entries(text, data_len) is not None
    assert_agrees(text, data_len)
    assert_library_agrees(text, data_len)


@pytest.mark.parametrize(("text", "data_len"), DECLINED.values(), ids=DECLINED)
def test_edges_the_compact_reader_leaves_to_the_strict_parse(text: str, data_len: int) -> None:
    assert compact_entries(text, data_len) is None
    if data_len < 1 << 20:
        assert_library_agrees(text, data_len)


#: Characters that mean something to JSON, to the column split or to the name checks.
NASTY = '"\\:,{}[] _a\x00\x1f\x7f\u2028é層'
#: The same without what only the strict parse reads (escapes, control characters), so
#: that the compact reader answers for a good share of the headers.
PLAIN = ":,{}[] _a\u2028é層"
_DTYPE_NAMES = [*safetensors.DTYPES, *safetensors.DTYPES, "F128", "f32", ""]


@st.composite
def _compact_header(draw: st.DrawFn) -> tuple[str, int]:
    """A compact header of random entries, written pair by pair (so a name may repeat),
    mostly tiling its data, and the data length it implies, give or take a byte."""
    names = st.one_of(
        st.text(PLAIN, max_size=4), st.text(NASTY, max_size=4), st.sampled_from(["__metadata__"])
    )
    pieces, position = [], 0
    for _ in range(draw(st.integers(1, 4))):
        dtype = draw(st.sampled_from(_DTYPE_NAMES))
        shape = draw(st.lists(st.integers(-1, 3), max_size=3))  # -1: refused
        size = math.prod(shape) * safetensors.ITEMSIZES.get(dtype, 1)
        begin = position + draw(st.sampled_from([0] * 8 + [1, -1]))
        body = json.dumps(entry(dtype, shape, begin, begin + size), **COMPACT)
        escaped = draw(st.sampled_from([False] * 3 + [True]))  # non-ASCII as \\u escapes
        pieces.append(json.dumps(draw(names), ensure_ascii=escaped) + ":" + body)
        position = begin + size
    if draw(st.booleans()):
        strings = st.text(NASTY, max_size=3)
        values = st.one_of(strings, strings, strings, st.integers(), st.none())
        metadata = st.dictionaries(strings, values, max_size=3)
        pieces.insert(0, '"__metadata__":' + json.dumps(draw(metadata), **COMPACT))
    text = "{" + ",".join(pieces) + "}" + draw(st.sampled_from(["", "  ", "\n"]))
    return text, position + draw(st.sampled_from([0] * 8 + [1]))


def _mutated(draw: st.DrawFn, text: str) -> str:
    """One character deleted, inserted or replaced, anywhere."""
    at = draw(st.integers(0, len(text) - 1))
    character = draw(st.sampled_from(NASTY + "0159-e\t"))
    kept = draw(st.sampled_from(["", text[at]])) + draw(st.sampled_from(["", character]))
    return text[:at] + (kept if kept != text[at] else character) + text[at + 1 :]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_compact_headers_and_their_mutations_keep_the_contract(data: st.DataObject) -> None:
    text, data_len = data.draw(_compact_header())
    mutated = _mutated(data.draw, text)
    for header in (text, mutated):
        assert_agrees(header, data_len)
        assert_library_agrees(header, data_len)
