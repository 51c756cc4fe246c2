"""What both MAT versions share: the header, names, dtypes and how variables become a Model."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from diffai.dtypes import canonical_name
from diffai.errors import MalformedModel, MissingExtra, UnreadableModel
from diffai.formats.flatten import TooManyEntries, flatten_checkpoint
from diffai.model import Model, Scalar, TensorRef

FORMAT = "matlab"
EXTENSIONS = (".mat",)

V5_TEXT = b"MATLAB 5.0 MAT-file"
V73_TEXT = b"MATLAB 7.3 MAT-file"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
USERBLOCK_BYTES = 512
# The descriptive text of a MAT header; the bytes after it hold offsets and endianness.
HEADER_TEXT_BYTES = 116


def has_hdf5_signature(head: bytes) -> bool:
    return head[USERBLOCK_BYTES : USERBLOCK_BYTES + len(HDF5_SIGNATURE)] == HDF5_SIGNATURE


def import_extra(path: Path, module: str, what: str) -> ModuleType:
    """The optional module, or ``MissingExtra`` saying which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(path, what, "matlab") from exc


def header_text(header: bytes) -> str:
    return header[:HEADER_TEXT_BYTES].decode("latin-1").rstrip("\x00 ")


def as_model(path: Path, variables: dict[str, Any], metadata: dict[str, Any]) -> Model:
    try:
        tensors, scalars = flatten_checkpoint(variables, lambda value: isinstance(value, TensorRef))
    except TooManyEntries as exc:
        raise MalformedModel(path, str(exc)) from exc
    return Model(
        path=str(path),
        format=FORMAT,
        size_bytes=path.stat().st_size,
        tensors=tensors,
        scalars=scalars,
        metadata=metadata,
    )


def canonical(path: Path, where: str, dtype: np.dtype) -> str:
    name = canonical_name(dtype)
    if name is None:
        raise UnreadableModel(
            path, f"variable {where!r} has dtype {dtype}, which diffai cannot compare"
        )
    return name


def strings(rows: list[str]) -> Scalar:
    """A one-row char array is a string; several rows a list of them; an empty one ``""``."""
    if len(rows) == 1:
        return rows[0]
    return rows or ""
