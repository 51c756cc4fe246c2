"""Keras 3's ``.keras`` zip: ``metadata.json``, ``config.json`` and ``model.weights.h5``.

Keras opens the weights member through ``zipfile``, which takes the last of two
members of one name; another zip reader may take the first. So a name twice is
refused as ambiguous, like the torch zips. The weights are copied out of the
archive (inside the isolated child) so the HDF5 library reads a plain file, at
most the size the member declares, which must fit ``byte_budget`` of the
archive: a deflated member of zeros cannot turn kilobytes into gigabytes.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections import Counter
from pathlib import Path
from typing import IO, Any

from diffai.errors import MalformedModel
from diffai.formats.limits import byte_budget
from diffai.formats.strictjson import DuplicateKey, InvalidJson, loads_strict
from diffai.formats.zipmembers import MEMBER_ERRORS, OPEN_ERRORS, check_unambiguous
from diffai.text import one_line

ZIP_MAGIC = b"PK\x03\x04"
WEIGHTS = "model.weights.h5"
DESCRIPTIONS = ("config.json", "metadata.json")
METADATA = "metadata.json"
MAX_METADATA_BYTES = 1 << 20
#: What metadata.json says that a report shows (Keras writes keras_version and date_saved).
METADATA_KEYS = ("keras_version", "date_saved")
COPY_BYTES = 1 << 20


def is_keras_zip(path: Path, head: bytes) -> bool:
    """A zip of the weights and ``config.json`` or ``metadata.json``, as Keras 3 writes."""
    if not head.startswith(ZIP_MAGIC):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except OPEN_ERRORS:
        return False
    return WEIGHTS in names and bool(names & set(DESCRIPTIONS))


def open_weights(path: Path) -> tuple[IO[bytes], dict[str, Any]]:
    """The weights member as an unnamed temporary file, and what ``metadata.json`` says."""
    try:
        with zipfile.ZipFile(path) as archive:
            check_unambiguous(path, archive)
            _check_names(path, archive)
            metadata = _metadata(path, archive)
            return _copied(path, archive, archive.getinfo(WEIGHTS)), metadata
    except OPEN_ERRORS as exc:
        raise MalformedModel(path, f"not a readable .keras archive: {one_line(exc)}") from exc


def _check_names(path: Path, archive: zipfile.ZipFile) -> None:
    counts = Counter(archive.namelist())
    twice = sorted(name for name, count in counts.items() if count > 1)
    if twice:
        raise MalformedModel(
            path,
            f"zip member {twice[0][:200]!r} appears twice, and Keras and other zip readers "
            "need not read the same copy; refused as ambiguous",
        )
    if WEIGHTS not in counts:
        raise MalformedModel(path, f"the .keras archive has no {WEIGHTS}")


def _metadata(path: Path, archive: zipfile.ZipFile) -> dict[str, Any]:
    if METADATA not in archive.namelist():
        return {}
    raw = _read(path, archive, archive.getinfo(METADATA), MAX_METADATA_BYTES)
    try:
        document = loads_strict(raw.decode("utf-8"))
    except (UnicodeDecodeError, InvalidJson, DuplicateKey) as exc:
        raise MalformedModel(path, f"{METADATA} is not JSON: {one_line(exc)}") from exc
    if not isinstance(document, dict):
        raise MalformedModel(path, f"{METADATA} is not a JSON object")
    return {key: str(document[key])[:200] for key in METADATA_KEYS if key in document}


def _read(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    _check_size(path, info, limit)
    try:
        return archive.read(info)
    except MEMBER_ERRORS as exc:
        raise MalformedModel(
            path, f"cannot read zip member {info.filename!r}: {one_line(exc)}"
        ) from exc


def _copied(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> IO[bytes]:
    """zipfile never inflates past the declared size and checks the CRC at the end."""
    _check_size(path, info, byte_budget(path.stat().st_size))
    copy = tempfile.TemporaryFile(prefix="diffai-keras-")  # noqa: SIM115 -- the caller closes it
    try:
        with archive.open(info) as member:
            shutil.copyfileobj(member, copy, COPY_BYTES)
    except MEMBER_ERRORS as exc:
        copy.close()
        raise MalformedModel(path, f"cannot read zip member {WEIGHTS!r}: {one_line(exc)}") from exc
    copy.seek(0)
    return copy


def _check_size(path: Path, info: zipfile.ZipInfo, limit: int) -> None:
    if info.file_size > limit:
        raise MalformedModel(
            path,
            f"zip member {info.filename!r} declares {info.file_size:,} bytes, over the "
            f"limit of {limit:,} (a zip bomb?)",
        )
