"""Deflated zip members read as a stream, in bounded pieces, never inflated whole.

A compressed npz member can hold a gigabyte that its archive stores in a megabyte:
inflating it into memory (as ``ZipFile.read`` does, joining its pieces: twice the
member at the peak) would put the process at the mercy of the file. ``zipfile``'s
own streaming decompression inflates only as far as each read asks, so a member
is handed out one piece at a time, or spilled through such pieces to a temporary
file and mapped, for a layout that cannot be read in order (Fortran order).

Kept apart from ``zipmembers`` (which maps stored members and reads small ones
whole) because only the npz reader streams.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO

import numpy as np

from diffai.errors import MalformedModel
from diffai.formats.zipmembers import MEMBER_ERRORS, ZipMembers
from diffai.text import one_line

#: Bytes inflated per read when spilling: large enough that Python's work per read is noise.
SPILL_PIECE_BYTES = 1 << 20


def member_pieces(
    members: ZipMembers, name: str, skip: int, length: int, piece: int
) -> Iterator[bytes]:
    """``length`` bytes of the member after its first ``skip``, ``piece`` bytes at a time.

    The archive declares the member's size and the reader has checked that it is
    ``skip + length``; ``zipfile`` never inflates past it and checks the CRC on
    reaching it, and a member that inflates to less is refused here.
    """
    with _open(members, name) as stream:
        _read(members, name, stream, skip)
        for start in range(0, length, piece):
            yield _read(members, name, stream, min(piece, length - start))


def spilled(members: ZipMembers, name: str, length: int) -> np.ndarray:
    """The member's ``length`` bytes inflated into an unlinked temporary file and mapped."""
    if not length:
        return np.empty(0, np.uint8)
    with tempfile.TemporaryFile(prefix="diffai-npz-") as spill:
        for block in member_pieces(members, name, 0, length, SPILL_PIECE_BYTES):
            spill.write(block)
        spill.flush()
        return np.memmap(spill, dtype=np.uint8, mode="r").view(np.ndarray)  # the map outlives it


def _open(members: ZipMembers, name: str) -> IO[bytes]:
    try:
        return members.archive.open(name)
    except MEMBER_ERRORS as exc:
        raise _unreadable(members, name, one_line(exc)) from exc


def _read(members: ZipMembers, name: str, stream: IO[bytes], size: int) -> bytes:
    try:
        block = stream.read(size)
    except MEMBER_ERRORS as exc:
        raise _unreadable(members, name, one_line(exc)) from exc
    if len(block) < size:
        raise _unreadable(members, name, "it inflates to fewer bytes than its size declares")
    return block


def _unreadable(members: ZipMembers, name: str, problem: str) -> MalformedModel:
    return MalformedModel(members.path, f"cannot read zip member {name!r}: {problem}")
