"""Crafted GGUF files: each exits 2 with one line that says what is wrong, and nothing is read past
the file or allocated from a count the file states.

Before the GGUF reader these were all "a GGUF model, which diffai cannot read yet"; each
problem text below is the reader's own. The ones built to exhaust memory or time
(2**40 elements, huge counts and lengths) also run in the bounded child.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from diffai.formats.gguf import header
from tests.gguf_files import Q, gguf_string, key_u32, raw_gguf, tensor_info, write_gguf
from tests.hostile.conftest import assert_refused, run_bounded

F32_ROW = np.arange(8, dtype=np.float32).tobytes()  # 32 bytes: one aligned f32 tensor of 8


def one_tensor(path: Path, **options: object) -> Path:
    return raw_gguf(path, [], [tensor_info("w", (8,))], F32_ROW, **options)  # type: ignore[arg-type]


def truncated(path: Path) -> Path:
    full = write_gguf(path, {"w": np.ones((4, 64), np.float32)}, {"general.name": "x"})
    full.write_bytes(full.read_bytes()[:100])
    return full


def elements_2_40(path: Path) -> Path:
    """2**40 f32 elements claimed (4 TiB) in a 100-byte file."""
    return raw_gguf(path, [], [tensor_info("w", (1 << 20, 1 << 20))], F32_ROW)


def string_length(path: Path) -> Path:
    key = gguf_string("general.name") + struct.pack("<IQ", 8, 1 << 60)
    return raw_gguf(path, [key], counts=(0, 1))


def key_count(path: Path) -> Path:
    return raw_gguf(path, [key_u32("a", 1)], counts=(0, 1 << 40))


def tensor_count_over_limit(path: Path) -> Path:
    return raw_gguf(path, [], [tensor_info("w", (8,))], F32_ROW, counts=(200_001, 0))


def tensor_count_past_the_file(path: Path) -> Path:
    return raw_gguf(path, [], [tensor_info("w", (8,))], F32_ROW, counts=(150_000, 0))


def array_length(path: Path) -> Path:
    array = gguf_string("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, 1 << 61)
    return raw_gguf(path, [array], counts=(0, 1))


def string_array_length(path: Path) -> Path:
    array = gguf_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 1 << 40)
    return raw_gguf(path, [array + gguf_string("a")], counts=(0, 1))


def misaligned(path: Path) -> Path:
    infos = [tensor_info("a", (8,)), tensor_info("b", (8,), offset=36)]
    return raw_gguf(path, [], infos, F32_ROW + bytes(4) + F32_ROW)


def overlapping(path: Path) -> Path:
    infos = [tensor_info("a", (8,)), tensor_info("b", (8,), offset=0)]
    return raw_gguf(path, [], infos, F32_ROW * 2)


def offset_past_the_end(path: Path) -> Path:
    return raw_gguf(path, [], [tensor_info("w", (8,), offset=1 << 40)], F32_ROW)


def alignment(value: int, value_type: int = 4) -> Callable[[Path], Path]:
    return lambda path: raw_gguf(
        path, [key_u32("general.alignment", value, value_type)], counts=(0, 1)
    )


CASES = [
    pytest.param(truncated, "needs 8 bytes at byte 93, but the file has 7 left", id="truncated"),
    pytest.param(
        elements_2_40,
        "tensor 'w' (1,099,511,627,776 elements of f32, 4,398,046,511,104 bytes) ends at byte "
        "4,398,046,511,200, past the end of the file (128 bytes)",
        id="2**40-elements",
    ),
    pytest.param(
        string_length,
        "the value of key 'general.name' needs 1,152,921,504,606,846,976 bytes at byte 56, "
        "but the file has 0 left",
        id="huge-string-length",
    ),
    pytest.param(
        key_count,
        "the header claims 1,099,511,627,776 keys, over the limit of 10,000",
        id="huge-key-count",
    ),
    pytest.param(
        tensor_count_over_limit,
        "the header claims 200,001 tensors, over the limit of 200,000",
        id="tensors-over-the-limit",
    ),
    pytest.param(
        tensor_count_past_the_file,
        "the header claims 150,000 tensors, more than the file's 72 remaining bytes can hold",
        id="tensors-past-the-file",
    ),
    pytest.param(
        array_length,
        "the array of key 'tokenizer.ggml.scores' needs 9,223,372,036,854,775,808 bytes",
        id="huge-array",
    ),
    pytest.param(
        string_array_length,
        "key 'tokenizer.ggml.tokens' claims 1,099,511,627,776 strings, more than the file holds",
        id="huge-string-array",
    ),
    pytest.param(
        misaligned,
        "tensor 'b' starts at data offset 36, not a multiple of the alignment (32)",
        id="misaligned",
    ),
    pytest.param(
        overlapping,
        "tensor 'b' starts at data offset 0, but llama.cpp expects 32 (tensors follow one "
        "another, each padded to the alignment)",
        id="overlapping",
    ),
    pytest.param(
        offset_past_the_end,
        "tensor 'w' starts at data offset 1,099,511,627,776, but llama.cpp expects 0",
        id="offset-past-the-end",
    ),
    pytest.param(alignment(0), "general.alignment is 0, not a power of two", id="alignment-0"),
    pytest.param(alignment(48), "general.alignment is 48, not a power of two", id="alignment-48"),
    pytest.param(alignment(32, 5), "general.alignment has type 5, not u32 (4)", id="alignment-i32"),
    pytest.param(
        lambda p: one_tensor(p, version=1),
        "GGUF version 1 is not one diffai reads (2 or 3)",
        id="version-1",
    ),
    pytest.param(
        lambda p: one_tensor(p, version=3 << 24),
        "GGUF version 50331648 (a big-endian file?) is not one diffai reads (2 or 3)",
        id="big-endian",
    ),
    pytest.param(
        lambda p: raw_gguf(p, [key_u32("a", 1), key_u32("a", 2)]),
        "key 'a' appears twice",
        id="duplicate-key",
    ),
    pytest.param(
        lambda p: raw_gguf(
            p, [], [tensor_info("w", (8,)), tensor_info("w", (8,), offset=32)], F32_ROW * 2
        ),
        "tensor name 'w' appears twice",
        id="duplicate-tensor",
    ),
    pytest.param(
        lambda p: raw_gguf(p, [], [tensor_info("w", (8,), type_id=99)], F32_ROW),
        "tensor 'w' has unknown ggml type 99",
        id="unknown-type",
    ),
    pytest.param(
        lambda p: raw_gguf(p, [], [tensor_info("w", (33,), type_id=8)], bytes(64)),
        "tensor 'w': rows of 33 elements are not a whole number of q8_0 blocks (32)",
        id="partial-block",
    ),
    pytest.param(
        lambda p: raw_gguf(p, [], [tensor_info("w" * 64, (8,))], F32_ROW),
        "is 64 bytes long, over llama.cpp's limit of 63",
        id="long-name",
    ),
    pytest.param(
        lambda p: raw_gguf(p, [], [tensor_info("w", (1, 1, 1, 1, 8))], F32_ROW),
        "tensor 'w' has 5 dimensions, over ggml's 4",
        id="five-dims",
    ),
    pytest.param(
        lambda p: raw_gguf(p, [], [tensor_info("w", (8,))], F32_ROW + b"hidden"),
        "6 bytes after the last tensor, which no loader reads",
        id="trailing-bytes",
    ),
    pytest.param(
        lambda p: raw_gguf(p, [gguf_string("k") + struct.pack("<IIQ", 9, 9, 1)], counts=(0, 1)),
        "key 'k' is an array of type 9, which GGUF does not allow",
        id="nested-array",
    ),
    pytest.param(
        lambda p: raw_gguf(p, [gguf_string(b"\xff") + struct.pack("<II", 4, 0)]),
        "a key is not UTF-8",
        id="key-not-utf8",
    ),
]


@pytest.mark.parametrize(("build", "problem"), CASES)
def test_a_hostile_gguf_is_refused_in_one_line(refused, tmp_path: Path, build, problem) -> None:
    assert_refused(refused(build(tmp_path / "hostile.gguf")), problem)


def test_the_bombs_are_refused_in_bounded_memory_and_time(tmp_path: Path) -> None:
    bombs = {
        elements_2_40: "past the end of the file (128 bytes)",
        string_length: "needs 1,152,921,504,606,846,976 bytes",
        key_count: "over the limit of 10,000",
        array_length: "needs 9,223,372,036,854,775,808 bytes",
        string_array_length: "claims 1,099,511,627,776 strings",
    }
    paths = [bomb(tmp_path / f"{bomb.__name__}.gguf") for bomb in bombs]
    for refusal, problem in zip(run_bounded(paths), bombs.values(), strict=True):
        assert_refused(refusal, problem)


def test_strings_over_the_header_limit_are_refused(refused, tmp_path, monkeypatch) -> None:
    """Each string in an array is walked, so their total is bounded (4,000,000 in real use)."""
    monkeypatch.setattr(header, "MAX_STRINGS", 10)
    tokens = [f"t{i}" for i in range(11)]
    path = write_gguf(tmp_path / "vocab.gguf", {}, {"tokenizer.ggml.tokens": tokens})
    assert_refused(
        refused(path),
        "key 'tokenizer.ggml.tokens' brings the header's strings over the limit of 10",
    )


def test_a_split_with_a_wrong_number_is_refused(refused, tmp_path: Path) -> None:
    write_gguf(
        tmp_path / "m.gguf",
        {"a": np.ones(32, np.float32), "b": np.ones(32, np.float32)},
        split_max_tensors=1,
    )
    second, first = tmp_path / "m-00002-of-00002.gguf", tmp_path / "m-00001-of-00002.gguf"
    second.write_bytes(first.read_bytes())  # split 1 twice: its split.no says 0
    assert_refused(
        refused(first),
        "its split.no and split.count are 0 and 2, but its name makes it split 1 (from 0) of 2",
        second,
    )


def test_a_q8_k_tensor_is_refused_naming_its_type(refused, tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "q8k.gguf", {"w": (np.zeros((1, 292), np.uint8), Q.Q8_K)})
    assert_refused(refused(path), "tensor 'w' is q8_k, which the gguf package cannot dequantize")
