"""Byte sources: where a model's bytes come from, so a reader asks for ranges and never knows.

    ByteSource         one file: ``name``, ``size``, ``sha256`` (when the store proves it),
                       ``read(start, end)`` for headers, ``stream(start, end)`` for tensor data
    Folder             a place holding files: ``names()`` lists them, ``open(name)`` gives one

``locate(text, settings)`` turns ``hf://ORG/NAME[@REVISION][/PATH]``, ``s3://BUCKET/KEY``
and ``http(s)://`` URLs into a folder and, when the URL names one, a file in it; one
module per store (``hf``, ``s3``, ``http``; ``local`` for files on disk). Every remote
store ends in ``http.Client``: range requests, retries, resume, no disk. This module
imports nothing heavy: a local run never loads ``requests``' machinery for it.

Only ``ByteSource.sha256`` counts as proof that two files are equal
(``formats.remote``): the full-content SHA-256 the store itself computed (the Hub's
LFS ``sha256``, S3's ``x-amz-checksum-sha256``). Size is not (a fine-tune keeps it),
header bytes are not (a fine-tune keeps its safetensors header byte for byte), and an
ETag is not (S3's is an MD5, which whoever controls one side can collide, and a
multipart one is not even of the content).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from diffai.errors import UsageError

if TYPE_CHECKING:
    from diffai.sources.remote import Settings

SCHEMES = ("hf://", "s3://", "https://", "http://")


class ByteSource(Protocol):
    name: str
    size: int
    sha256: str | None

    def read(self, start: int, end: int) -> bytes:
        """Bytes ``start..end`` exactly (a header; small)."""

    def stream(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start..end`` as pieces in order (tensor data; bounded memory)."""


class Folder(Protocol):
    name: str

    def names(self) -> list[str]:
        """The files directly in the folder, by name."""

    def open(self, name: str) -> ByteSource:
        """One file of the folder, by its relative name."""


def is_remote(text: object) -> bool:
    return isinstance(text, str) and text.lower().startswith(SCHEMES)


def locate(text: str, settings: Settings) -> tuple[Folder, str | None]:
    """The folder a URL points into, and the file it names there (None: the folder itself)."""
    from diffai.sources import hf, s3
    from diffai.sources import http as plain

    scheme = text.split("://", 1)[0].lower()
    locators = {"hf": hf.locate, "s3": s3.locate, "https": plain.locate, "http": plain.locate}
    if scheme not in locators:
        raise UsageError(f"{text}: unknown URL scheme; diffai reads {', '.join(SCHEMES)}")
    return locators[scheme](text, settings)


def whole_elements(pieces: Iterable[bytes], itemsize: int) -> Iterator[bytes]:
    """Byte pieces regrouped so each holds whole elements (the kept head may end mid-element)."""
    carry = b""
    for piece in pieces:
        if carry:
            piece, carry = carry + piece, b""
        cut = len(piece) - len(piece) % itemsize
        carry = piece[cut:]
        if cut:
            yield piece[:cut] if cut < len(piece) else piece
    if carry:
        yield carry  # a torn element: the reader's length check names it


class Prefix:
    """The start of a byte source as a bytes-like a parser slices (``len`` is the file's size),
    fetched as far as the parser reads, growing by doubling: for headers whose length is
    known only once parsed (GGUF's key/values). ``ranges`` then serves tensor data from what
    was fetched and fetches only the rest, so no byte is asked for twice."""

    def __init__(self, source: ByteSource, first: int = 256 * 1024) -> None:
        self.source = source
        self._buffer = bytearray(source.read(0, min(first, source.size)))

    def __len__(self) -> int:
        return self.source.size

    def __getitem__(self, part: slice) -> memoryview:
        self._fetch_to(min(self.source.size, part.stop))
        return memoryview(self._buffer)[part]

    def _fetch_to(self, end: int) -> None:
        have = len(self._buffer)
        if end > have:
            # A new buffer, not grown in place: the parser still holds views of the old one.
            more = self.source.read(have, min(self.source.size, max(end, 2 * have)))
            self._buffer = self._buffer + more

    def ranges(self, start: int, end: int) -> Iterator[bytes]:
        have = len(self._buffer)
        kept = [bytes(self._buffer[start : min(end, have)])] if start < have else []
        start = max(start, have)
        return itertools.chain(kept, self.source.stream(start, end) if start < end else [])
