"""Crafted ONNX files through the CLI: each refused in one line, nothing written, nothing read
outside the model's folder. The bombs (2^40 elements claimed, 10,000 nested subgraphs) run
in a child process with bounded time and memory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.hostile.conftest import assert_refused, run_bounded
from tests.onnx_models import field, model_bytes, model_of, save, tensor_bytes, varint

F32x4 = np.arange(4, dtype=np.float32).tobytes()


def initializer(tensor: bytes) -> bytes:
    return model_bytes(field(5, tensor))


def nested_ifs(depth: int) -> bytes:
    """``depth`` If nodes, each the then_branch of the one above, a constant at the bottom."""
    constant = (
        field(2, b"c")
        + field(4, b"Constant")
        + field(5, field(1, b"value") + field(5, tensor_bytes("c", [4], F32x4)) + field(20, 4))
    )
    graph = field(1, constant)
    for level in range(depth):
        node = field(3, f"If_{level}".encode()) + field(4, b"If")
        branch = field(1, b"then_branch") + field(6, graph) + field(20, 5)
        graph = field(1, node + field(5, branch))
    return model_bytes(graph)


def external(
    location: str, offset: int | None = None, length: int | None = None, size: int = 4
) -> bytes:
    entries = field(13, field(1, b"location") + field(2, location.encode()))
    for key, value in (("offset", offset), ("length", length)):
        if value is not None:
            entries += field(13, field(1, key.encode()) + field(2, str(value).encode()))
    tensor = field(1, size) + field(2, 1) + field(8, b"w") + entries + field(14, 1)
    return initializer(tensor)


def truncated(tmp_path: Path) -> bytes:
    whole = save(model_of({"w": np.ones((64, 64), np.float32)}), tmp_path / "whole.onnx")
    return whole.read_bytes()[:9000]


# (file bytes, or a function of tmp_path giving them; problem in the message)
CRAFTED = [
    pytest.param(truncated, "claims 16,", id="truncated"),
    pytest.param(initializer(tensor_bytes("w", [4], F32x4)[:-18] + varint(9 << 3 | 2)
                             + varint(1000) + F32x4), "field 9 claims 1,000 bytes, but only 16",
                 id="raw_data-past-the-end"),
    pytest.param(field(1, 8) + b"\x3a\xff\xff\xff\xff\x0f", "claims 4,294,967,295",
                 id="lying-length"),
    pytest.param(initializer(tensor_bytes("w", [8], F32x4)),
                 "raw_data holds 16 bytes, but dims [8] of FLOAT need 32", id="raw_data-vs-dims"),
    pytest.param(initializer(tensor_bytes("w", [1 << 20, 1 << 20], F32x4)),
                 "need 4,398,046,511,104", id="2**40-elements"),
    pytest.param(initializer(tensor_bytes("w", [2**64 - 2], F32x4)), "negative size",
                 id="negative-dim"),
    pytest.param(initializer(tensor_bytes("w", [1] * 65, F32x4)), "over 64 values",
                 id="65-dims"),
    pytest.param(initializer(tensor_bytes("w", [4], F32x4, data_type=99)),
                 "data type 99, which diffai does not read", id="unknown-data-type"),
    pytest.param(initializer(tensor_bytes("w", [4], F32x4) + field(4, F32x4)),
                 "holds its values twice (raw_data and float_data)", id="raw-and-typed"),
    pytest.param(initializer(tensor_bytes("w", [4], F32x4) + field(2, 1)),
                 "TensorProto.data_type is written twice", id="data_type-twice"),
    pytest.param(model_bytes(field(5, tensor_bytes("w", [4], F32x4))) + field(7, b""),
                 "ModelProto.graph is written twice", id="graph-twice"),
    pytest.param(model_bytes(field(5, tensor_bytes("w", [4], F32x4)) * 2),
                 "two tensors are named 'w'", id="duplicate-names"),
    pytest.param(initializer(field(2, 1) + field(8, 7)),
                 "TensorProto.name is written as varint", id="wire-type-mismatch"),
    pytest.param(initializer(field(1, 0) + b"\x10" + b"\xff" * 11),
                 "a varint is longer than 10 bytes", id="varint-11-bytes"),
    pytest.param(initializer(tensor_bytes("w\xff", [4], F32x4).replace(b"w\xc3\xbf", b"w\xff\xfe")),
                 "TensorProto.name is not UTF-8", id="name-not-utf8"),
    pytest.param(initializer(field(8, b"w") + field(2, 6) + field(1, 4)
                             + field(5, b"\x80\x80")), "malformed varints",
                 id="cut-varint-in-int32_data"),
    pytest.param(nested_ifs(31), "subgraphs nest over 30 levels deep", id="deep-nesting"),
    pytest.param(model_bytes(field(1, field(4, b"Constant") + field(2, b"c"))),
                 "Constant 'c' has 0 attributes", id="constant-without-value"),
    pytest.param(model_bytes(field(15, b"")), "sparse initializer", id="sparse-initializer"),
    pytest.param(nested_ifs(1).replace(field(20, 4), field(20, 7)),
                 "attribute 'value' holds t but declares type 7, not 4", id="constant-type-lies"),
    pytest.param(external("../secret.bin"), "leaves the model's folder", id="external-dotdot"),
    pytest.param(external("/proc/self/environ"), "is absolute", id="external-absolute"),
    pytest.param(external("C:/Windows/win.ini"), "not a plain relative path",
                 id="external-drive"),
    pytest.param(initializer(field(2, 1) + field(8, b"w") + field(13, field(1, b"exec"))
                             + field(14, 1)),
                 "external_data has the unknown key 'exec'", id="external-unknown-key"),
    pytest.param(external("missing.bin"), "cannot be opened (No such file or directory)",
                 id="external-missing"),
]  # fmt: skip


@pytest.mark.parametrize(("content", "problem"), CRAFTED)
def test_crafted_onnx_is_refused(refused, tmp_path: Path, content, problem: str) -> None:
    data = content(tmp_path) if callable(content) else content
    hostile = tmp_path / "hostile.onnx"
    hostile.write_bytes(data)
    assert_refused(refused(hostile), problem)


def test_external_data_through_a_symlink_out_is_refused(refused, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(F32x4)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "w.data").symlink_to(outside / "secret.bin")
    hostile = folder / "model.onnx"
    hostile.write_bytes(external("w.data"))
    assert_refused(refused(hostile), "goes through a symbolic link")


def test_a_folder_symlink_inside_the_location_is_refused(refused, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "w.data").write_bytes(F32x4)
    folder = tmp_path / "model"
    folder.mkdir()
    os.symlink(tmp_path / "elsewhere", folder / "sub")
    hostile = folder / "model.onnx"
    hostile.write_bytes(external("sub/w.data"))
    assert_refused(refused(hostile), "goes through a symbolic link")


@pytest.mark.parametrize(
    ("offset", "length", "problem"),
    [
        pytest.param(8, 16, "at offset 8, 16 bytes, runs past the end of 'w.data' (16 bytes)",
                     id="offset-plus-length-past-the-end"),
        pytest.param(32, None, "runs past the end", id="offset-past-the-end"),
        pytest.param(0, 8, "raw_data holds 8 bytes, but dims [4] of FLOAT need 16",
                     id="length-short-of-the-dims"),
    ],
)  # fmt: skip
def test_external_ranges_are_checked(refused, tmp_path, offset, length, problem) -> None:
    (tmp_path / "w.data").write_bytes(F32x4)
    hostile = tmp_path / "hostile.onnx"
    hostile.write_bytes(external("w.data", offset, length))
    assert_refused(refused(hostile), problem)


def test_bombs_are_refused_in_bounded_memory_and_time(tmp_path: Path) -> None:
    bombs = {
        "claims-2**40.onnx": initializer(tensor_bytes("w", [1 << 40], F32x4)),
        "nested-10000.onnx": nested_ifs(10_000),
        "external-2**40.onnx": external("w.data", size=1 << 40),
    }
    (tmp_path / "w.data").write_bytes(F32x4)
    paths = []
    for name, data in bombs.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    problems = ["need 4,398,046,511,104", "nest over 30 levels", "need 4,398,046,511,104"]
    for refusal, problem in zip(run_bounded(paths), problems, strict=True):
        assert_refused(refusal, problem)
