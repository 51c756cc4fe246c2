"""Statistics of one tensor and element-wise differences of a pair, in one streaming pass.

Every chunk is upcast to float64 and folded into float64 accumulators
(Chan et al.'s parallel update for mean and variance), so the result is within
1e-6 relative of a float64 reference for any tensor size, and memory is bounded
by one chunk per side whatever the tensor's size.

Conventions (also in docs/statistics.md):
- mean, std (population, ddof=0), min, max and zeros are over the finite elements;
  ``nan`` and ``inf`` count the others.
- diff metrics are over the positions where both sides are finite; ``changed``
  also counts positions whose non-finite values differ (NaN vs. a number, +inf vs. -inf).
- complex tensors are measured as their real and imaginary components.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from diffai.dtypes import is_complex
from diffai.model import TensorRef

#: Elements per chunk and side: 1 MiB of float64, so a chunk's dozen passes run in cache
#: (measured: 16K to 128K elements run alike, 512K about 25% slower).
CHUNK_ELEMENTS = 1 << 17
#: M2 from Σx² is trusted while it is at least this fraction of Σx² (see _centred_squares).
CANCELLATION_LIMIT = 1e-4
#: Leading elements compared before a whole chunk is checked for identical bytes.
PROBE_ELEMENTS = 64

ProgressCallback = Callable[[int], None]


#: Values near the float64 limit overflow a sum to inf, which the report turns into null;
#: numpy's RuntimeWarning about it would be a second, unexplained line on stderr.
def _quiet() -> np.errstate:
    return np.errstate(over="ignore", invalid="ignore")  # a fresh one: each may be entered once


class _Workspace:
    """Work arrays reused chunk after chunk and tensor after tensor, one set per thread.

    Measured here: fresh 1 MiB temporaries every chunk made glibc map and unmap
    memory, 94,000 page faults per 128 MB pair and twice as much kernel time
    as arithmetic (0.35 GB/s); reused buffers fault once (1.5 GB/s). A set per
    tensor still cost 116 x 4 MiB of fresh pages on a 512 MiB model.
    """

    def __init__(self) -> None:
        self._arrays: dict[tuple[str, np.dtype], np.ndarray] = {}

    def take(self, name: str, size: int, dtype: np.dtype | type = np.float64) -> np.ndarray:
        key = (name, np.dtype(dtype))
        array = self._arrays.get(key)
        if array is None or array.size < size:
            array = self._arrays[key] = np.empty(size, dtype)
        return array[:size]

    def ones(self, size: int) -> np.ndarray:
        """1.0 repeated, the other operand of a sum done as a dot product (see ``_sum``)."""
        array = self._arrays.get(("ones", np.dtype(np.float64)))
        if array is None or array.size < size:
            array = self.take("ones", size)
            array.fill(1.0)
        return array[:size]


_THREAD = threading.local()


def _workspace() -> _Workspace:
    """This thread's workspace; threads never share one, so none needs a lock."""
    work = getattr(_THREAD, "work", None)
    if work is None:
        work = _THREAD.work = _Workspace()
    return work


@dataclass(frozen=True)
class TensorStats:
    shape: tuple[int, ...]
    dtype: str
    elements: int
    bytes: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    nan: int
    inf: int
    zeros: int


@dataclass(frozen=True)
class DiffStats:
    max_abs: float | None
    mean_abs: float | None
    l2: float | None
    relative_l2: float | None
    cosine: float | None
    changed: int
    changed_fraction: float
    baseline_l2: float | None
    candidate_l2: float | None


@dataclass(frozen=True)
class _Moments:
    """One chunk's count, mean, M2, extrema and special values: what an accumulator merges."""

    count: int
    mean: float
    m2: float
    min: float
    max: float
    zeros: int
    nan: int
    inf: int
    sumsq: float  # Σx² over the finite values, which the difference reuses as ‖b‖² or ‖c‖²


def _chunk_moments(
    values: np.ndarray, work: _Workspace, raw: np.ndarray
) -> tuple[_Moments, np.ndarray | None]:
    """A float64 chunk's moments over its finite values, and its finite mask (None: all finite).

    ``raw`` is the chunk as stored: where it is f32 or f64, extrema and zeros are
    exact on it and read half the bytes of the float64 copy.
    """
    total = _sum(values, work)
    if math.isfinite(total):  # NaN and inf poison a sum: one pass proves all are finite
        exact = raw if raw.dtype.kind == "f" and raw.dtype.itemsize >= 4 else values
        return _finite_moments(values, total, 0, 0, work, exact), None
    finite = np.isfinite(values)
    nan = int(np.count_nonzero(np.isnan(values)))
    kept = values[finite]
    inf = values.size - kept.size - nan
    return _finite_moments(kept, _sum(kept, work), nan, inf, work, kept), finite


def _finite_moments(
    values: np.ndarray, total: float, nan: int, inf: int, work: _Workspace, exact: np.ndarray
) -> _Moments:
    """Moments of finite values; extrema and zeros from ``exact``, the same values as stored."""
    count = values.size
    if not count:
        return _Moments(0, 0.0, 0.0, math.inf, -math.inf, 0, nan, inf, 0.0)
    mean = total / count
    sumsq = _dot(values, values)
    return _Moments(
        count=count,
        mean=mean,
        m2=_centred_squares(values, mean, sumsq),
        min=float(exact.min()),
        max=float(exact.max()),
        zeros=_count(np.equal(exact, 0, out=work.take("flags", values.size, bool))),
        nan=nan,
        inf=inf,
        sumsq=sumsq,
    )


def _centred_squares(values: np.ndarray, mean: float, sumsq: float) -> float:
    """Σ(x − mean)², from Σx² when that is safe, else by a second pass.

    Σx² − n·mean² loses about log10(Σx²/M2) digits; below a ratio of 1e4
    (|mean| < ~100 std) it keeps 1e-9 or better, and saves two of a chunk's passes.
    """
    m2 = sumsq - values.size * mean * mean
    if m2 > sumsq * CANCELLATION_LIMIT:
        return m2
    deviation = values - mean
    return _dot(deviation, deviation)


class _SideAccumulator:
    """Running count, mean, M2, extrema and special-value counts of one side."""

    def __init__(self) -> None:
        self.count = self.nan = self.inf = self.zeros = 0
        self.mean = self.m2 = 0.0
        self.min, self.max = math.inf, -math.inf

    def merge(self, chunk: _Moments) -> None:
        """Chan, Golub and LeVeque's parallel update of mean and M2."""
        self.nan += chunk.nan
        self.inf += chunk.inf
        if not chunk.count:
            return
        total = self.count + chunk.count
        delta = chunk.mean - self.mean
        self.mean += delta * chunk.count / total
        self.m2 += chunk.m2 + delta * delta * self.count * chunk.count / total
        self.count = total
        self.min = min(self.min, chunk.min)
        self.max = max(self.max, chunk.max)
        self.zeros += chunk.zeros

    def result(self, ref: TensorRef) -> TensorStats:
        has_values = self.count > 0
        return TensorStats(
            shape=ref.shape,
            dtype=ref.dtype,
            elements=ref.elements,
            bytes=ref.nbytes,
            mean=self.mean if has_values else None,
            std=math.sqrt(max(self.m2, 0.0) / self.count) if has_values else None,
            min=self.min if has_values else None,
            max=self.max if has_values else None,
            nan=self.nan,
            inf=self.inf,
            zeros=self.zeros,
        )


class _DiffAccumulator:
    """Running sums of the element-wise difference and the inner products of a pair."""

    def __init__(self, epsilon: float, work: _Workspace) -> None:
        self.epsilon = epsilon
        self.work = work
        self.compared = self.changed = self.components = 0
        self.max_abs = self.sum_abs = self.sum_dd = 0.0
        self.sum_bb = self.sum_cc = self.sum_bc = 0.0

    def add(self, base: np.ndarray, cand: np.ndarray, sides: tuple[_Moments, _Moments]) -> None:
        """A chunk pair whose sides are all finite: their Σx² are already in ``sides``."""
        self.components += base.size
        self.sum_bb += sides[0].sumsq
        self.sum_cc += sides[1].sumsq
        self._add_compared(base, cand)

    def add_masked(self, base: np.ndarray, cand: np.ndarray, both_finite: np.ndarray) -> None:
        """A chunk pair with NaN or inf on a side: compare the positions finite on both."""
        self.components += base.size
        self.changed += _nonfinite_mismatches(base, cand, both_finite)
        base, cand = base[both_finite], cand[both_finite]
        self.sum_bb += _dot(base, base)
        self.sum_cc += _dot(cand, cand)
        self._add_compared(base, cand)

    def _add_compared(self, base: np.ndarray, cand: np.ndarray) -> None:
        if base.size == 0:
            return
        delta = np.subtract(cand, base, out=self.work.take("delta", base.size))
        self.compared += base.size
        self.sum_dd += _dot(delta, delta)
        self.sum_bc += _dot(base, cand)
        magnitude = np.abs(delta, out=delta)
        largest = float(magnitude.max())
        self.max_abs = max(self.max_abs, largest)
        self.sum_abs += _sum(magnitude, self.work)
        if largest > self.epsilon:  # else none changed, and the count's two passes are saved
            flags = self.work.take("flags", base.size, bool)
            self.changed += _count(np.greater(magnitude, self.epsilon, out=flags))

    def add_identical(self, values: np.ndarray, side: _Moments) -> None:
        """A chunk equal on both sides: no difference, and every inner product is its Σx²."""
        self.components += values.size
        self.compared += side.count
        self.sum_bb += side.sumsq
        self.sum_cc += side.sumsq
        self.sum_bc += side.sumsq

    def result(self) -> DiffStats:
        compared = self.compared > 0
        l2 = math.sqrt(self.sum_dd) if compared else None
        norm_b = math.sqrt(self.sum_bb) if compared else None
        norm_c = math.sqrt(self.sum_cc) if compared else None
        return DiffStats(
            max_abs=self.max_abs if compared else None,
            mean_abs=self.sum_abs / self.compared if compared else None,
            l2=l2,
            relative_l2=l2 / norm_b if l2 is not None and norm_b else None,
            cosine=_cosine(self.sum_bc, norm_b, norm_c),
            changed=self.changed,
            changed_fraction=self.changed / self.components if self.components else 0.0,
            baseline_l2=norm_b,
            candidate_l2=norm_c,
        )


def _cosine(dot: float, norm_b: float | None, norm_c: float | None) -> float | None:
    if not norm_b or not norm_c:
        return None
    return max(-1.0, min(1.0, dot / (norm_b * norm_c)))


def _nonfinite_mismatches(base: np.ndarray, cand: np.ndarray, both_finite: np.ndarray) -> int:
    """Positions not both finite whose values differ (NaN matches NaN, inf the same inf)."""
    others = ~both_finite
    b, c = base[others], cand[others]
    same = (b == c) | (np.isnan(b) & np.isnan(c))
    return int(np.count_nonzero(~same))


def measure_tensor(ref: TensorRef, on_bytes: ProgressCallback | None = None) -> TensorStats:
    """Statistics of one tensor (an added, removed or reshaped one)."""
    side, work = _SideAccumulator(), _workspace()
    with _quiet():
        _measure_side(ref, side, work, on_bytes)
    return side.result(ref)


def _measure_side(
    ref: TensorRef, side: _SideAccumulator, work: _Workspace, on_bytes: ProgressCallback | None
) -> None:
    for chunk in iter_chunks(ref.array()):
        side.merge(_chunk_moments(_as_float64(chunk, ref.dtype, work, "base"), work, chunk)[0])
        _report(on_bytes, chunk.nbytes)


def measure_pair(
    base_ref: TensorRef,
    cand_ref: TensorRef,
    epsilon: float,
    on_bytes: ProgressCallback | None = None,
) -> tuple[TensorStats, TensorStats, DiffStats]:
    """Both sides' statistics and their difference, reading each tensor once."""
    pair = _PairAccumulator(base_ref.dtype, cand_ref.dtype, epsilon)
    chunks = zip(iter_chunks(base_ref.array()), iter_chunks(cand_ref.array()), strict=True)
    with _quiet():
        for base_chunk, cand_chunk in chunks:
            pair.add(base_chunk, cand_chunk)
            _report(on_bytes, base_chunk.nbytes + cand_chunk.nbytes)
    return pair.base.result(base_ref), pair.cand.result(cand_ref), pair.diff.result()


class _PairAccumulator:
    """Both sides and their difference, with a shortcut for byte-identical chunks."""

    def __init__(self, base_dtype: str, cand_dtype: str, epsilon: float) -> None:
        self.dtypes = base_dtype, cand_dtype
        self.work = _workspace()
        self.base, self.cand = _SideAccumulator(), _SideAccumulator()
        self.diff = _DiffAccumulator(epsilon, self.work)

    def add(self, base_chunk: np.ndarray, cand_chunk: np.ndarray) -> None:
        base = _as_float64(base_chunk, self.dtypes[0], self.work, "base")
        base_moments, base_finite = _chunk_moments(base, self.work, base_chunk)
        self.base.merge(base_moments)
        same_dtype = self.dtypes[0] == self.dtypes[1]
        if same_dtype and _same_bytes(base_chunk, cand_chunk, self.work):
            # Frozen layers and re-saved weights: one side's arithmetic serves both (about 2x).
            self.cand.merge(base_moments)
            self.diff.add_identical(base, base_moments)
            return
        cand = _as_float64(cand_chunk, self.dtypes[1], self.work, "cand")
        cand_moments, cand_finite = _chunk_moments(cand, self.work, cand_chunk)
        self.cand.merge(cand_moments)
        if base_finite is None and cand_finite is None:
            self.diff.add(base, cand, (base_moments, cand_moments))
        else:
            self.diff.add_masked(base, cand, _both(base_finite, cand_finite, base.size))


def _same_bytes(left: np.ndarray, right: np.ndarray, work: _Workspace) -> bool:
    """Bitwise equality of two contiguous chunks, compared as unsigned integers of their width.

    A changed chunk nearly always differs in its first elements: probing them
    first spares such chunks the full comparison (22 of ~300 us per f32 chunk).
    """
    width = left.dtype.itemsize
    as_int = np.dtype(f"u{width}") if width in (1, 2, 4, 8) else np.dtype(np.uint8)
    left, right = left.view(as_int), right.view(as_int)
    if not np.array_equal(left[:PROBE_ELEMENTS], right[:PROBE_ELEMENTS]):
        return False
    return bool(np.equal(left, right, out=work.take("same", left.size, bool)).all())


def iter_chunks(array: np.ndarray, budget: int = CHUNK_ELEMENTS) -> Iterator[np.ndarray]:
    """The elements in C order as 1-D chunks of at most ``budget`` elements (one row at least).

    Chunk boundaries depend only on the shape, so two same-shaped tensors
    chunk alike whatever their strides; a strided view is copied one chunk at a time.
    """
    if array.ndim == 0:
        yield array.reshape(1)
        return
    row = math.prod(array.shape[1:])
    if row > budget:
        for index in range(array.shape[0]):
            yield from iter_chunks(array[index], budget)
        return
    rows = max(1, budget // max(row, 1))
    for start in range(0, array.shape[0], rows):
        yield np.ascontiguousarray(array[start : start + rows]).reshape(-1)


def _as_float64(chunk: np.ndarray, dtype: str, work: _Workspace, name: str) -> np.ndarray:
    """The chunk upcast into a reused float64 buffer (bf16 and f8 through ml_dtypes' casts)."""
    if is_complex(dtype):
        chunk = np.ascontiguousarray(chunk).view(chunk.real.dtype)
    values = work.take(name, chunk.size)
    values[...] = chunk
    return values


def _count(flags: np.ndarray) -> int:
    return int(np.count_nonzero(flags))


def _both(base: np.ndarray | None, cand: np.ndarray | None, size: int) -> np.ndarray:
    """Positions finite on both sides; a None mask means every position is."""
    if base is None or cand is None:
        return base if cand is None else cand  # type: ignore[return-value]
    return base & cand


def _sum(values: np.ndarray, work: _Workspace) -> float:
    """Σ values as a dot product with ones: BLAS ddot takes 8 us per 128K float64 elements,
    ``ndarray.sum`` 31 us, with the same float64 accuracy over one chunk (see ``_dot``)."""
    return _dot(values, work.ones(values.size))


def _dot(left: np.ndarray, right: np.ndarray) -> float:
    """Σ left·right of two float64 chunks: BLAS ddot, 18 µs per 128K elements here.

    ``compare_models`` holds OpenBLAS to one thread while it runs: its threaded
    ddot waits on worker threads at every call (2.7 ms per 128K chunk, far
    worse when the cores are busy), and our own threads already fill the cores.
    In float64 over one chunk the rounding error stays far below 1e-6.
    """
    return float(np.dot(left, right))


def _report(on_bytes: ProgressCallback | None, count: int) -> None:
    if on_bytes is not None:
        on_bytes(count)
