"""The strict safetensors reader: every dtype read exactly, every malformed file refused by name."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from diffai.errors import MalformedModel
from diffai.formats import open_model
from tests.conftest import raw_safetensors

ALL_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8,
    "BOOL": np.bool_, "C64": np.complex64,
}  # fmt: skip


def test_every_dtype_reads_exactly(tmp_path: Path) -> None:
    """Written byte by byte, so no library decides what the dtype names mean but the spec."""
    rng = np.random.default_rng(0)
    header, blobs, offset = {}, [], 0
    arrays = {}
    for name, numpy_type in ALL_DTYPES.items():
        array = (rng.standard_normal((3, 5)) * 10).astype(numpy_type)
        arrays[name] = array
        blob = array.tobytes()
        header[name.lower()] = {
            "dtype": name,
            "shape": [3, 5],
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    model = open_model(raw_safetensors(tmp_path / "all.safetensors", header, b"".join(blobs)))
    assert model.format == "safetensors"
    for name, array in arrays.items():
        tensor = model.tensors[name.lower()]
        assert tensor.shape == (3, 5)
        np.testing.assert_array_equal(tensor.array(), array)
        assert tensor.array().dtype == array.dtype


def test_metadata_scalar_and_empty_tensors(write_safetensors) -> None:
    path = write_safetensors(
        "m.safetensors",
        {"scalar": np.array(2.5, np.float32), "empty": np.zeros((0, 3), np.float32)},
        metadata={"format": "pt", "epoch": "3"},
    )
    model = open_model(path)
    assert model.metadata == {"format": "pt", "epoch": "3"}
    assert model.tensors["scalar"].shape == () and float(model.tensors["scalar"].array()) == 2.5
    assert model.tensors["empty"].shape == (0, 3) and model.tensors["empty"].nbytes == 0
    assert model.size_bytes == path.stat().st_size


def test_content_wins_over_extension(write_safetensors) -> None:
    path = write_safetensors("weights.bin", {"w": np.ones(3, np.float32)})
    assert open_model(path).format == "safetensors"


def _entry(dtype: str = "F32", shape: list[int] | None = None, offsets: list[int] | None = None):
    return {"dtype": dtype, "shape": shape or [2], "data_offsets": offsets or [0, 8]}


MALFORMED = [
    pytest.param({"a": _entry(), "b": _entry(offsets=[4, 12])}, 12, "overlaps", id="overlap"),
    pytest.param({"a": _entry(), "b": _entry(offsets=[12, 20])}, 20, "gap of 4", id="gap"),
    pytest.param({"a": _entry()}, 12, "4 trailing bytes", id="trailing"),
    pytest.param({"a": _entry(offsets=[0, 12])}, 12, "needs 8", id="length-mismatch"),
    pytest.param({"a": _entry(dtype="F4")}, 8, "unknown dtype 'F4'", id="unknown-dtype"),
    pytest.param({"a\x00b": _entry()}, 8, "control character '\\x00'", id="nul-in-name"),
    pytest.param({"a\nb": _entry()}, 8, "control character '\\n'", id="newline-in-name"),
    pytest.param({"a": _entry(shape=[-2])}, 8, "not a list of sizes", id="negative-shape"),
    pytest.param({"a": _entry(offsets=[8, 0])}, 8, "not [begin, end]", id="reversed-offsets"),
    pytest.param({"a": {**_entry(), "extra": 1}}, 8, "exactly dtype, shape", id="unknown-key"),
    pytest.param({"a": _entry(offsets=[0, 16], shape=[4])}, 8, "past the data", id="short-data"),
    pytest.param({"__metadata__": {"k": 1}, "a": _entry()}, 8, "strings to strings", id="metadata"),
]


@pytest.mark.parametrize(("header", "data_len", "message"), MALFORMED)
def test_malformed_headers_are_refused_with_the_reason(tmp_path: Path, header, data_len, message):
    path = raw_safetensors(tmp_path / "bad.safetensors", header, bytes(data_len))
    with pytest.raises(MalformedModel) as caught:
        open_model(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    entry = json.dumps(_entry())
    header = f'{{"a": {entry}, "a": {entry}}}'.encode()
    path = raw_safetensors(tmp_path / "dup.safetensors", header, bytes(8))
    with pytest.raises(MalformedModel, match="repeats the key 'a'"):
        open_model(path)


def test_huge_header_length_is_refused_before_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 200 * 1024 * 1024) + b"{}")
    with pytest.raises(MalformedModel, match="over the 100 MB limit"):
        open_model(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            struct.pack("<Q", 50) + b"{}", "claims 50 bytes but the file has 10", id="truncated"
        ),
        pytest.param(struct.pack("<Q", 4) + b"{abc", "not valid JSON", id="bad-json"),
        pytest.param(struct.pack("<Q", 2) + b"{\xff", "not UTF-8", id="bad-utf8"),
        pytest.param(struct.pack("<Q", 2) + b"[]", "not a JSON object", id="not-object"),
    ],
)
def test_broken_headers(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    with pytest.raises(MalformedModel, match=message.replace("[", r"\[")):
        open_model(path)
