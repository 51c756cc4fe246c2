"""A zip's central directory as torch's own zip reader (miniz) finds and checks it.

``torch.load`` reads a zip through miniz (``caffe2/serialize/inline_container.cc``),
diffai through Python's ``zipfile``, and the two disagree on what a valid archive
is: ``zipfile`` reads the directory it finds just before the end record whatever
offset the record states, counts entries by the directory's size rather than by
the stated count, ignores disk numbers and lets a later zip64 field override an
earlier one, while miniz reads the directory at the stated offset, entry by entry
up to the stated count, and refuses what it cannot vouch for (``unsupported
multidisk archive``, ``invalid header or archive is corrupted`` ...). This module
replays miniz's reading of the directory, with its refusals and in its words, so
that a file torch's reader refuses is refused here too; ``archive.py`` then
requires ``zipfile`` to have found the very same entries.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from diffai.errors import MalformedModel

#: signature, disk, the directory's disk, entries on this disk, entries, size, offset, comment.
_END = struct.Struct("<IHHHHIIH")
_END_SIGNATURE = 0x06054B50
_ZIP64_LOCATOR = struct.Struct("<IIQI")  # signature, disk, offset of the zip64 end record, disks
_ZIP64_LOCATOR_SIGNATURE = 0x07064B50
_ZIP64_END = struct.Struct("<IQHHIIQQQQ")  # signature, record size, versions, disks, entries, ...
_ZIP64_END_SIGNATURE = 0x06064B50
_ENTRY = struct.Struct("<IHHHHHHIIIHHHHHII")
_ENTRY_SIGNATURE = 0x02014B50
_ZIP64_FIELD = 0x0001
_LOCAL_HEADER_SIZE = 30
_U16_MAX, _U32_MAX = 0xFFFF, 0xFFFFFFFF
#: miniz looks for the end record in 4 KiB windows from the end, 3 bytes overlapping, and
#: gives up after the window that reaches 64 KiB (the longest comment) plus the record.
_WINDOW, _SEARCHED = 4096, _U16_MAX + _END.size
#: General purpose flag bit 13: the central directory is encrypted.
_MASKED_DIRECTORY = 0x2000


@dataclass(frozen=True, slots=True)
class Entry:
    """One central directory entry, its sizes and offset resolved through zip64 as miniz does."""

    name: bytes
    flags: int
    method: int
    crc: int
    compressed_size: int
    size: int
    external_attributes: int
    header_offset: int


class _Refused(ValueError):
    """What miniz sets as its last error, with what diffai saw."""

    def __init__(self, miniz_error: str, detail: str) -> None:
        super().__init__(f"{miniz_error} ({detail})")


def read_directory(path: Path, data: np.ndarray) -> list[Entry]:
    """The entries miniz reads from the mapped file ``data``, or its refusal, as torch words it."""
    try:
        return _read_directory(data)
    except _Refused as exc:
        raise MalformedModel(path, f"torch's zip reader refuses it: {exc}") from exc


def _read_directory(data: np.ndarray) -> list[Entry]:
    end_offset = _locate_end(data)
    end = _END.unpack(bytes(data[end_offset : end_offset + _END.size]))
    disk, directory_disk, on_disk, count, size, offset = end[1:7]
    zip64 = _zip64_end(data, end_offset)
    if zip64 is not None:
        disk, directory_disk, on_disk, count, size, offset = zip64
    _check_disks(disk, directory_disk, on_disk, count)
    if size < count * _ENTRY.size or offset + size > data.size:
        raise _Refused(
            "invalid header or archive is corrupted",
            f"a central directory of {count:,} entries in {size:,} bytes at {offset:,}, in a "
            f"file of {data.size:,}",
        )
    return _entries(bytes(data[offset : offset + size]), count, disk, data.size)


def _locate_end(data: np.ndarray) -> int:
    """The last end-record signature with a whole record after it, in miniz's search window."""
    if data.size < _END.size:
        raise _Refused("not a ZIP archive", f"{data.size} bytes are fewer than an end record")
    start = search_start(data.size)
    tail = bytes(data[start:])
    found = tail.rfind(struct.pack("<I", _END_SIGNATURE), 0, len(tail) - _END.size + 4)
    if found < 0:
        raise _Refused("failed finding central directory", "no end record")
    return start + found


def search_start(size: int) -> int:
    """Where miniz's search for the end record starts, in a file of ``size`` bytes."""
    start = max(size - _WINDOW, 0)
    while start and size - start < _SEARCHED:
        start = max(start - (_WINDOW - 3), 0)
    return start


def _zip64_end(data: np.ndarray, end_offset: int) -> tuple[int, int, int, int, int, int] | None:
    """The zip64 end record's disks, counts, size and offset, if a locator points to one."""
    if end_offset < _ZIP64_LOCATOR.size + _ZIP64_END.size:
        return None
    at = end_offset - _ZIP64_LOCATOR.size
    signature, _, record_offset, disks = _ZIP64_LOCATOR.unpack(bytes(data[at:end_offset]))
    if signature != _ZIP64_LOCATOR_SIGNATURE:
        return None
    if record_offset > data.size - _ZIP64_END.size:
        raise _Refused("not a ZIP archive", f"the zip64 end record at {record_offset:,} is outside")
    record = _ZIP64_END.unpack(bytes(data[record_offset : record_offset + _ZIP64_END.size]))
    if record[0] != _ZIP64_END_SIGNATURE:
        return None
    record_size, disk, directory_disk, on_disk, count, size, offset = record[1], *record[4:]
    _check_zip64_limits(record_size, disks, on_disk, count, size)
    return disk, directory_disk, on_disk, count, size, offset


def _check_zip64_limits(record_size: int, disks: int, on_disk: int, count: int, size: int) -> None:
    if record_size < _ZIP64_END.size - 12:
        raise _Refused("invalid header or archive is corrupted", "a zip64 end record too short")
    if disks != 1:
        raise _Refused("unsupported multidisk archive", f"the zip64 locator counts {disks} disks")
    if max(count, on_disk) > _U32_MAX:
        raise _Refused("too many files", f"{max(count, on_disk):,} entries")
    if size > _U32_MAX:
        raise _Refused("unsupported central directory size", f"{size:,} bytes")


def _check_disks(disk: int, directory_disk: int, on_disk: int, count: int) -> None:
    """One disk, numbered 0 (or, as some writers do, 1), holding every entry."""
    if count != on_disk or ((disk | directory_disk) and (disk, directory_disk) != (1, 1)):
        raise _Refused(
            "unsupported multidisk archive",
            f"disk {disk}, directory on disk {directory_disk}, {on_disk:,} of {count:,} entries "
            "on it",
        )


def _entries(directory: bytes, count: int, disk: int, file_size: int) -> list[Entry]:
    entries, at = [], 0
    for _ in range(count):
        if len(directory) - at < _ENTRY.size:
            raise _Refused("invalid header or archive is corrupted", "the directory ends early")
        entry, at = _entry(directory, at, disk, file_size)
        entries.append(entry)
    return entries


class _RawEntry(NamedTuple):
    signature: int
    made_by: int
    needed: int
    flags: int
    method: int
    time: int
    date: int
    crc: int
    compressed: int
    size: int
    name_size: int
    extra_size: int
    comment_size: int
    disk: int
    internal_attributes: int
    attributes: int
    offset: int


def _entry(directory: bytes, at: int, disk: int, file_size: int) -> tuple[Entry, int]:
    raw = _RawEntry._make(_ENTRY.unpack_from(directory, at))
    name_end = at + _ENTRY.size + raw.name_size
    end = name_end + raw.extra_size + raw.comment_size
    if raw.signature != _ENTRY_SIGNATURE or end > len(directory):
        raise _Refused("invalid header or archive is corrupted", f"a bad directory entry at {at:,}")
    extra = directory[name_end : name_end + raw.extra_size]
    compressed, size, offset = _zip64_sizes(raw.compressed, raw.size, raw.offset, extra)
    name = directory[at + _ENTRY.size : name_end]
    entry = Entry(name, raw.flags, raw.method, raw.crc, compressed, size, raw.attributes, offset)
    _check_entry(entry, raw.disk, disk, file_size)
    return entry, end


def _zip64_sizes(compressed: int, size: int, offset: int, extra: bytes) -> tuple[int, int, int]:
    """Each of size, compressed size and offset that reads 0xFFFFFFFF comes from the first zip64
    field of the extra data, in that order (miniz stops at the first, zipfile reads them all);
    without such a field it stays 0xFFFFFFFF, to both."""
    field = _first_zip64_field(extra) if _U32_MAX in (compressed, size, offset) else None
    if field is None:
        return compressed, size, offset
    values = {"size": size, "compressed": compressed, "offset": offset}
    for key in ("size", "compressed", "offset"):
        if values[key] == _U32_MAX:
            if len(field) < 8:
                raise _Refused(
                    "invalid header or archive is corrupted", f"no zip64 {key} for an entry"
                )
            values[key], field = int.from_bytes(field[:8], "little"), field[8:]
    return values["compressed"], values["size"], values["offset"]


def _first_zip64_field(extra: bytes) -> bytes | None:
    at = 0
    while at < len(extra):
        if len(extra) - at < 4:
            raise _Refused("invalid header or archive is corrupted", "a cut extra field")
        field_id, field_size = struct.unpack_from("<HH", extra, at)
        if at + 4 + field_size > len(extra):
            raise _Refused("invalid header or archive is corrupted", "an extra field too long")
        if field_id == _ZIP64_FIELD:
            return extra[at + 4 : at + 4 + field_size]
        at += 4 + field_size
    return None


def _check_entry(entry: Entry, entry_disk: int, disk: int, file_size: int) -> None:
    """miniz's checks of every entry as it reads the directory, with its reading of sizes no
    zip64 field resolves (0xFFFFFFFF: it skips the checks, and so do we)."""
    if _U32_MAX not in (entry.size, entry.compressed_size):
        _check_sizes(entry)
    if entry_disk == _U16_MAX or entry_disk not in (disk, 1):
        raise _Refused(
            "unsupported multidisk archive", f"{_shown(entry.name)} is on disk {entry_disk}"
        )
    if entry.compressed_size != _U32_MAX and (
        entry.header_offset + _LOCAL_HEADER_SIZE + entry.compressed_size > file_size
    ):
        raise _Refused(
            "invalid header or archive is corrupted", f"{_shown(entry.name)} runs past the end"
        )
    if entry.flags & _MASKED_DIRECTORY:
        raise _Refused("unsupported encryption", f"{_shown(entry.name)} has a masked header")


def _check_sizes(entry: Entry) -> None:
    """A stored entry's sizes agree, and only an empty entry compresses to nothing. miniz reads
    the method as 32 bits, so a stored entry whose modification time is not zero escapes the
    first check there; it is refused here even so (zipfile never checks it)."""
    if (not entry.method and entry.size != entry.compressed_size) or (
        entry.size and not entry.compressed_size
    ):
        raise _Refused(
            "invalid header or archive is corrupted",
            f"{_shown(entry.name)} is {entry.size:,} bytes stored in {entry.compressed_size:,}",
        )


def _shown(name: bytes) -> str:
    return f"{name.decode('utf-8', 'backslashreplace')!r:.80}"
