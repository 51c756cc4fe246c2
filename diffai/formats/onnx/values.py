"""Stored ONNX values to the values the statistics see, chunk by chunk and vectorised.

Two encodings need work beyond a view of the mapped bytes: protobuf varints (the
``int32_data``/``int64_data``/``uint64_data`` fields) and stored units that are
not values (4-bit pairs, float8 variants numpy cannot sum). Both stream in
pieces of ``CHUNK_BYTES`` so memory stays bounded whatever the tensor's size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import ml_dtypes
import numpy as np

CHUNK_BYTES = 1 << 22
#: A varint takes at most 10 bytes; one that ends later is not protobuf.
MAX_VARINT_BYTES = 10

Unpack = Callable[[np.ndarray], np.ndarray]


def count_varints(data: np.ndarray) -> int | None:
    """How many varints ``data`` holds, or None when one is cut off or over 10 bytes long."""
    count, open_bytes = 0, 0  # bytes of the varint still open at a window's end
    for start in range(0, data.size, CHUNK_BYTES):
        window = data[start : start + CHUNK_BYTES]
        ends = np.flatnonzero(window < 0x80)
        if ends.size:
            if int(np.diff(ends, prepend=-1 - open_bytes).max()) > MAX_VARINT_BYTES:
                return None
            open_bytes = window.size - 1 - int(ends[-1])
        else:
            open_bytes += window.size
        if open_bytes >= MAX_VARINT_BYTES:
            return None
        count += ends.size
    return count if open_bytes == 0 else None


def varint_chunks(data: np.ndarray) -> Iterator[np.ndarray]:
    """The varints of ``data`` (checked by ``count_varints``) as uint64 arrays, piece by piece."""
    start = 0
    while start < data.size:
        window = data[start : start + CHUNK_BYTES]
        cut = int(np.flatnonzero(window < 0x80)[-1]) + 1
        yield _decode_varints(window[:cut])
        start += cut


def _decode_varints(data: np.ndarray) -> np.ndarray:
    ends = np.flatnonzero(data < 0x80)
    starts = np.concatenate(([0], ends[:-1] + 1))
    place = np.arange(data.size) - np.repeat(starts, ends - starts + 1)
    # Bits past the 64th are dropped, as protobuf's own decoder drops them.
    parts = (data & 0x7F).astype(np.uint64) << (7 * place).astype(np.uint64)
    return np.bitwise_or.reduceat(parts, starts)


def byte_chunks(data: np.ndarray, itemsize: int) -> Iterator[np.ndarray]:
    step = CHUNK_BYTES - CHUNK_BYTES % itemsize
    return (data[start : start + step] for start in range(0, data.size, step))


def trimmed(pieces: Iterable[np.ndarray], elements: int) -> Iterator[np.ndarray]:
    """The first ``elements`` values: an odd count of 4-bit values leaves a padding nibble."""
    left = elements
    for piece in pieces:
        yield piece[:left]
        left -= min(left, piece.size)


def nibbles(units: np.ndarray) -> np.ndarray:
    """Two 4-bit values per byte, the low nibble first (ONNX's packing)."""
    return np.stack([units & 0x0F, units >> 4], axis=1).reshape(-1)


def int4(units: np.ndarray) -> np.ndarray:
    return ((nibbles(units).astype(np.int8) ^ 8) - 8).astype(np.int8)


def float4(units: np.ndarray) -> np.ndarray:
    return nibbles(units).view(ml_dtypes.float4_e2m1fn).astype(np.float32)


def as_float32(units: np.ndarray) -> np.ndarray:
    return units.astype(np.float32)


def as_bool(units: np.ndarray) -> np.ndarray:
    """Any non-zero byte is True, as numpy and ONNX Runtime read it."""
    return units.view(np.uint8) != 0
