"""Crafted safetensors files through the CLI: each refused in one line, nothing written.

tests/test_format_safetensors.py checks the reader's messages for the plainer
breakages (overlap, gap, trailing bytes, unknown dtype ...); here every issue
bullet goes through ``diffai`` itself, and the bombs through a child process
with bounded time and memory.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import raw_safetensors
from tests.hostile.conftest import Refusal, assert_refused, run_bounded


def entry(dtype: Any = "F32", shape: Any = (2,), offsets: Any = (0, 8)) -> dict[str, Any]:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


ENTRY = json.dumps(entry())


def header_of(text: str) -> bytes:
    return text.encode()


def length_then(length: int, rest: bytes = b"{}") -> bytes:
    """A header length field, then whatever follows it."""
    return struct.pack("<Q", length) + rest


# (header: dict or raw bytes, data bytes, problem in the message)
HEADERS = [
    pytest.param({"a": entry(), "a\x00b": entry(offsets=(8, 16))}, 16, "control character '\\x00'",
                 id="nul-in-name"),
    pytest.param({"a\x1b[31m": entry()}, 8, "control character '\\x1b'", id="escape-in-name"),
    pytest.param({"a\u2028b": entry()}, 8, "contains '\\u2028'", id="line-separator-in-name"),
    pytest.param({"a" * 1_000_000: entry()}, 8, "1,000,000 characters long", id="1mb-name"),
    pytest.param(header_of(f'{{"a": {ENTRY}, "a": {ENTRY}}}'), 8, "repeats the key 'a'",
                 id="duplicate-keys"),
    pytest.param({"a": entry(), "b": entry(offsets=(4, 12))}, 12, "overlaps", id="overlap"),
    pytest.param({"a": entry(), "b": entry(offsets=(12, 20))}, 20, "gap of 4", id="gap"),
    pytest.param({"a": entry(offsets=(2**63, 2**63 + 8))}, 8, "gap of 9223372036854775808",
                 id="offsets-out-of-range"),
    pytest.param({"a": entry(offsets=(-8, 0))}, 8, "are not [begin, end]", id="negative-offset"),
    pytest.param({"a": entry(shape=(2**32, 2**32, 2**32), offsets=(0, 8))}, 8,
                 "needs 316912650057057350374175801344", id="shape-product-over-64-bits"),
    pytest.param({"a": entry(shape=(0, 2**64), offsets=(0, 0))}, 0,
                 "has a size that does not fit in 64 bits", id="zero-times-2**64"),
    pytest.param({"a": entry(shape=(1,) * 65, offsets=(0, 4))}, 4, "65 axes", id="65-axes"),
    pytest.param({"a": entry(shape=(-2,))}, 8, "is not a list of sizes", id="negative-dim"),
    pytest.param({"a": entry(shape=(2.0,))}, 8, "is not a list of sizes", id="float-dim"),
    pytest.param({"a": entry(shape=(True, True))}, 8, "is not a list of sizes", id="bool-dim"),
    pytest.param({"a": entry(shape="2")}, 8, "is not a list of sizes", id="string-shape"),
    pytest.param({"a": entry(dtype="F128")}, 8, "unknown dtype 'F128'", id="unknown-dtype"),
    pytest.param({"a": entry(dtype=["F32"])}, 8, "unknown dtype ['F32']", id="dtype-not-string"),
    pytest.param({"a": entry(offsets=(0, 16), shape=(4,))}, 8, "past the data", id="truncated"),
    pytest.param({"a": entry()}, 12, "4 trailing bytes", id="trailing"),
    pytest.param(header_of('{"a": {"dtype": "F32", "shape": [' + "9" * 5000 + ']}}'), 8,
                 "a number has more than 4,300 digits", id="5000-digit-number"),
    pytest.param(header_of('{"a":' + "[" * 100_000 + "]" * 100_000 + "}"), 0,
                 "nested too deeply", id="100k-nested-arrays"),
    pytest.param(header_of(f'{{"\\ud800": {ENTRY}}}'), 8, "contains '\\ud800'",
                 id="lone-surrogate-name"),
    pytest.param(header_of('{"a": {"dtype": "F32", "shape": [-0, 2], "data_offsets": [0, 0]}}'),
                 0, "shape [-0.0, 2] is not a list of sizes", id="minus-zero-dim"),
    pytest.param(header_of('{"a": {"dtype": "F32", "shape": [2], "data_offsets": [-0, 8]}}'),
                 8, "data_offsets [-0.0, 8] are not [begin, end]", id="minus-zero-offset"),
    pytest.param(header_of(f'{{"__metadata__": {{"k": "\\udfff"}}, "a": {ENTRY}}}'), 8,
                 "__metadata__ holds a lone surrogate escape", id="surrogate-in-metadata"),
    pytest.param(header_of(f'{{"__metadata__":{{"\\ud800":"v"}},"a":{ENTRY.replace(" ", "")}}}'),
                 8, "__metadata__ holds a lone surrogate escape", id="compact-metadata-surrogate"),
    pytest.param(b"\xff\xfe{}", 0, "not UTF-8", id="non-utf8"),
    pytest.param(b"{'a': 1}", 0, "not valid JSON", id="non-json"),
    pytest.param(b"[1, 2]", 0, "not a JSON object", id="json-list"),
]  # fmt: skip


@pytest.mark.parametrize(("header", "data_len", "problem"), HEADERS)
def test_a_crafted_header_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path, header: Any, data_len: int, problem: str
) -> None:
    hostile = raw_safetensors(tmp_path / "hostile.safetensors", header, bytes(data_len))
    assert_refused(refused(hostile), problem)


def shaped(shape: tuple[int, ...]) -> bytes:
    """A header declaring ``shape`` with the data that shape's first axis of 0 would need."""
    data = 0 if 0 in shape else 8
    encoded = json.dumps({"a": entry(shape=shape, offsets=(0, data))}).encode()
    return length_then(len(encoded), encoded + bytes(data))


# Built to exhaust memory or time, so read in a child process with both bounded:
# name -> (content, problem in the message)
BOMBS = {
    "length-2-62": (length_then(2**62), "claims 4611686018427387904 bytes, over the 100 MB limit"),
    "length-2-64-minus-1": (length_then(2**64 - 1), "over the 100 MB limit"),
    "length-150MB": (length_then(150 << 20), "over the 100 MB limit"),
    "length-past-the-end": (length_then(1000), "claims 1000 bytes but the file has 10"),
    "empty-file": (b"", "0 bytes, too short for a header"),
    "3-bytes": (b"\x02\x00\x00", "3 bytes, too short for a header"),
    "2-62-elements": (shaped((2**31, 2**31)), "needs 18446744073709551616"),
    "empty-of-2-124": (shaped((0, 2**62, 2**62)), "more bytes than a 64-bit size can count"),
}  # fmt: skip


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Refusal]:
    folder = tmp_path_factory.mktemp("bombs")
    paths = [folder / f"{name}.safetensors" for name in BOMBS]
    for path, (content, _) in zip(paths, BOMBS.values(), strict=True):
        path.write_bytes(content)
    return dict(zip(BOMBS, run_bounded(paths), strict=True))


@pytest.mark.parametrize("name", list(BOMBS))
def test_a_bomb_is_refused_in_bounded_memory_and_time(bombs: dict[str, Refusal], name: str) -> None:
    assert_refused(bombs[name], BOMBS[name][1])


def empty_tensors(count: int) -> bytes:
    """A header of ``count`` zero-size tensors and no data: a few dozen bytes a tensor."""
    entries = b",".join(
        b'"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}' % index for index in range(count)
    )
    return length_then(len(entries) + 2, b"{" + entries + b"}")


def test_a_million_empty_tensors_are_refused_before_they_are_parsed(tmp_path: Path) -> None:
    """67 MB of header: it took 55 s and 2.5 GiB, a per-tensor step at a time."""
    path = tmp_path / "million.safetensors"
    path.write_bytes(empty_tensors(1_000_000))
    (refusal,) = run_bounded([path])
    assert_refused(refusal, "safetensors header lists 1,000,000 tensors, over the limit of 200,000")
