"""A remote zip as the mapped file the zip readers expect: fetched by ranges, never on disk.

``ZipMembers`` and the PyTorch reader's ``zipdir`` read an archive as a mapped
byte array (``data[a:b]``, ``data.size``) and hand it to ``zipfile`` as a file.
``RangedZip`` stands in for both over a ``ByteSource``. What it fetches:

- at once, the end of the file as far as miniz searches for the end record
  (``zipdir.search_start``: 69,584 bytes at most), which holds the end record,
  the zip64 locator and, in most archives, the whole central directory;
- then every member's 30-byte local header, all at once (``prefetch``);
- then each range a reader turns into ``bytes`` (the directory when it is not in
  that tail, a local header, the pickle, the small records), kept, so that
  ``zipfile`` and ``zipdir`` reading the same directory fetch it once;
- never a storage: ``data[a:b]`` is a ``Span``, which a tensor streams chunk by
  chunk from the source (``stream``) and nothing keeps, but for the part of it in
  the tail, served from there. A storage two tensors view is fetched for each,
  as a mapped file is read for each.

The source itself keeps a file's first 256 KiB (``RemoteFile``), so a small
archive costs one request.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable, Iterator

from diffai.formats.pytorch.zipdir import search_start
from diffai.sources import ByteSource


class Span:
    """Bytes ``start..start + size`` of a ranged zip, fetched only when asked for."""

    def __init__(self, archive: RangedZip, start: int, size: int) -> None:
        self.archive, self.start, self.size = archive, start, size

    def __bytes__(self) -> bytes:
        return self.archive.fetch(self.start, self.start + self.size)

    def stream(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start..end`` of the span, as the source's pieces (a storage's tensor)."""
        return self.archive.stream(self.start + start, self.start + end)


class RangedZip(io.RawIOBase):
    """A ``ByteSource`` read as a zip: sliced like the mapped file, read like a file."""

    def __init__(self, source: ByteSource) -> None:
        super().__init__()
        self.source, self.size, self._position = source, source.size, 0
        tail = search_start(source.size)
        self._kept = [(tail, source.read(tail, source.size))]

    def __getitem__(self, part: slice) -> Span:
        start, stop, _ = part.indices(self.size)
        return Span(self, start, max(stop - start, 0))

    def fetch(self, start: int, end: int) -> bytes:
        """From a kept range holding it whole, or fetched and kept (a range that overlaps
        one only in part is fetched whole: headers and records are small)."""
        end = min(end, self.size)
        data = self._held(start, end)
        if data is None:
            data = self.source.read(start, end) if start < end else b""
            self._kept.append((start, data))
        return data

    def _held(self, start: int, end: int) -> bytes | None:
        end = min(end, self.size)
        for at, data in self._kept:
            if at <= start and end <= at + len(data):
                return data[start - at : end - at]
        return None

    def stream(self, start: int, end: int) -> Iterator[bytes]:
        """Fetched up to the kept tail, then from it (the last storage often ends there); the
        first request goes out now, as ``Client.stream``'s do, so tensors' latencies overlap."""
        tail_start, tail = self._kept[0]
        cut = max(start, min(end, tail_start))
        fetched = self.source.stream(start, cut) if start < cut else iter(())
        held = [tail[cut - tail_start : end - tail_start]] if cut < end else []
        return itertools.chain(fetched, held)

    def prefetch(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Ranges fetched all at once and kept: the members' local headers, which the reader
        then asks for one by one (one request each, in turn, would add up their latencies)."""
        streams = [(a, self.source.stream(a, b)) for a, b in ranges if self._held(a, b) is None]
        self._kept.extend((start, b"".join(pieces)) for start, pieces in streams)

    # --- what zipfile needs of a file ------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OSError("seek before the start of the file")
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.fetch(self._position, self._position + len(buffer))
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        """Whole reads in one range (``RawIOBase`` would read to the end in 8 KiB pieces)."""
        end = self.size if size is None or size < 0 else self._position + size
        data = self.fetch(self._position, end) if self._position < self.size else b""
        self._position += len(data)
        return data
