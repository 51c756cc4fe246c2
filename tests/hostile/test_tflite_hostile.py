"""Crafted TFLite files: each exits 2 with one line, and no offset is followed out of the file.

Before the TFLite reader each was "a TensorFlow Lite model, which diffai cannot read
yet"; the problem texts below are the reader's own.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.hostile.conftest import assert_refused, run_bounded
from tests.real_models import REAL
from tests.tflite_files import Blob, Constant, Numbers, Scalar, Table, Tables, build, tflite_model

EMOTION = REAL / "emotion_model_quantized.tflite"
W = np.arange(12, dtype=np.int8).reshape(3, 4)


def model_of(tensors: list[Table], buffers: list[Table], version: int = 3) -> bytes:
    subgraph = Table([Tables(tensors)])
    return build(Table([Scalar("<I", version), None, Tables([subgraph]), None, Tables(buffers)]))


def tensor(
    shape: list[int], type_id: int = 9, buffer: int = 1, name: bytes = b"w", **more: Table
) -> Table:
    fields = [Numbers("<i", shape), Scalar("<b", type_id), Scalar("<I", buffer), Blob(name)]
    fields += [more.get("quantization"), None, more.get("sparsity")]
    return Table(fields)


def with_buffer(*tensors: Table, data: bytes = W.tobytes(), buffer: Table | None = None) -> bytes:
    return model_of(list(tensors), [Table(), buffer or Table([Blob(data)])])


def quantized(scales: list[float], zeros: list[int], axis: int = 0) -> Table:
    fields = [None, None, Numbers("<f", scales), Numbers("<q", zeros), None, None]
    return Table([*fields, Scalar("<i", axis)])


def patched(data: bytes, at: int, fmt: str, value: int) -> bytes:
    raw = bytearray(data)
    struct.pack_into(fmt, raw, at, value)
    return bytes(raw)


def real_truncated() -> bytes:
    return EMOTION.read_bytes()[:40_000]


def root_table(data: bytes) -> int:
    return struct.unpack_from("<I", data, 0)[0]


def tensors_vector_claiming(count: int) -> bytes:
    """The real model with its tensor vector's length replaced, and room for the claim."""
    data = EMOTION.read_bytes()
    raw = bytearray(data + bytes(4 * count))
    at = raw.index(struct.pack("<I", 78))  # the first u32 78: the subgraph's tensor count
    struct.pack_into("<I", raw, at, count)
    return bytes(raw)


def real_patched(fmt: str, value: int, at: Callable[[bytes], int] = lambda data: 0) -> bytes:
    data = EMOTION.read_bytes()
    return patched(data, at(data), fmt, value)


def vtable_field(index: int) -> Callable[[bytes], int]:
    """Where the model table's vtable keeps field ``index``'s offset."""

    def at(data: bytes) -> int:
        table = root_table(data)
        return table - struct.unpack_from("<i", data, table)[0] + 4 + 2 * index

    return at


def lying_buffer_length() -> bytes:
    data = with_buffer(tensor([3, 4]))
    return patched(data, data.index(W.tobytes()) - 4, "<I", 1 << 30)


def offset_buffer() -> bytes:
    return with_buffer(
        tensor([3, 4]), buffer=Table([None, Scalar("<Q", 64), Scalar("<Q", 1 << 40)])
    )


def scales(values: list[float], zeros: list[int], axis: int = 0) -> Callable[[], bytes]:
    return lambda: with_buffer(tensor([3, 4], quantization=quantized(values, zeros, axis)))


CASES: list[tuple[str, Callable[[], bytes], str]] = [
    ("truncated", real_truncated, "past the end"),
    (
        "root-past-the-end",
        lambda: real_patched("<I", 0xFFFFFFF0),
        "points to byte 4,294,967,280, past the end",
    ),
    (
        "root-points-at-itself",
        lambda: real_patched("<I", 0),
        "the offset of the model at byte 0 points at itself",
    ),
    (
        "vtable-past-the-end",
        lambda: real_patched("<i", -(1 << 30), root_table),
        "the vtable of the model at byte 1,073,741,852 is past the end",
    ),
    (
        "vtable-is-the-table",
        lambda: real_patched("<i", 0, root_table),
        "the model: its vtable at byte 28 is malformed or past the end",
    ),
    (
        "buffer-index-out-of-range",
        lambda: with_buffer(tensor([3, 4], buffer=7)),
        "tensor 'w' names buffer 7, but the model has 2",
    ),
    ("buffer-length-lies", lying_buffer_length, "claims 1,073,741,824 elements of 1 bytes"),
    (
        "buffer-offset-past-the-end",
        offset_buffer,
        "buffer 1 lies at bytes 64 to 1,099,511,627,840, past the end of the file",
    ),
    (
        "shape-bigger-than-buffer",
        lambda: with_buffer(tensor([1000, 1000])),
        "its buffer holds 12 bytes, but shape [1000, 1000] of i8 needs 1,000,000",
    ),
    (
        "negative-size",
        lambda: with_buffer(tensor([-3, -4])),
        "tensor 'w' has shape [-3, -4], with a negative size",
    ),
    (
        "scales-and-zero-points-differ",
        scales([0.1, 0.2, 0.3], [0]),
        "tensor 'w' has 3 scales and 1 zero points",
    ),
    (
        "scales-not-one-per-channel",
        scales([0.1, 0.2], [0, 0], 1),
        "tensor 'w' has 2 scales along axis 1 of shape [3, 4]",
    ),
    ("axis-out-of-range", scales([0.1, 0.2, 0.3], [0, 0, 0], 9), "has 3 scales along axis 9"),
    (
        "schema-version-2",
        lambda: model_of([], [Table()], version=2),
        "TFLite schema version 2, not the 3 TFLite reads",
    ),
    (
        "string-constant",
        lambda: with_buffer(tensor([12], type_id=5)),
        "tensor 'w' holds STRING data, which diffai does not read",
    ),
    (
        "sparse",
        lambda: with_buffer(tensor([3, 4], sparsity=Table())),
        "tensor 'w' is sparse, which diffai does not read yet",
    ),
    (
        "duplicate-name",
        lambda: with_buffer(tensor([3, 4]), tensor([3, 4])),
        "tensor name 'w' appears twice; refused as ambiguous",
    ),
    (
        "name-not-utf8",
        lambda: with_buffer(tensor([3, 4], name=b"\xff")),
        "the name of tensor 0 is not UTF-8",
    ),
    (
        "tensors-over-the-limit",
        lambda: tensors_vector_claiming(200_001),
        "it lists 200,001 tensors, over the limit of 200,000",
    ),
    (
        "field-outside-its-table",
        lambda: real_patched("<H", 60_000, vtable_field(4)),
        "the model: field 4 lies outside its table",
    ),
]


@pytest.mark.parametrize(("build_file", "problem"), [pytest.param(b, p, id=i) for i, b, p in CASES])
def test_a_hostile_tflite_is_refused_in_one_line(
    refused, tmp_path: Path, build_file, problem
) -> None:
    path = tmp_path / "hostile.tflite"
    path.write_bytes(build_file())
    assert_refused(refused(path), problem)


def test_the_lying_lengths_are_refused_in_bounded_memory(tmp_path: Path) -> None:
    lying = {
        name: problem for name, _, problem in CASES if "past" in problem or "claims" in problem
    }
    paths = []
    for name, make, _ in CASES:
        if name in lying:
            paths.append(tmp_path / f"{name}.tflite")
            paths[-1].write_bytes(make())
    for refusal, problem in zip(run_bounded(paths), lying.values(), strict=True):
        assert_refused(refusal, problem)


def test_a_well_formed_model_of_these_parts_is_read(run_cli, tmp_path: Path) -> None:
    """The builder above makes readable files: the refusals come from the crafted part."""
    path = tmp_path / "fine.tflite"
    path.write_bytes(tflite_model([Constant("w", W, [0.5], [1])]))
    assert run_cli(path, path).code == 0
