"""One value stream read for two consumers: a tensor both sides hold in identical files.

The comparison reads a pair in lockstep, chunk by chunk, so the side ahead keeps
each piece only until the side behind takes it. Should one side stop reading or
run far ahead, its partner is cut loose and reads a stream of its own from where
it stood: more bytes, never a wrong value.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

Piece = TypeVar("Piece")
#: Pieces kept for the side behind before it is cut loose (a piece is one range block).
MAX_BEHIND = 4


class Tee:
    def __init__(self, stream: Callable[[], Iterable[Piece]]) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._source: Iterator[Piece] | None = None
        self._kept: dict[int, deque[Piece] | None] = {0: deque(), 1: deque()}
        self._started = [False, False]

    def side(self, number: int) -> Callable[[], Iterator[Piece]]:
        return lambda: self._read(number)

    def _read(self, number: int) -> Iterator[Piece]:
        with self._lock:
            alone = self._started[number] or self._kept[number] is None
            self._started[number] = True
        if alone:  # read a second time, or cut loose before it began: a stream of its own
            yield from self._stream()
            return
        taken = 0
        while True:
            piece, cut_loose = self._next(number)
            if cut_loose:
                yield from _skip(self._stream(), taken)
                return
            if piece is _END:
                return
            taken += 1
            yield piece  # type: ignore[misc]

    def _next(self, number: int) -> tuple[object, bool]:
        with self._lock:
            kept = self._kept[number]
            if kept is None:
                return _END, True
            if kept:
                return kept.popleft(), False
            if self._source is None:
                self._source = iter(self._stream())
            piece = next(self._source, _END)
            self._keep_for(1 - number, piece)
            return piece, False

    def _keep_for(self, other: int, piece: object) -> None:
        kept = self._kept[other]
        if kept is None or piece is _END:
            return
        if len(kept) >= MAX_BEHIND:
            self._kept[other] = None
            return
        kept.append(piece)  # type: ignore[arg-type]


_END = object()


def _skip(pieces: Iterable[Piece], count: int) -> Iterator[Piece]:
    for index, piece in enumerate(pieces):
        if index >= count:
            yield piece
