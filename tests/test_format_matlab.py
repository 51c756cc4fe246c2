"""The MATLAB reader: v5 through scipy, v7.3 through h5py, the same tensors from both."""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse

from diffai.errors import MalformedModel, MissingExtra, UnreadableModel
from diffai.formats import matlab, open_model

V73_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5"
MATLAB_CLASS = {
    np.dtype(np.float64): "double", np.dtype(np.float32): "single",
    np.dtype(np.int8): "int8", np.dtype(np.uint16): "uint16", np.dtype(np.int64): "int64",
}  # fmt: skip

VARIABLES: dict[str, Any] = {
    "weights": np.arange(6.0).reshape(2, 3),
    "row": np.array([[1.5, -2.0, 3.25]]),
    "mask": np.array([[True, False, True]]),
    "counts": np.array([[1, 2], [3, 4]], np.int64),
    "codes": np.array([[7, 65535]], np.uint16),
    "phase": np.array([[1 + 2j, 3 - 1j]]),
    "empty": np.zeros((0, 3)),
    "name": "resnet",
    "labels": np.array(["cat", "dog"]),
    "net": {
        "layer1": {"W": np.ones((2, 2), np.float32), "b": np.array([[0.5, 0.25]], np.float32)},
        "epochs": np.array([[12.0]]),
        "optimizer": "adam",
    },
    "history": [np.array([[0.9, 0.8]]), "note"],
    "grid": np.array([["a", "b"], ["c", "d"]], dtype=object),  # a 2x2 cell
    "blank": "",
}
EXPECTED_TENSORS = {
    "weights": ((2, 3), "f64"), "row": ((1, 3), "f64"), "mask": ((1, 3), "bool"),
    "counts": ((2, 2), "i64"), "codes": ((1, 2), "u16"), "phase": ((1, 2), "c128"),
    "empty": ((0, 3), "f64"), "net.layer1.W": ((2, 2), "f32"), "net.layer1.b": ((1, 2), "f32"),
    "net.epochs": ((1, 1), "f64"), "history.0": ((1, 2), "f64"),
}  # fmt: skip
EXPECTED_SCALARS = {
    "name": "resnet",
    "labels": ["cat", "dog"],
    "net.optimizer": "adam",
    "history.1": "note",
    "grid": ["a", "c", "b", "d"],  # MATLAB's column-major linear order
    "blank": "",
}


def write_v73(path: Path, variables: dict[str, Any]) -> Path:
    """A v7.3 file in MATLAB's layout: transposed data, MATLAB_class, a 512-byte userblock."""
    with h5py.File(path, "w", userblock_size=512) as handle:
        for name, value in variables.items():
            _put(handle, name, value)
    with path.open("r+b") as raw:
        raw.write(V73_HEADER.ljust(116, b" "))
    return path


def _put(parent: h5py.Group, name: str, value: Any) -> None:
    if isinstance(value, dict):
        group = parent.create_group(name)
        group.attrs["MATLAB_class"] = np.bytes_(b"struct")
        for key, child in value.items():
            _put(group, key, child)
    elif isinstance(value, str) or (isinstance(value, np.ndarray) and value.dtype.kind == "U"):
        rows = [value] if isinstance(value, str) else list(value)
        codes = np.array([np.frombuffer(row.encode("utf-16-le"), "<u2") for row in rows])
        _dataset(parent, name, codes.T, "char").attrs["MATLAB_int_decode"] = np.int32(2)
    elif isinstance(value, list) or value.dtype == object:
        _put_cell(parent, name, _as_cell(value))
    elif value.size == 0:
        _dataset(parent, name, np.array(value.shape, np.uint64), "double").attrs["MATLAB_empty"] = 1
    elif value.dtype == bool:
        _dataset(parent, name, value.T.astype(np.uint8), "logical")
    elif value.dtype.kind == "c":
        pairs = np.empty(value.T.shape, [("real", "<f8"), ("imag", "<f8")])
        pairs["real"], pairs["imag"] = value.T.real, value.T.imag
        _dataset(parent, name, pairs, "double")
    else:
        _dataset(parent, name, value.T, MATLAB_CLASS[value.dtype])


def _as_cell(value: list[Any] | np.ndarray) -> np.ndarray:
    """A list is a 1xN cell, as savemat writes it."""
    if isinstance(value, np.ndarray):
        return value
    cell = np.empty((1, len(value)), dtype=object)
    for index, item in enumerate(value):
        cell[0, index] = item
    return cell


def _put_cell(parent: h5py.Group, name: str, cell: np.ndarray) -> None:
    """Each element goes to #refs#; the cell itself, stored transposed, holds references."""
    refs = parent.file.require_group("#refs#")
    stored = np.empty(cell.T.shape, dtype=h5py.ref_dtype)
    for position, item in np.ndenumerate(cell.T):
        target = f"{name}_{'_'.join(map(str, position))}"
        _put(refs, target, item)
        stored[position] = refs[target].ref
    _dataset(parent, name, stored, "cell")


def _dataset(parent: h5py.Group, name: str, data: np.ndarray, matlab_class: str) -> h5py.Dataset:
    dataset = parent.create_dataset(name, data=data)
    dataset.attrs["MATLAB_class"] = np.bytes_(matlab_class.encode())
    return dataset


@pytest.fixture
def v5_path(tmp_path: Path) -> Path:
    path = tmp_path / "model.mat"
    scipy.io.savemat(path, VARIABLES)
    return path


@pytest.fixture
def v73_path(tmp_path: Path) -> Path:
    return write_v73(tmp_path / "model73.mat", VARIABLES)


def _check_variables(path: Path) -> None:
    model = open_model(path)
    assert model.format == "matlab"
    assert model.size_bytes == path.stat().st_size
    shapes = {name: (ref.shape, ref.dtype) for name, ref in model.tensors.items()}
    assert shapes == EXPECTED_TENSORS
    assert model.scalars == EXPECTED_SCALARS
    for name, ref in model.tensors.items():
        assert ref.name == name
        assert ref.array().shape == ref.shape
    np.testing.assert_array_equal(model.tensors["weights"].array(), VARIABLES["weights"])
    np.testing.assert_array_equal(model.tensors["mask"].array(), VARIABLES["mask"])
    np.testing.assert_array_equal(model.tensors["phase"].array(), VARIABLES["phase"])
    np.testing.assert_array_equal(
        model.tensors["net.layer1.b"].array(), VARIABLES["net"]["layer1"]["b"]
    )
    np.testing.assert_array_equal(model.tensors["history.0"].array(), VARIABLES["history"][0])


@pytest.mark.parametrize("compress", [False, True], ids=["v5", "v7-compressed"])
def test_v5_variables(tmp_path: Path, compress: bool) -> None:
    path = tmp_path / "m.mat"
    scipy.io.savemat(path, VARIABLES, do_compression=compress)
    _check_variables(path)


def test_v5_metadata(v5_path: Path) -> None:
    metadata = open_model(v5_path).metadata
    assert metadata["header"].startswith("MATLAB 5.0 MAT-file Platform: ")
    assert not metadata["header"].endswith((" ", "\0"))
    assert (metadata["version"], metadata["globals"]) == ("1.0", [])


def test_v73_variables(v73_path: Path) -> None:
    _check_variables(v73_path)
    assert open_model(v73_path).metadata == {"header": V73_HEADER.decode()}


def test_v5_and_v73_give_equal_tensors(v5_path: Path, v73_path: Path) -> None:
    v5, v73 = open_model(v5_path), open_model(v73_path)
    assert v5.tensors.keys() == v73.tensors.keys()
    assert v5.scalars == v73.scalars
    for name, ref in v5.tensors.items():
        other = v73.tensors[name]
        assert (ref.shape, ref.dtype) == (other.shape, other.dtype), name
        left, right = ref.array(), other.array()
        assert left.dtype == right.dtype, name
        np.testing.assert_array_equal(left, right, err_msg=name)


@pytest.mark.parametrize("version", ["v5", "v73"])
def test_values_come_back_mapped_never_copied_into_this_process(
    tmp_path: Path, version: str
) -> None:
    """The isolated reader hands back files; this process maps them (4 MiB here, not read)."""
    big = np.ones((512, 1024))
    path = tmp_path / "big.mat"
    if version == "v5":
        scipy.io.savemat(path, {"big": big})
    else:
        write_v73(path, {"big": big})
    tracemalloc.start()
    try:
        values = open_model(path).tensors["big"].array()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024
    np.testing.assert_array_equal(values, big)


@pytest.mark.parametrize("writer", ["v5", "v73"])
def test_content_wins_over_extension(tmp_path: Path, writer: str) -> None:
    path = tmp_path / "weights.bin"
    if writer == "v5":
        scipy.io.savemat(path, {"w": np.ones((2, 2))})
    else:
        write_v73(path, {"w": np.ones((2, 2))})
    assert open_model(path).format == "matlab"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        pytest.param(b"MATLAB 5.0 MAT-file, Platform: x", True, id="v5"),
        pytest.param(V73_HEADER.ljust(512) + b"\x89HDF\r\n\x1a\n", True, id="v73"),
        pytest.param(V73_HEADER.ljust(1024), False, id="v73-text-without-hdf5"),
        pytest.param(b" " * 512 + b"\x89HDF\r\n\x1a\n", False, id="plain-hdf5-userblock"),
        pytest.param(b"\x89HDF\r\n\x1a\n", False, id="plain-hdf5"),
    ],
)
def test_matches_on_header_text(head: bytes, expected: bool) -> None:
    assert matlab.matches(Path("x"), head) is expected


@pytest.mark.parametrize(
    ("module", "writer", "message"),
    [
        pytest.param("scipy.io", "v5", "reading MAT v5 files needs scipy", id="scipy"),
        pytest.param("h5py", "v73", "reading MAT v7.3 files needs h5py", id="h5py"),
    ],
)
def test_missing_extra_says_what_to_install(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    writer: str,
    message: str,
) -> None:
    path = request.getfixturevalue(f"{writer}_path")
    monkeypatch.setitem(sys.modules, module, None)  # makes ``import module`` fail
    with pytest.raises(MissingExtra) as caught:
        open_model(path)
    assert str(caught.value) == f"{path}: {message}; install it with: pip install 'diffai[matlab]'"
    assert caught.value.extra == "matlab"


def test_v5_sparse_matrix_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.mat"
    scipy.io.savemat(path, {"ok": np.ones((1, 1)), "S": scipy.sparse.eye(3, format="csc")})
    with pytest.raises(UnreadableModel, match=r"variable 'S' is a csc_\w+ \(sparse matrix"):
        open_model(path)


def test_v73_sparse_matrix_is_refused(tmp_path: Path) -> None:
    path = write_v73(tmp_path / "s.mat", {"net": {"S": {}}})
    with h5py.File(path, "a") as handle:
        handle["net/S"].attrs["MATLAB_sparse"] = np.uint64(3)
    with pytest.raises(UnreadableModel, match=r"variable 'net\.S' is a sparse matrix"):
        open_model(path)


@pytest.mark.parametrize(
    ("matlab_class", "stored", "message"),
    [
        pytest.param("function_handle", np.zeros((1, 1), np.uint32), "a MATLAB function_handle"),
        pytest.param("", np.zeros((1, 1)), "a dataset without MATLAB_class"),
        pytest.param(
            "int32",
            np.zeros((1, 1), [("real", "<i4"), ("imag", "<i4")]),
            "a complex int32",
        ),
    ],
)
def test_v73_unsupported_classes_are_refused(
    tmp_path: Path, matlab_class: str, stored: np.ndarray, message: str
) -> None:
    path = write_v73(tmp_path / "f.mat", {"ok": np.ones((1, 1))})
    with h5py.File(path, "a") as handle:
        dataset = handle.create_dataset("f", data=stored)
        if matlab_class:
            dataset.attrs["MATLAB_class"] = np.bytes_(matlab_class.encode())
    with pytest.raises(UnreadableModel, match=f"variable 'f' is {message}, which diffai cannot"):
        open_model(path)


def test_v73_empty_char_and_cell(tmp_path: Path) -> None:
    path = write_v73(tmp_path / "e.mat", {"ok": np.ones((1, 1))})
    with h5py.File(path, "a") as handle:
        for name, matlab_class in (("text", b"char"), ("cells", b"cell")):
            dataset = handle.create_dataset(name, data=np.array([0, 0], np.uint64))
            dataset.attrs["MATLAB_class"] = np.bytes_(matlab_class)
            dataset.attrs["MATLAB_empty"] = np.uint8(1)
    assert open_model(path).scalars == {"text": "", "cells": []}


def test_garbage_after_v5_header_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "bad.mat"
    path.write_bytes(b"MATLAB 5.0 MAT-file".ljust(124) + b"\x00\x01IM" + b"\xff" * 64)
    with pytest.raises(MalformedModel, match="not a readable MAT file"):
        open_model(path)


def test_v73_header_with_broken_hdf5_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "bad.mat"
    path.write_bytes(V73_HEADER.ljust(512) + b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(MalformedModel, match=r"not a readable MAT v7\.3 \(HDF5\) file"):
        open_model(path)
