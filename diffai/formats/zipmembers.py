"""Zip members as memory-mapped byte arrays, shared by the PyTorch and npz readers.

``torch.save`` and ``np.savez`` store members uncompressed, so a member's bytes
can be mapped straight from the archive instead of being read into memory.
A compressed member must be inflated into memory, and a few kilobytes of
deflate stream can claim gigabytes (a zip bomb), so every read states how much
it accepts, and the members inflated from one archive share one budget of
``byte_budget(archive size)``, checked against the sizes the archive declares
before anything is inflated (``zipfile`` never inflates past a declared size).
"""

from __future__ import annotations

import lzma
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from diffai.errors import MalformedModel, UnreadableModel
from diffai.formats.limits import byte_budget
from diffai.formats.mapped import map_bytes
from diffai.text import one_line

LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_SIGNATURE = b"PK\x03\x04"
#: How zipfile fails on a damaged directory: ValueError for a name flagged UTF-8 that is
#: not, NotImplementedError for a "zip file version" it does not know.
OPEN_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError)
#: How zipfile fails on a damaged member; RuntimeError is its "encrypted, password required",
#: ValueError a local header whose name is flagged UTF-8 and is not.
MEMBER_ERRORS = (
    zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError,
    ValueError, lzma.LZMAError,
)  # fmt: skip


def check_unambiguous(path: Path, archive: zipfile.ZipFile) -> None:
    """Refuse what two zip readers may read differently: ``zipfile`` cuts a name at a NUL
    (miniz, torch's, does not) and reads the last of two concatenated archives (miniz the
    first). Each format refuses names that appear twice, in its own words."""
    infos = archive.infolist()
    for info in infos:
        if info.orig_filename != info.filename:
            raise MalformedModel(path, f"zip member name {info.orig_filename!r} holds a NUL")
    if infos and min(info.header_offset for info in infos) != 0:
        raise MalformedModel(
            path,
            "the zip archive does not start at the file's first byte (data before it, or two "
            "archives one after the other); refused as ambiguous",
        )


class ZipMembers:
    """An open zip archive whose members are handed out as uint8 arrays."""

    def __init__(self, path: Path, ranged: Any = None) -> None:
        """``ranged``: the file as something that slices and reads like it (a remote zip,
        ``pytorch.zipranges.RangedZip``), in place of mapping ``path``, then only a name."""
        self.path = path
        try:
            self.archive = zipfile.ZipFile(path if ranged is None else ranged)
        except OPEN_ERRORS as exc:
            raise MalformedModel(path, f"not a readable zip archive: {one_line(exc)}") from exc
        try:
            check_unambiguous(path, self.archive)
        except MalformedModel:
            self.archive.close()
            raise
        size = path.stat().st_size if ranged is None else ranged.size
        self._file = ranged if ranged is not None else map_bytes(path) if size else None
        self._inflate_budget = byte_budget(size)
        self._inflated: set[str] = set()

    def names(self) -> list[str]:
        return self.archive.namelist()

    def read_bytes(self, name: str, limit: int) -> bytes:
        """A member read whole, refused unread if it declares more than ``limit`` bytes."""
        info = self._info(name)
        self._check_size(info, limit)
        return self._read(info)

    def member_array(self, name: str) -> np.ndarray:
        """The member's bytes: mapped when stored, else inflated into memory (within budget)."""
        info = self._info(name)
        if info.compress_type != zipfile.ZIP_STORED or self._file is None:
            return np.frombuffer(self._inflate(info), dtype=np.uint8)
        start = self._data_offset(info)
        if start + info.file_size > self._file.size:
            raise MalformedModel(self.path, f"zip member {name!r} runs past the end of the file")
        return self._file[start : start + info.file_size]

    def _info(self, name: str) -> zipfile.ZipInfo:
        try:
            return self.archive.getinfo(name)
        except KeyError as exc:
            raise MalformedModel(self.path, f"zip member {name!r} is missing") from exc

    def _inflate(self, info: zipfile.ZipInfo) -> bytes:
        """Charged to the budget once per member, however often it is read (npz loads lazily)."""
        if info.filename not in self._inflated:
            self._check_size(info, self._inflate_budget)
            self._inflate_budget -= info.file_size
            self._inflated.add(info.filename)
        return self._read(info)

    def _check_size(self, info: zipfile.ZipInfo, limit: int) -> None:
        if info.file_size > limit:
            raise MalformedModel(
                self.path,
                f"zip member {info.filename!r} declares {info.file_size:,} bytes, over the "
                f"limit of {limit:,} (a zip bomb?)",
            )

    def _read(self, info: zipfile.ZipInfo) -> bytes:
        try:
            return self.archive.read(info)
        except MEMBER_ERRORS as exc:
            raise MalformedModel(
                self.path, f"cannot read zip member {info.filename!r}: {one_line(exc)}"
            ) from exc

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        header_end = info.header_offset + LOCAL_HEADER.size
        if self._file is None or header_end > self._file.size:
            raise UnreadableModel(self.path, f"zip member {info.filename!r} has no local header")
        fields = LOCAL_HEADER.unpack(bytes(self._file[info.header_offset : header_end]))
        if fields[0] != _LOCAL_SIGNATURE:
            raise MalformedModel(self.path, f"zip member {info.filename!r} has a bad local header")
        name_len, extra_len = fields[9], fields[10]
        return header_end + name_len + extra_len
