"""A ``torch.save`` zip read only where torch's reader and ``zipfile`` see the same archive.

The PyTorch reader reads members through ``zipfile``; torch reads them through
miniz. Three differences would let a file read one way here and another way in
torch, or read here and be refused there:

- the directory: ``zipdir`` replays miniz's reading of it, and ``zipfile`` must
  have found exactly the entries miniz finds (names, sizes, offsets, flags);
- the lookup: miniz finds ``archive/BYTEORDER`` when torch asks for
  ``archive/byteorder`` (it folds ASCII case), so records are looked up folded,
  and names are ASCII (torch writes no other) so that folding means the same in
  both; a name past 511 bytes, which miniz cuts when it lists names, is refused;
- the record: miniz reads a member marked as a directory as nothing, leaving
  torch's buffer uninitialised; it refuses methods other than stored and
  deflated, encryption and patch data; and it wants a deflate stream that ends
  within the member's compressed bytes and inflates to exactly the declared
  size, where ``zipfile`` returns whatever the stream gives before its CRC check.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

from diffai.errors import MalformedModel
from diffai.formats.pytorch.zipdir import Entry, read_directory
from diffai.formats.zipmembers import ZipMembers
from diffai.text import one_line

#: miniz lists names into a buffer of 512 bytes, its terminating NUL included.
MAX_NAME_BYTES = 511
#: What miniz reads: stored or deflated, no encryption (bits 0 and 6), no patch data (bit 5).
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_ENCRYPTED, _PATCH = 0x41, 0x20
#: MS-DOS's directory attribute, which miniz takes as "a directory" as it does a trailing '/'.
_DOS_DIRECTORY = 0x10


class TorchArchive(ZipMembers):
    """Zip members as torch would read them, refused wherever torch and ``zipfile`` part ways."""

    def __init__(self, path: Path, ranged: Any = None) -> None:
        super().__init__(path, ranged)
        try:
            self._folded = self._agreed_entries()
        except MalformedModel:
            self.archive.close()
            raise

    def has(self, name: str) -> bool:
        """Whether torch finds a record ``name``: ASCII case does not count."""
        return name.lower() in self._folded

    def _agreed_entries(self) -> dict[str, zipfile.ZipInfo]:
        assert self._file is not None  # zipfile opened it, so it holds an end record
        entries = read_directory(self.path, self._file)
        infos = self.archive.infolist()
        for info in infos:
            self._check_name(info.orig_filename)
        if len(entries) != len(infos):
            raise self._disagree(f"{len(entries):,} entries against zipfile's {len(infos):,}")
        for info, entry in zip(infos, entries, strict=True):
            if _as_entry(info) != entry:
                raise self._disagree(f"zip member {info.orig_filename!r} is not the same entry")
        return {info.filename.lower(): info for info in infos}

    def _check_name(self, name: str) -> None:
        if not name.isascii():
            raise MalformedModel(
                self.path,
                f"zip member name {name!r} is not ASCII: torch compares names as bytes and "
                "zipfile as decoded text; refused as ambiguous",
            )
        if len(name) > MAX_NAME_BYTES:
            raise MalformedModel(
                self.path,
                f"zip member name {name[:40]!r}... is {len(name):,} bytes long, over the "
                f"{MAX_NAME_BYTES} torch's zip reader lists",
            )

    def _disagree(self, what: str) -> MalformedModel:
        return MalformedModel(
            self.path,
            f"torch's zip reader and zipfile read different zip directories ({what}); refused "
            "as ambiguous",
        )

    def _info(self, name: str) -> zipfile.ZipInfo:
        found = self._folded.get(name.lower())
        if found is None:
            raise MalformedModel(self.path, f"zip member {name!r} is missing")
        self._check_readable(found)
        return found

    def _check_readable(self, info: zipfile.ZipInfo) -> None:
        """What miniz refuses, or reads as nothing, when torch reads this record."""
        problem = ""
        if info.compress_type not in _METHODS:
            problem = f"unsupported method ({info.compress_type})"
        elif info.flag_bits & _ENCRYPTED:
            problem = "unsupported encryption"
        elif info.flag_bits & _PATCH:
            problem = "unsupported feature (patch data)"
        elif info.orig_filename.endswith("/") or info.external_attr & _DOS_DIRECTORY:
            problem = "it is marked as a directory, which torch reads as uninitialised memory"
        if problem:
            raise MalformedModel(
                self.path, f"zip member {info.orig_filename!r}: torch's zip reader: {problem}"
            )

    def _read(self, info: zipfile.ZipInfo) -> bytes:
        """Read as miniz reads it, then checked against its CRC as ``zipfile`` would."""
        start = self._data_offset(info)
        assert self._file is not None
        if start + info.compress_size > self._file.size:
            raise self._unreadable(info, "it runs past the end of the file")
        raw = bytes(self._file[start : start + info.compress_size])
        data = raw if info.compress_type == zipfile.ZIP_STORED else self._inflate_exactly(info, raw)
        if zlib.crc32(data) != info.CRC:
            raise self._unreadable(info, "its CRC-32 does not match")
        return data

    def _inflate_exactly(self, info: zipfile.ZipInfo, raw: bytes) -> bytes:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            data = inflater.decompress(raw, info.file_size + 1)
        except zlib.error as exc:
            raise self._unreadable(info, one_line(exc)) from exc
        if len(data) != info.file_size or not inflater.eof:
            raise self._unreadable(
                info,
                f"its deflate stream does not inflate to exactly {info.file_size:,} bytes within "
                f"its {info.compress_size:,}, as torch's zip reader needs",
            )
        return data

    def _unreadable(self, info: zipfile.ZipInfo, problem: str) -> MalformedModel:
        return MalformedModel(self.path, f"cannot read zip member {info.filename!r}: {problem}")


def _as_entry(info: zipfile.ZipInfo) -> Entry:
    """What ``zipfile`` found, in the terms of ``zipdir``; the name is ASCII by now."""
    return Entry(
        name=info.orig_filename.encode("ascii"),
        flags=info.flag_bits,
        method=info.compress_type,
        crc=info.CRC,
        compressed_size=info.compress_size,
        size=info.file_size,
        external_attributes=info.external_attr,
        header_offset=info.header_offset,
    )
