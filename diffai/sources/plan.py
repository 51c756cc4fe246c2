"""Many small tensors of one remote file fetched as few large requests.

A mixture-of-experts model holds thousands of small tensors side by side; one range
request each made its comparison latency-bound (600 pairs of 8 KiB over a 20 ms link:
41 s, against 1.9 s for the local files). Told beforehand which ranges it will read
and in what order (``diffai.comparison``, which reads them in file order), a file
fetches each run of ranges that touch end to start as one block of up to
``BLOCK_BYTES``, ``DEPTH`` blocks in flight ahead of the reader, and keeps a block
only until its last range is taken. So no byte is fetched that is not asked for,
none twice, and memory stays within ``DEPTH + 1`` blocks for reads in plan order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from diffai.sources import ByteSource, whole_elements

if TYPE_CHECKING:
    from concurrent.futures import Future  # its import (logging, threads) is 6 ms of a local run

    from diffai.model import TensorRef

#: A block joins touching ranges up to this size; a range this big or bigger is left to
#: stream on its own (its own requests already pipeline, ``http.Client.stream``).
BLOCK_BYTES = 4 * 1024 * 1024
#: Blocks in flight ahead of the one being read.
DEPTH = 4

Span = tuple[int, int]
#: Starts fetching bytes ``start..end``, for the future's result.
FetchLater = Callable[[int, int], "Future[bytes]"]


@dataclass
class _Block:
    """Touching ranges fetched as one request. (A docstring also spares the dataclass
    building one from its signature at every run's start: 0.1 ms.)"""

    number: int
    start: int
    end: int
    left: int  # ranges not yet taken
    fetched: Future[bytes] | None = field(default=None, repr=False)


class ReadPlan:
    """Ranges a reader will ask for, in that order, served from blocks fetched ahead."""

    def __init__(self, fetch_later: FetchLater, spans: Sequence[Span],
                 block: int = BLOCK_BYTES, depth: int = DEPTH) -> None:  # fmt: skip
        self._fetch_later = fetch_later
        self._depth = depth
        self._blocks: list[_Block] = []
        self._where: dict[Span, _Block] = {}
        self._next = 0  # the first block not yet asked for
        self._lock = threading.Lock()
        for span in dict.fromkeys(span for span in spans if 0 < span[1] - span[0] < block):
            self._add(span, block)

    def _add(self, span: Span, block: int) -> None:
        last = self._blocks[-1] if self._blocks else None
        if last is not None and last.end == span[0] and span[1] - last.start <= block:
            last.end, last.left = span[1], last.left + 1
        else:
            last = _Block(len(self._blocks), span[0], span[1], 1)
            self._blocks.append(last)
        self._where[span] = last

    def take(self, start: int, end: int) -> bytes | None:
        """The range's bytes when it is planned and not yet taken; None otherwise (the
        caller streams it itself)."""
        with self._lock:
            block = self._where.pop((start, end), None)
            if block is None:
                return None
            self._ask_up_to(block.number)
            fetched = block.fetched
            block.left -= 1
            if not block.left:
                block.fetched = None  # its last range: the bytes go with this answer
        assert fetched is not None
        data = fetched.result()
        return data[start - block.start : end - block.start]

    def _ask_up_to(self, reached: int) -> None:
        """Fetch every block up to the one being read and ``DEPTH`` beyond it."""
        while self._next < len(self._blocks) and self._next <= reached + self._depth:
            block = self._blocks[self._next]
            block.fetched = self._fetch_later(block.start, block.end)
            self._next += 1


@dataclass(frozen=True)
class RangeValues:
    """A ``TensorRef.stream`` of values stored as bytes ``start..end`` of a source, in C
    order: it says where its bytes are, so a comparison can plan the reads (``plan_reads``)."""

    source: ByteSource
    start: int
    end: int
    dtype: np.dtype

    def __call__(self) -> Iterator[np.ndarray]:
        pieces = whole_elements(self.source.stream(self.start, self.end), self.dtype.itemsize)
        return (np.frombuffer(piece, self.dtype) for piece in pieces)


def plan_reads(refs: Iterable[TensorRef]) -> None:
    """Tell each file that plans its reads (``RemoteFile.plan``) which ranges these tensors
    will read from it, in this order."""
    wanted: dict[int, tuple[ByteSource, list[Span]]] = {}
    for ref in refs:
        if position(ref) is not None:
            values: RangeValues = ref.stream  # type: ignore[assignment]
            spans = wanted.setdefault(id(values.source), (values.source, []))[1]
            spans.append((values.start, values.end))
    for source, spans in wanted.values():
        source.plan(spans)  # type: ignore[attr-defined]


def position(ref: TensorRef) -> tuple[int, int] | None:
    """Where a ref's values lie, (file, byte) comparable within one file, when a plan can
    join its reads; None for any other ref."""
    values = ref.stream
    if isinstance(values, RangeValues) and hasattr(values.source, "plan"):
        return id(values.source), values.start
    return None
