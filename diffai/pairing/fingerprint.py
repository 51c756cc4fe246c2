"""What rename detection knows of a removed or added tensor's values, from the measuring pass.

Two things, both taken from the chunks ``stats.measure_tensor`` already streams, so no
tensor is read again to be fingerprinted:

- ``hash``: Σ mix(bits(xᵢ)) mod 2⁶⁴ over the elements' raw bit patterns, with ``mix`` a
  multiply-xorshift finaliser (murmur3's on 32-bit words, splitmix64's on 64-bit ones).
  A sum does not depend on element order, so a matrix and its transpose hash alike (an
  ONNX export stores ``fc.weight`` as ``onnx::MatMul_9``, transposed): one hash join
  finds exact and transposed renames, and chunk boundaries never matter. It is
  deliberately not collision resistant (a permutation of the values collides by
  construction, and a hostile file can collide any fingerprint it can see): a hash match
  only nominates a pair, which is then confirmed element-wise (``renames``). A
  cryptographic byte hash would still need the confirmation and miss transposes.
  Measured on 64 MiB of f32, one core: the statistics pass alone 4 GB/s, with the
  fingerprint 1.4 GB/s, so a removed or added tensor costs about 3x (pairs matched by
  name are not fingerprinted at all).
- ``sample``: the values at ``SAMPLE`` evenly spaced positions (all of them when fewer),
  as float64: for near-equal candidates (renamed *and* fine-tuned), whose sample
  correlation is a cheap estimate of the full one and feeds the locality-sensitive hash.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from diffai.dtypes import is_complex
from diffai.model import TensorRef

if TYPE_CHECKING:  # comparison imports this module: types only
    from diffai.comparison import TensorComparison

#: Sampled positions per tensor: enough that two unrelated tensors' sample correlation
#: stays within ±0.1 (one standard deviation ≈ 1/√128), few enough for a shard report.
SAMPLE = 128

#: Tensors with fewer values are not fingerprinted: that few equal values are too likely a
#: coincidence to name a rename (and 60,000 empty tensors must cost nothing here).
MIN_ELEMENTS = 16

#: Per word width, murmur3's and splitmix64's finalisers: multiply, xorshift, multiply, xorshift.
_MIXERS = {
    4: (np.uint32(0x85EBCA6B), np.uint32(16), np.uint32(0xC2B2AE35), np.uint32(13)),
    8: (np.uint64(0xBF58476D1CE4E5B9), np.uint64(31), np.uint64(0x94D049BB133111EB),
        np.uint64(29)),
}  # fmt: skip
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


@dataclass(frozen=True)
class Fingerprint:
    hash: int
    #: float64 values at ``sample_positions(elements)``; None for complex tensors.
    sample: np.ndarray | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """For a shard report: the hash in hex, the sample as base64 float32 (512 bytes)."""
        import base64  # here: only shard reports hold fingerprints (1 ms of every run's start)

        sample = None
        if self.sample is not None:
            sample = base64.b64encode(self.sample.astype("<f4").tobytes()).decode("ascii")
        return {"hash": f"{self.hash:016x}", "sample": sample}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Fingerprint:
        import base64

        sample = record.get("sample")
        values = None
        if sample is not None:
            values = np.frombuffer(base64.b64decode(sample), "<f4").astype(np.float64)
        return cls(int(record["hash"], 16), values)


def fingerprints_json(tensors: Iterable[TensorComparison]) -> dict[str, dict[str, Any]]:
    """A shard's removed and added tensors' fingerprints, by name: ``diffai merge`` pairs
    renames across shards from them."""
    return {t.name: t.fingerprint.to_json() for t in tensors if t.fingerprint is not None}


def sample_positions(elements: int) -> np.ndarray:
    """Flat C-order positions sampled: evenly spaced, from the element count alone."""
    if elements <= SAMPLE:
        return np.arange(elements, dtype=np.int64)
    return np.arange(SAMPLE, dtype=np.int64) * elements // SAMPLE


def fingerprinter(ref: TensorRef) -> Fingerprinter | None:
    """The hook for the measuring pass, or None when the tensor is too small to match."""
    return Fingerprinter(ref) if ref.elements >= MIN_ELEMENTS else None


class Fingerprinter:
    """Folds a tensor's chunks, in order, into its ``Fingerprint`` (the measuring pass's hook)."""

    def __init__(self, ref: TensorRef) -> None:
        self._total = 0
        self._offset = 0
        self._wants_sample = not is_complex(ref.dtype)
        self._positions = sample_positions(ref.elements)
        self._sample = np.empty(self._positions.size, np.float64)

    def __call__(self, chunk: np.ndarray) -> None:
        self._total = (self._total + _chunk_hash(chunk)) & 0xFFFFFFFFFFFFFFFF
        if self._wants_sample:
            self._take_sample(chunk)
        self._offset += chunk.size

    def _take_sample(self, chunk: np.ndarray) -> None:
        start, stop = np.searchsorted(self._positions, [self._offset, self._offset + chunk.size])
        local = self._positions[start:stop] - self._offset
        self._sample[start:stop] = chunk[local].astype(np.float64)

    def result(self) -> Fingerprint:
        return Fingerprint(self._total, self._sample if self._wants_sample else None)


def _chunk_hash(chunk: np.ndarray) -> int:
    words = _words(chunk)
    first, shift, second, last = _MIXERS[words.dtype.itemsize]
    mixed, spare = _buffers(words.dtype, words.size)
    np.multiply(words, first, out=mixed)
    np.bitwise_xor(mixed, np.right_shift(mixed, shift, out=spare), out=mixed)
    np.multiply(mixed, second, out=mixed)
    np.bitwise_xor(mixed, np.right_shift(mixed, last, out=spare), out=mixed)
    return int(mixed.sum(dtype=np.uint64))


_THREAD = threading.local()


def _buffers(dtype: np.dtype, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Two arrays of this thread's, reused chunk after chunk: fresh 1 MiB temporaries made
    glibc map and unmap memory each time, and the hash ran at 150 MiB/s instead of 2 GB/s."""
    key = np.dtype(dtype).itemsize
    held: dict[int, tuple[np.ndarray, np.ndarray]] | None = getattr(_THREAD, "held", None)
    if held is None:
        held = _THREAD.held = {}
    pair = held.get(key)
    if pair is None or pair[0].size < size:
        pair = held[key] = (np.empty(size, dtype), np.empty(size, dtype))
    return pair[0][:size], pair[1][:size]


def _words(chunk: np.ndarray) -> np.ndarray:
    """Each element's bit pattern as uint32 (elements of up to 4 bytes) or uint64, in
    native byte order, so that both byte orders hash alike."""
    if not chunk.dtype.isnative:
        chunk = chunk.astype(chunk.dtype.newbyteorder("="))
    chunk = np.ascontiguousarray(chunk)
    size = chunk.dtype.itemsize
    if size == 16:  # c128: fold its two halves into one word
        halves = chunk.view(np.uint64).reshape(-1, 2)
        return halves[:, 0] * _GOLDEN + halves[:, 1]
    bits = chunk.view(_UNSIGNED[size])
    return bits if size >= 4 else bits.astype(np.uint32)
