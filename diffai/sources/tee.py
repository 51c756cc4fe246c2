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

import numpy as np

#: Bytes kept for the side behind before it is cut loose: the lockstep reader is at most
#: one chunk (1 MiB of f32, 4 MiB of c128) and one range block (8 MiB) ahead.
MAX_BEHIND_BYTES = 32 * 1024 * 1024


class Tee:
    def __init__(self, stream: Callable[[], Iterable[np.ndarray]]) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._source: Iterator[np.ndarray] | None = None
        self._kept: dict[int, deque[np.ndarray] | None] = {0: deque(), 1: deque()}
        self._started = [False, False]

    def side(self, number: int) -> Callable[[], Iterator[np.ndarray]]:
        return lambda: self._read(number)

    def _read(self, number: int) -> Iterator[np.ndarray]:
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
        assert isinstance(piece, np.ndarray)
        if sum(kept_piece.nbytes for kept_piece in kept) + piece.nbytes > MAX_BEHIND_BYTES:
            self._kept[other] = None
            return
        kept.append(piece)


_END = object()


def _skip(pieces: Iterable[np.ndarray], count: int) -> Iterator[np.ndarray]:
    for index, piece in enumerate(pieces):
        if index >= count:
            yield piece
