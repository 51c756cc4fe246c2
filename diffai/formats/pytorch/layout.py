"""The records of a ``torch.save`` zip, checked the way torch's own reader checks them.

Torch (``caffe2/serialize/inline_container.cc`` over miniz) takes the archive's
folder from its first member's name, refuses any member outside that folder,
needs a ``version`` record it can parse and support, and looks names up
*ignoring ASCII case*, while ``zipfile`` matches them exactly. So
``archive/data/0`` and ``archive/DATA/0`` are one name to torch and two to us:
whichever copy each reads, a gate could pass bytes that torch never loads.
Every such archive is refused as ambiguous; what remains reads alike in both.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from diffai.errors import MalformedModel
from diffai.formats.pytorch.archive import TorchArchive
from diffai.formats.zipmembers import ZipMembers

PICKLE_MEMBER = "data.pkl"
#: The format versions torch 2.x reads (``kMinSupportedFileFormatVersion`` .. ``kMax...``).
SUPPORTED_VERSIONS = range(1, 11)
#: Torch reads the first it has (``PyTorchStreamReader::init``).
_VERSION_RECORDS = (".data/version", "version")
#: How torch parses the record: leading blanks, digits, anything after them ignored.
_VERSION = re.compile(rb"[ \t\n\v\f\r]*\+?([0-9]{1,20})")
_BYTEORDERS = ("little", "big")


def archive_folder(path: Path, members: ZipMembers) -> str:
    """``<folder>/``, once every member is in it and no two names differ only in case."""
    names = members.names()
    if not names:
        raise MalformedModel(path, "zip archive has no data.pkl member; not a torch.save file")
    folder = names[0].partition("/")[0] + "/"
    outside = next((name for name in names if not name.startswith(folder)), None)
    if "/" not in names[0] or outside is not None:
        raise MalformedModel(path, _outside_message(names, outside))
    _check_case(path, names)
    if f"{folder}{PICKLE_MEMBER}" not in names:
        raise MalformedModel(path, "zip archive has no data.pkl member; not a torch.save file")
    return folder


def _outside_message(names: list[str], outside: str | None) -> str:
    if outside is None:
        return f"zip member {names[0]!r} is in no folder, which torch refuses"
    return (
        f"zip member {outside!r} is outside the archive's folder {names[0].partition('/')[0]!r}"
        ", which torch refuses"
    )


def _check_case(path: Path, names: list[str]) -> None:
    """Names equal, or equal but for ASCII case (``bytes.lower`` folds only ASCII, as miniz)."""
    folded: dict[bytes, str] = {}
    for name in names:
        key = name.encode("utf-8", "surrogateescape").lower()
        if key in folded and folded[key] == name:
            raise MalformedModel(
                path,
                f"zip member {name!r} appears twice, and torch and zipfile need not read the "
                "same copy; refused as ambiguous",
            )
        if key in folded:
            raise MalformedModel(
                path,
                f"zip members {folded[key]!r} and {name!r} differ only in case, and torch looks "
                "names up ignoring case; refused as ambiguous",
            )
        folded[key] = name


def check_version(path: Path, members: TorchArchive, folder: str) -> None:
    record = next((f"{folder}{r}" for r in _VERSION_RECORDS if members.has(f"{folder}{r}")), None)
    if record is None:
        raise MalformedModel(path, "zip archive has no version record, which torch refuses")
    matched = _VERSION.match(members.read_bytes(record, 64))
    if matched is None or int(matched.group(1)) not in SUPPORTED_VERSIONS:
        raise MalformedModel(
            path, f"{record!r} is not a torch.save format version torch reads (1 to 10)"
        )


def check_records(path: Path, members: TorchArchive, folder: str) -> None:
    """The records torch reads whole when they are there: one it cannot read, or parse, makes
    it refuse the file (a ``.storage_alignment`` of ``x4``), so it is refused here too."""
    for record, parse in _OPTIONAL_RECORDS.items():
        name = f"{folder}{record}"
        if members.has(name):
            data = members.read_bytes(name, _RECORD_LIMIT)
            if parse is not None:
                parse(path, name, data)


def _alignment(path: Path, name: str, data: bytes) -> None:
    try:
        int(data)  # as torch parses it
    except ValueError as exc:
        raise MalformedModel(
            path, f"{name!r} holds {data!r:.40}, not the integer torch.load parses from it"
        ) from exc


#: Each record -> how torch parses it, if it does: the id is logged, the format version only
#: compared with ``b"1"``.
_OPTIONAL_RECORDS: dict[str, Callable[[Path, str, bytes], None] | None] = {
    ".data/serialization_id": None,
    ".format_version": None,
    ".storage_alignment": _alignment,
}
#: torch.save writes a few bytes in each (the id: 40); no real one comes near.
_RECORD_LIMIT = 1024


def byteorder(path: Path, members: TorchArchive, folder: str) -> str:
    """Files without the record predate big-endian support and are little-endian."""
    name = f"{folder}byteorder"
    if not members.has(name):
        return "little"
    order = members.read_bytes(name, len("little")).decode("ascii", errors="replace")
    if order not in _BYTEORDERS:
        raise MalformedModel(path, f"unknown byte order {order!r} in {name!r}")
    return order
