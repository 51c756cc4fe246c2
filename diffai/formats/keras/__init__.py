"""Keras models: ``.keras`` (Keras 3's zip) and HDF5 ``.h5``/``.hdf5`` (legacy and Keras 3).

h5py is the optional ``keras`` extra, imported only in the reader's child
process. The HDF5 library parses the file's structures in C and is not hardened
against hostile input, so ``read`` runs ``read_in_process`` in a bounded child
(``diffai.formats.isolated``), which checks every dataset as
``diffai.formats.hdf5`` asks (no links, no storage outside the file, plain
numbers only) and hands each weight back as a ``.npy`` file, read from the HDF5
file and written piece by piece (``hdf5.slabs``), so memory stays bounded
whatever a dataset's size. Which datasets are weights, and their names:
``layout``. A MAT v7.3 file is HDF5 too; its MATLAB header tells it apart.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from diffai.dtypes import canonical_name, numpy_dtype
from diffai.errors import MalformedModel, MissingExtra, UnreadableModel
from diffai.formats import hdf5, isolated
from diffai.formats.keras import archive, layout
from diffai.formats.matlab.common import V73_TEXT
from diffai.model import CHUNK_ELEMENTS, Model, TensorRef
from diffai.text import one_line

FORMAT = "keras"
EXTENSIONS = (".keras", ".h5", ".hdf5")
READER_NAME = "the Keras reader"
NEEDS = "reading Keras files needs h5py"
#: What the root of a legacy file says about its making (``model_config`` is the whole model).
ROOT_ATTRIBUTES = ("keras_version", "backend")
#: h5py's errors on damaged structures (RuntimeError: "wrong B-tree signature" ...).
H5_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError)
#: How Keras 3 marks a bfloat16 variable, which HDF5 stores as 2-byte opaque elements.
BF16 = "bfloat16"


def matches(path: Path, head: bytes) -> bool:
    """A ``.keras`` zip, or HDF5 that does not start with MATLAB's header."""
    if archive.is_keras_zip(path, head):
        return True
    return not head.startswith(V73_TEXT) and hdf5.has_signature(path)


def read(path: Path) -> Model:
    """The file read by ``read_in_process`` in a bounded child process."""
    if importlib.util.find_spec("h5py") is None:
        raise MissingExtra(path, NEEDS, FORMAT)
    return isolated.read_isolated(path, __name__, READER_NAME)


def read_in_process(path: Path) -> Model:
    """Parse the file here: for the isolated child and the fuzzers, never for hostile bytes
    in a process that matters."""
    try:
        h5py = importlib.import_module("h5py")
    except ImportError as exc:
        raise MissingExtra(path, NEEDS, FORMAT) from exc
    with path.open("rb") as handle:
        head = handle.read(len(archive.ZIP_MAGIC))
    source: Any = path
    metadata: dict[str, Any] = {}
    if head.startswith(archive.ZIP_MAGIC):
        source, metadata = archive.open_weights(path)
    try:
        return _model(path, h5py, h5py.File(source, "r"), metadata)
    except H5_ERRORS as exc:
        raise MalformedModel(path, f"not a readable Keras HDF5 file: {one_line(exc)}") from exc


def _model(path: Path, h5py: Any, handle: Any, metadata: dict[str, Any]) -> Model:
    kind, datasets = layout.weights(path, h5py, handle)
    tensors = {name: _tensor(path, name, dataset) for name, dataset in datasets.items()}
    described = {**_root_attributes(handle), **metadata, "layout": kind}
    size = path.stat().st_size
    return Model(str(path), FORMAT, size, tensors, metadata=described)


def _root_attributes(handle: Any) -> dict[str, str]:
    found = {key: handle.attrs.get(key) for key in ROOT_ATTRIBUTES}
    return {
        key: (value.decode("utf-8", "replace") if isinstance(value, bytes) else value)[:200]
        for key, value in found.items()
        if isinstance(value, (bytes, str))
    }


def _tensor(path: Path, name: str, dataset: Any) -> TensorRef:
    what = f"weight {name!r}"
    hdf5.check_storage(path, what, dataset)
    stored = _value_dtype(path, what, dataset)
    dtype = canonical_name(stored)
    if dataset.shape is None or dtype is None:
        raise UnreadableModel(path, f"{what} has dtype {stored}, which diffai cannot compare")
    shape = tuple(int(size) for size in dataset.shape)
    return TensorRef(name, shape, dtype, stream=lambda: _pieces(path, what, dataset, stored))


def _value_dtype(path: Path, what: str, dataset: Any) -> np.dtype:
    """The element type; Keras 3's bfloat16 is 2-byte opaque data marked ``dtype=bfloat16``."""
    stored = dataset.dtype
    marked = dataset.attrs.get("dtype") in (BF16, BF16.encode())
    if marked and stored.kind == "V" and stored.itemsize == 2 and stored.names is None:
        return numpy_dtype("bf16")
    if not hdf5.is_plain_number(stored):
        raise MalformedModel(
            path,
            f"{what} stores {stored.itemsize:,}-byte elements that diffai does not read as "
            "numbers (a subarray, a compound, a string, or opaque bytes without Keras 3's "
            "dtype mark, as legacy .h5 files keep bfloat16)",
        )
    return stored


def _pieces(path: Path, what: str, dataset: Any, dtype: np.dtype) -> Iterator[np.ndarray]:
    """Slab by slab, read when the values are asked for, so a failing filter still names the
    file and weight; opaque bfloat16 bytes are reinterpreted, never converted."""
    for index in hdf5.slabs(tuple(dataset.shape), CHUNK_ELEMENTS):
        try:
            piece = np.asarray(dataset[index])
        except H5_ERRORS as exc:
            raise MalformedModel(path, f"{what}: cannot read: {one_line(exc)}") from exc
        yield (
            piece.view(dtype) if piece.dtype.kind == "V" else piece.astype(dtype.newbyteorder("<"))
        )
