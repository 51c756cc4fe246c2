"""Statistics of one tensor and element-wise differences of a pair, in one streaming pass.

The compiled kernel (``_kernel.c``) reads a chunk of each side once, upcasts it to
float64 and returns its sums; here the chunks' sums are merged in float64 (Chan et
al.'s parallel update for mean and variance), so the result is within 1e-6 relative
of a float64 reference for any tensor size, and memory is bounded by one chunk per
side whatever the tensor's size. Pairs of one chunk each go to the kernel many at a
time (``measure_small_pairs``), which finishes their figures the same way, bit for bit.

Conventions (also in docs/statistics.md):
- mean, std (population, ddof=0), min, max and zeros are over the finite elements;
  ``nan`` and ``inf`` count the others.
- diff metrics are over the positions where both sides are finite; ``changed``
  also counts positions whose non-finite values differ (NaN vs. a number, +inf vs. -inf).
- complex tensors are measured as their real and imaginary components.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from diffai import _kernel
from diffai.dtypes import is_complex, numpy_dtype
from diffai.model import TensorRef

#: M2 from Σx² is trusted while it is at least this fraction of Σx² (see _centred_squares;
#: _kernel.c's side_figures holds it too).
CANCELLATION_LIMIT = 1e-4
#: The dtypes the kernel reads as stored (native byte order); others are upcast first.
#: And bf16, ml_dtypes' type (``_kernel_code``): ml_dtypes is imported only for a model
#: that holds one (diffai.dtypes: 8-9 ms of a run's start).
KERNEL_CODES = {
    np.dtype(np.float64): _kernel.F64,
    np.dtype(np.float32): _kernel.F32,
    np.dtype(np.float16): _kernel.F16,
}

ProgressCallback = Callable[[int], None]


class _Workspace:
    """A float64 buffer per side, reused chunk after chunk, for dtypes the kernel cannot read.

    Measured here: fresh 1 MiB temporaries every chunk made glibc map and unmap
    memory, 94,000 page faults per 128 MB pair; one buffer per thread faults once.
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def take(self, name: str, size: int) -> np.ndarray:
        array = self._arrays.get(name)
        if array is None or array.size < size:
            array = self._arrays[name] = np.empty(size, np.float64)
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
    """``dtype`` is the values' type, ``stored_dtype`` and ``bytes`` the encoding's in the file;
    ``layout`` and ``nnz`` are a sparse tensor's (None for a dense one)."""

    shape: tuple[int, ...]
    dtype: str
    stored_dtype: str
    elements: int
    bytes: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    nan: int
    inf: int
    zeros: int
    layout: str | None = None
    nnz: int | None = None
    #: A dequantized tensor's scheme, scale, zero point and axis (``TensorRef.quantization``).
    quantization: dict[str, Any] | None = None


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


class _Moments(NamedTuple):
    """One chunk's count, mean, M2, extrema and special values: what an accumulator merges
    (a tuple: built twice per tensor, a frozen dataclass cost 1 us more each time)."""

    count: int
    mean: float
    m2: float
    min: float
    max: float
    zeros: int
    nan: int
    inf: int


#: What the kernel gives for one side of a chunk (see _kernel.c: measure_side).
KernelSide = tuple[int, float, float, float, float, int, int, int]


def _moments(side: KernelSide, chunk: _KernelChunk) -> _Moments:
    """A chunk's moments from the kernel's sums of its finite values."""
    count, total, sumsq, low, high, zeros, nan, inf = side
    if not count:
        return _Moments(0, 0.0, 0.0, math.inf, -math.inf, 0, nan, inf)
    mean = total / count
    m2 = 0.0 if low == high else _centred_squares(chunk, count, mean, sumsq)  # a constant chunk
    return _Moments(count, mean, m2, low, high, zeros, nan, inf)


def _centred_squares(chunk: _KernelChunk, count: int, mean: float, sumsq: float) -> float:
    """Σ(x − mean)², from Σx² when that is safe, else by a second pass.

    Σx² − n·mean² loses about log10(Σx²/M2) digits; below a ratio of 1e4
    (|mean| < ~100 std) it keeps 1e-9 or better, and saves a second pass.
    """
    m2 = sumsq - count * mean * mean
    if m2 > sumsq * CANCELLATION_LIMIT:
        return m2
    return _kernel.centred_squares(*chunk, mean)


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
        if not self.count:  # the update's δ²·0 would be NaN for means beyond ~1e154
            self.count, self.mean, self.m2 = chunk.count, chunk.mean, chunk.m2
            self.min, self.max, self.zeros = chunk.min, chunk.max, chunk.zeros
            return
        total = self.count + chunk.count
        delta = chunk.mean - self.mean
        self.mean += delta * chunk.count / total
        self.m2 += chunk.m2 + delta * delta * self.count * chunk.count / total
        self.count = total
        self.min = min(self.min, chunk.min)
        self.max = max(self.max, chunk.max)
        self.zeros += chunk.zeros

    def figures(self) -> SideFigures:
        """What ``_kernel.measure_pairs`` gives for one side of a one-chunk pair (``side_figures``
        there is this, for one chunk, bit for bit)."""
        if not self.count:
            return None, None, None, None, self.nan, self.inf, self.zeros
        std = math.sqrt(max(self.m2, 0.0) / self.count)
        return self.mean, std, self.min, self.max, self.nan, self.inf, self.zeros

    def result(self, ref: TensorRef) -> TensorStats:
        return _tensor_stats(ref, self.figures())


#: A side's measured figures: mean, std, min, max (None without a finite value), nan, inf, zeros.
SideFigures = tuple[float | None, float | None, float | None, float | None, int, int, int]
TENSOR_FIELDS = tuple(field.name for field in dataclasses.fields(TensorStats))
DIFF_FIELDS = tuple(field.name for field in dataclasses.fields(DiffStats))


def _tensor_stats(ref: TensorRef, figures: SideFigures) -> TensorStats:
    """The side's statistics, built by ``_kernel.frozen``: the generated frozen ``__init__``
    took 2.4 us a TensorStats, ``frozen`` 0.4 us (timeit, load 4), the same attributes."""
    sparse = ref.sparse
    values = (
        ref.shape, ref.dtype, ref.stored_dtype, ref.elements, ref.stored_bytes, *figures,
        sparse.layout if sparse else None, sparse.nnz if sparse else None, ref.quantization,
    )  # fmt: skip
    return _kernel.frozen(TensorStats, TENSOR_FIELDS, values)  # type: ignore[no-any-return]


#: What the kernel gives for the difference of a chunk pair (see _kernel.c: measure_pair).
KernelDiff = tuple[int, int, float, float, float, float, float, float]


class _DiffAccumulator:
    """Running sums of the element-wise difference and the inner products of a pair."""

    def __init__(self) -> None:
        self.components = self.compared = self.changed = 0
        self.max_abs = self.sum_abs = self.sum_dd = 0.0
        self.sum_bb = self.sum_cc = self.sum_bc = 0.0

    def add(self, components: int, chunk: KernelDiff) -> None:
        compared, changed, sum_dd, sum_bc, sum_bb, sum_cc, max_abs, sum_abs = chunk
        self.components += components
        self.compared += compared
        self.changed += changed
        self.sum_dd += sum_dd
        self.sum_bc += sum_bc
        self.sum_bb += sum_bb
        self.sum_cc += sum_cc
        self.max_abs = max(self.max_abs, max_abs)
        self.sum_abs += sum_abs

    def result(self) -> DiffStats:
        compared = self.compared > 0
        l2 = math.sqrt(self.sum_dd) if compared else None
        norm_b = math.sqrt(self.sum_bb) if compared else None
        norm_c = math.sqrt(self.sum_cc) if compared else None
        figures = (
            self.max_abs if compared else None,
            self.sum_abs / self.compared if compared else None,
            l2,
            l2 / norm_b if l2 is not None and norm_b else None,
            _cosine(self.sum_bc, norm_b, norm_c),
            self.changed,
            self.changed / self.components if self.components else 0.0,
            norm_b,
            norm_c,
        )  # what _kernel.measure_pairs gives for a one-chunk pair (diff_figures there)
        return _kernel.frozen(DiffStats, DIFF_FIELDS, figures)  # type: ignore[no-any-return]


def _cosine(dot: float, norm_b: float | None, norm_c: float | None) -> float | None:
    """None when a norm is 0, or when the sums overflowed (|values| beyond ~1e154): clamping
    NaN would have reported a perfect 1.0."""
    if not norm_b or not norm_c:
        return None
    cosine = dot / (norm_b * norm_c)
    return max(-1.0, min(1.0, cosine)) if math.isfinite(cosine) else None


def measure_tensor(
    ref: TensorRef,
    on_bytes: ProgressCallback | None = None,
    on_chunk: Callable[[np.ndarray], None] | None = None,
) -> TensorStats:
    """Statistics of one tensor (an added, removed or reshaped one); ``on_chunk`` sees each
    chunk of values too (rename detection fingerprints them in this same pass)."""
    side, work = _SideAccumulator(), _workspace()
    for chunk in ref.chunks():
        if on_chunk is not None:
            on_chunk(chunk)
        readable = _kernel_chunk(chunk, ref.dtype, work, "base")
        side.merge(_moments(_kernel.measure_side(*readable), readable))
        _report(on_bytes, chunk.nbytes)
    return side.result(ref)


def measure_pair(
    base_ref: TensorRef,
    cand_ref: TensorRef,
    epsilon: float,
    on_bytes: ProgressCallback | None = None,
) -> tuple[TensorStats, TensorStats, DiffStats]:
    """Both sides' statistics and their difference, reading each tensor once."""
    sums = _PairSums()
    work = _workspace()
    chunks = zip(base_ref.chunks(), cand_ref.chunks(), strict=True)
    for base_chunk, cand_chunk in chunks:
        base_readable = _kernel_chunk(base_chunk, base_ref.dtype, work, "base")
        cand_readable = _kernel_chunk(cand_chunk, cand_ref.dtype, work, "cand")
        sides = _kernel.measure_pair(*base_readable, *cand_readable, epsilon)
        sums.merge(base_readable, cand_readable, sides)
        _report(on_bytes, base_chunk.nbytes + cand_chunk.nbytes)
    return sums.result(base_ref, cand_ref)


#: Pairs and their results, for ``measure_small_pairs``.
RefPair = tuple[TensorRef, TensorRef]
PairResult = tuple[TensorStats, TensorStats, DiffStats]


def measure_small_pairs(
    pairs: Sequence[RefPair], epsilon: float, on_bytes: ProgressCallback | None = None
) -> list[PairResult | None]:
    """``measure_pair`` of many same-shaped pairs in one kernel call, the numbers unchanged.

    A pair qualifies when both sides are one chunk of a type the kernel reads as stored;
    None stands for one that does not (measure it with ``measure_pair``). This is
    ``diffai.comparison.measure_together`` (``_kernel.measure_pairs``) without the names.
    """
    from diffai.comparison import measure_together  # which imports this module

    named = [(base.name, base, cand) for base, cand in pairs]
    measured = measure_together(named, epsilon, on_bytes)
    return [(t.baseline, t.candidate, t.diff) if t else None for t in measured]  # type: ignore[misc]


#: The element code of each dtype name the kernel reads as stored (``_kernel.measure_pairs``).
DIRECT_CODES = {"f64": _kernel.F64, "f32": _kernel.F32, "f16": _kernel.F16, "bf16": _kernel.BF16}


def direct_chunk(ref: TensorRef) -> _KernelChunk | None:
    """A one-chunk side as ``_kernel.measure_pairs`` reads it when its load is not a mapped
    span (``model.mapped_view``): the loaded array, when the kernel reads it as stored."""
    assert ref.load is not None  # the kernel asks only for a side that has one
    return _direct_chunk(ref.load())


def _direct_chunk(array: np.ndarray) -> _KernelChunk | None:
    """The array contiguous, when the kernel reads its type as stored (native byte order)."""
    code = _kernel_code(array.dtype)
    if code is None:
        return None
    values = np.ascontiguousarray(array)
    return (values.view(np.uint16), code) if code == _kernel.BF16 else (values, code)


def _kernel_code(dtype: np.dtype) -> int | None:
    """The kernel's code for a dtype it reads as stored, else None. A bf16 dtype exists
    only once ml_dtypes is imported, so it is asked for only when one is met."""
    code = KERNEL_CODES.get(dtype)
    if code is None and dtype.name == "bfloat16" and dtype == numpy_dtype("bf16"):
        return _kernel.BF16
    return code


class _PairSums:
    """Both sides' accumulators and the difference's, merged chunk pair by chunk pair."""

    def __init__(self) -> None:
        self.base, self.cand, self.diff = _SideAccumulator(), _SideAccumulator(), _DiffAccumulator()

    def merge(self, base: _KernelChunk, cand: _KernelChunk, sides: Any) -> None:
        """One chunk pair: its readable sides and what ``_kernel.measure_pair`` gave for them."""
        self.base.merge(_moments(sides[0], base))
        self.cand.merge(_moments(sides[1], cand))
        self.diff.add(base[0].size, sides[2])

    def result(self, base_ref: TensorRef, cand_ref: TensorRef) -> PairResult:
        return self.base.result(base_ref), self.cand.result(cand_ref), self.diff.result()


#: A chunk as the kernel takes it: an array of one of its element types, and that type's code.
_KernelChunk = tuple[np.ndarray, int]


def _kernel_chunk(chunk: np.ndarray, dtype: str, work: _Workspace, name: str) -> _KernelChunk:
    """The chunk as stored when the kernel reads its type, else upcast to float64 by numpy
    (ints, bool, f8 through ml_dtypes); complex tensors as their real and imaginary parts."""
    if is_complex(dtype):
        chunk = np.ascontiguousarray(chunk).view(chunk.real.dtype)
    code = _kernel_code(chunk.dtype)
    if code == _kernel.BF16:
        return chunk.view(np.uint16), code  # numpy exports no buffer of ml_dtypes' types
    if code is not None:
        return chunk, code
    values = work.take(name, chunk.size)
    values[...] = chunk
    return values, _kernel.F64


def _report(on_bytes: ProgressCallback | None, count: int) -> None:
    if on_bytes is not None:
        on_bytes(count)
