"""Readers: one module per format, all satisfying ``Reader``, registered in ``READERS``.

``open_model`` picks the reader by content first (magic bytes, zip members)
and by file extension second, so a misnamed file still reads correctly.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Protocol

from diffai.errors import UnreadableModel, UsageError
from diffai.formats import matlab, numpy, pytorch, safetensors, sharded
from diffai.formats.limits import check_model
from diffai.model import Model

#: How many leading bytes ``matches`` is shown (MAT v7.3 keeps its HDF5 signature at 512).
HEAD_BYTES = 1024


class Reader(Protocol):
    """What a format module provides."""

    FORMAT: str
    EXTENSIONS: tuple[str, ...]

    def matches(self, path: Path, head: bytes) -> bool:
        """Whether the content (not the name) says this is the reader's format."""

    def read(self, path: Path) -> Model:
        """Open ``path`` lazily; raise ``UnreadableModel`` subclasses on bad input."""


READERS: dict[str, Reader] = {
    module.FORMAT: module for module in (sharded, safetensors, pytorch, numpy, matlab)
}


def open_model(path: str | Path, format: str | None = None) -> Model:
    """Open a model artifact (file or folder) with the reader its content calls for.

    Whatever the reader, the model must then pass ``check_model``.
    """
    path = Path(path)
    _check_kind(path)
    reader = READERS[check_format_name(format)] if format else detect_reader(path)
    model = reader.read(path)
    check_model(path, model)
    return model


def _check_kind(path: Path) -> None:
    """A regular file one may read, or a folder: a FIFO or a device would block a reader."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISREG(mode):
            path.open("rb").close()  # so no reader meets "permission denied" unprepared
    except FileNotFoundError:
        raise UnreadableModel(path, "no such file or directory") from None
    except OSError as exc:  # a symlink loop, no permission, a folder that cannot be searched
        raise UnreadableModel(path, f"cannot open: {exc.strerror or exc}") from exc
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UnreadableModel(path, "not a regular file or a folder")


def detect_reader(path: Path) -> Reader:
    head = b"" if path.is_dir() else _read_head(path)
    for reader in READERS.values():
        if reader.matches(path, head):
            return reader
    suffix = path.suffix.lower()
    for reader in READERS.values():
        if suffix in reader.EXTENSIONS:
            return reader
    known = ", ".join(sorted(READERS))
    raise UnreadableModel(path, f"unrecognized model format; force one with --format ({known})")


def _read_head(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(HEAD_BYTES)
    except OSError as exc:
        raise UnreadableModel(path, f"cannot read: {exc.strerror or exc}") from exc


def check_format_name(name: str) -> str:
    if name not in READERS:
        raise UsageError(f"unknown format {name!r}; choose one of {', '.join(sorted(READERS))}")
    return name
