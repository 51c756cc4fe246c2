"""Zip members as memory-mapped byte arrays, shared by the PyTorch and npz readers.

``torch.save`` and ``np.savez`` store members uncompressed, so a member's bytes
can be mapped straight from the archive instead of being read into memory.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from diffai.errors import MalformedModel, UnreadableModel

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_SIGNATURE = b"PK\x03\x04"


class ZipMembers:
    """An open zip archive whose members are handed out as uint8 arrays."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise MalformedModel(path, f"not a readable zip archive: {exc}") from exc
        self._file = np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else None

    def names(self) -> list[str]:
        return self.archive.namelist()

    def read_bytes(self, name: str) -> bytes:
        """A small member (a pickle, a header) read whole."""
        try:
            return self.archive.read(name)
        except (KeyError, zipfile.BadZipFile, OSError, zlib.error, NotImplementedError) as exc:
            raise MalformedModel(self.path, f"cannot read zip member {name!r}: {exc}") from exc

    def member_array(self, name: str) -> np.ndarray:
        """The member's bytes: mapped when stored, decompressed into memory otherwise."""
        try:
            info = self.archive.getinfo(name)
        except KeyError as exc:
            raise MalformedModel(self.path, f"zip member {name!r} is missing") from exc
        if info.compress_type != zipfile.ZIP_STORED or self._file is None:
            return np.frombuffer(self.read_bytes(name), dtype=np.uint8)
        start = self._data_offset(info)
        if start + info.file_size > self._file.size:
            raise MalformedModel(self.path, f"zip member {name!r} runs past the end of the file")
        return self._file[start : start + info.file_size]

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        header_end = info.header_offset + _LOCAL_HEADER.size
        if self._file is None or header_end > self._file.size:
            raise UnreadableModel(self.path, f"zip member {info.filename!r} has no local header")
        fields = _LOCAL_HEADER.unpack(bytes(self._file[info.header_offset : header_end]))
        if fields[0] != _LOCAL_SIGNATURE:
            raise MalformedModel(self.path, f"zip member {info.filename!r} has a bad local header")
        name_len, extra_len = fields[9], fields[10]
        return header_end + name_len + extra_len
