"""The streaming statistics against a float64 numpy reference, for every dtype and layout."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

from diffai.dtypes import NUMPY_DTYPES
from diffai.model import CHUNK_ELEMENTS, TensorRef, iter_chunks
from diffai.stats import measure_pair, measure_tensor

RTOL = 1e-6


def ref(array: np.ndarray, dtype: str, name: str = "t") -> TensorRef:
    return TensorRef(name, tuple(array.shape), dtype, lambda: array)


def reference_stats(values: np.ndarray) -> dict[str, float]:
    finite = values[np.isfinite(values)]
    return {
        "mean": finite.mean(), "std": finite.std(), "min": finite.min(), "max": finite.max(),
        "zeros": int(np.count_nonzero(finite == 0)),
    }  # fmt: skip


def random_values(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    target = NUMPY_DTYPES[dtype]
    if dtype == "bool":
        return rng.random(shape) > 0.3
    if np.issubdtype(target, np.integer):
        info = np.iinfo(target)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), shape).astype(target)
    if dtype in ("c64", "c128"):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(target)
    return (rng.standard_normal(shape) * 3).astype(target)


@pytest.mark.parametrize("dtype", sorted(NUMPY_DTYPES))
def test_single_tensor_stats_match_float64_reference(dtype: str) -> None:
    values = random_values(dtype, (37, 53))
    stats = measure_tensor(ref(values, dtype))
    as_float = values.view(values.real.dtype) if dtype.startswith("c") else values
    expected = reference_stats(as_float.astype(np.float64))
    assert stats.elements == 37 * 53
    assert stats.bytes == values.nbytes
    for key in ("mean", "std", "min", "max"):
        assert getattr(stats, key) == pytest.approx(expected[key], rel=RTOL, abs=1e-12), key
    assert stats.zeros == expected["zeros"]


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "f8_e4m3", "i8", "f64"])
def test_pair_metrics_match_float64_reference(dtype: str) -> None:
    base = random_values(dtype, (64, 48), seed=1)
    cand = random_values(dtype, (64, 48), seed=2)
    _, _, diff = measure_pair(ref(base, dtype), ref(cand, dtype), epsilon=0.0)
    b, c = base.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
    d = c - b
    assert diff.max_abs == pytest.approx(np.abs(d).max(), rel=RTOL)
    assert diff.mean_abs == pytest.approx(np.abs(d).mean(), rel=RTOL)
    assert diff.l2 == pytest.approx(np.linalg.norm(d), rel=RTOL)
    assert diff.relative_l2 == pytest.approx(np.linalg.norm(d) / np.linalg.norm(b), rel=RTOL)
    cosine = b @ c / (np.linalg.norm(b) * np.linalg.norm(c))
    assert diff.cosine == pytest.approx(cosine, rel=RTOL, abs=1e-12)
    assert diff.changed == np.count_nonzero(d)
    assert diff.changed_fraction == np.count_nonzero(d) / d.size


def test_permuted_matrix_keeps_moments_but_shows_its_true_cosine() -> None:
    base = random_values("f32", (256, 64), seed=3)
    permuted = base[np.random.default_rng(4).permutation(256)]
    base_stats, cand_stats, diff = measure_pair(ref(base, "f32"), ref(permuted, "f32"), 0.0)
    assert base_stats.mean == pytest.approx(cand_stats.mean, rel=1e-12)
    assert base_stats.std == pytest.approx(cand_stats.std, rel=1e-12)
    b, c = base.astype(np.float64).ravel(), permuted.astype(np.float64).ravel()
    assert diff.cosine == pytest.approx(b @ c / (b @ b), rel=RTOL, abs=1e-12)
    assert abs(diff.cosine) < 0.1
    assert diff.relative_l2 == pytest.approx(math.sqrt(2), rel=0.1)


def test_chunks_merge_exactly_across_many_chunks() -> None:
    """Chan's merge over several chunks agrees with one float64 pass, with a large offset mean."""
    values = (np.random.default_rng(5).standard_normal(CHUNK_ELEMENTS * 5 + 3) + 1e4).astype(
        np.float32
    )
    stats = measure_tensor(TensorRef("t", values.shape, "f32", lambda: values))
    reference = values.astype(np.float64)
    assert stats.mean == pytest.approx(reference.mean(), rel=1e-12)
    assert stats.std == pytest.approx(reference.std(), rel=1e-9)
    assert (stats.min, stats.max) == (reference.min(), reference.max())
    values = values[:300_001]
    small_chunks = list(iter_chunks(values, budget=1000))
    assert len(small_chunks) == 301
    np.testing.assert_array_equal(np.concatenate(small_chunks), values)


@pytest.mark.parametrize(
    "make_view",
    [
        pytest.param(lambda a: a.T, id="transposed"),
        pytest.param(lambda a: a[::2, 1:], id="strided-slice"),
        pytest.param(lambda a: np.asfortranarray(a), id="fortran"),
        pytest.param(lambda a: a.reshape(4, 5, 6)[:, ::-1], id="reversed"),
    ],
)
def test_chunks_follow_c_order_for_any_layout(make_view) -> None:
    view = make_view(np.arange(120, dtype=np.float32).reshape(12, 10))
    for budget in (1, 7, 10, 1000):
        np.testing.assert_array_equal(np.concatenate(list(iter_chunks(view, budget))), view.ravel())


def test_nan_and_inf_are_counted_and_left_out_of_the_moments() -> None:
    base = np.array([1.0, 2.0, np.nan, 4.0, np.inf, 0.0], dtype=np.float32)
    cand = np.array([1.0, 2.5, np.nan, np.nan, np.inf, -np.inf], dtype=np.float32)
    base_stats, cand_stats, diff = measure_pair(ref(base, "f32"), ref(cand, "f32"), 0.0)
    assert (base_stats.nan, base_stats.inf, base_stats.zeros) == (1, 1, 1)
    assert (cand_stats.nan, cand_stats.inf) == (2, 2)
    assert base_stats.mean == pytest.approx(7 / 4)
    assert cand_stats.mean == pytest.approx(1.75)
    # compared positions: 0 and 1; 3 (4 -> nan) and 5 (0 -> -inf) changed, 2 and 4 match
    assert diff.changed == 3
    assert diff.l2 == pytest.approx(0.5)
    assert diff.relative_l2 == pytest.approx(0.5 / math.sqrt(5))


def test_all_nan_tensor_has_null_moments() -> None:
    stats = measure_tensor(ref(np.full(4, np.nan, dtype=np.float16), "f16"))
    assert (stats.mean, stats.std, stats.min, stats.max, stats.nan) == (None, None, None, None, 4)


def test_zero_baseline_gives_null_relative_l2_and_cosine() -> None:
    zeros, ones = np.zeros(8, np.float32), np.ones(8, np.float32)
    _, _, diff = measure_pair(ref(zeros, "f32"), ref(ones, "f32"), 0.0)
    assert diff.relative_l2 is None and diff.cosine is None
    assert diff.l2 == pytest.approx(math.sqrt(8))


def test_epsilon_sets_what_counts_as_changed() -> None:
    base = np.zeros(5, np.float64)
    cand = np.array([0.0, 1e-9, 1e-6, 1e-3, 1.0])
    assert measure_pair(ref(base, "f64"), ref(cand, "f64"), 0.0)[2].changed == 4
    assert measure_pair(ref(base, "f64"), ref(cand, "f64"), 1e-6)[2].changed == 2


def test_bf16_and_f8_upcast_exactly() -> None:
    values = np.array([0.1, -2.5, 448.0, 1e-3], dtype=np.float32)
    for dtype, numpy_type in (("bf16", ml_dtypes.bfloat16), ("f8_e4m3", ml_dtypes.float8_e4m3fn)):
        cast = values.astype(numpy_type)
        stats = measure_tensor(ref(cast, dtype))
        assert stats.max == float(cast.astype(np.float64).max())
        assert stats.mean == pytest.approx(cast.astype(np.float64).mean(), rel=1e-12)


def test_zero_dim_and_empty_tensors() -> None:
    scalar = np.array(3.5, dtype=np.float32)
    assert measure_tensor(ref(scalar, "f32")).mean == 3.5
    empty = np.zeros((0, 4), np.float32)
    stats = measure_tensor(ref(empty, "f32"))
    assert stats.elements == 0 and stats.mean is None
    _, _, diff = measure_pair(ref(empty, "f32"), ref(empty, "f32"), 0.0)
    assert diff.changed == 0 and diff.l2 is None


def test_identical_chunks_take_the_shortcut_and_give_the_same_numbers() -> None:
    """One chunk differs, the rest are byte-identical (NaN included): numbers as float64 says."""
    base = np.random.default_rng(9).standard_normal(CHUNK_ELEMENTS * 3).astype(np.float32)
    base[5] = np.nan
    cand = base.copy()
    cand[CHUNK_ELEMENTS + 7 : CHUNK_ELEMENTS + 1000] += 0.5
    base_stats, cand_stats, diff = measure_pair(ref(base, "f32"), ref(cand, "f32"), 0.0)
    b, c = base.astype(np.float64), cand.astype(np.float64)
    ok = np.isfinite(b)
    assert diff.changed == 993 and base_stats.nan == cand_stats.nan == 1
    assert diff.l2 == pytest.approx(np.linalg.norm((c - b)[ok]), rel=RTOL)
    assert diff.relative_l2 == pytest.approx(
        np.linalg.norm((c - b)[ok]) / np.linalg.norm(b[ok]), rel=RTOL
    )
    cosine = b[ok] @ c[ok] / (np.linalg.norm(b[ok]) * np.linalg.norm(c[ok]))
    assert diff.cosine == pytest.approx(cosine, rel=RTOL)
    assert cand_stats.mean == pytest.approx(c[ok].mean(), rel=RTOL)
    assert cand_stats.std == pytest.approx(c[ok].std(), rel=RTOL)
    _, same_stats, same = measure_pair(ref(base, "f32"), ref(base.copy(), "f32"), 0.0)
    assert (same.changed, same.l2, same.relative_l2) == (0, 0.0, 0.0)
    assert same.cosine == pytest.approx(1.0, rel=1e-15)
    assert same_stats == base_stats


def test_values_near_the_float64_limit_give_no_false_figures() -> None:
    """Σx² overflows beyond ~1e154: std stays exact for a constant tensor, and a cosine that
    cannot be computed is null, never a clamped 1.0."""
    constant = np.full(1000, 1e200)
    stats = measure_tensor(ref(constant, "f64"))
    assert (stats.mean, stats.std) == (1e200, 0.0)
    _, _, diff = measure_pair(ref(constant, "f64"), ref(constant * 0.5, "f64"), 0.0)
    assert diff.cosine is None and diff.baseline_l2 == math.inf


@pytest.mark.parametrize("elements", [1, 7, 1000, CHUNK_ELEMENTS])
def test_tensor_ref_chunks_are_the_values_in_c_order(elements) -> None:
    values = np.arange(3 * 5 * 7, dtype=np.float32).reshape(3, 5, 7).transpose(2, 0, 1)
    chunks = list(ref(values, "f32").chunks(elements))
    assert all(chunk.ndim == 1 and chunk.size <= max(elements, 1) for chunk in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), values.ravel())


def test_batched_pairs_report_only_the_bytes_they_read() -> None:
    """A pair the batch declines (over one chunk) is reported by measure_pair, once."""
    from diffai.stats import measure_small_pairs

    def mapped(name: str, values: np.ndarray) -> TensorRef:
        return TensorRef(name, values.shape, "f32", load=lambda: values)

    small = np.ones((4, 4), np.float32)
    large = np.ones(CHUNK_ELEMENTS + 1, np.float32)
    refs = [(mapped("s", small), mapped("s", small)), (mapped("l", large), mapped("l", large))]
    counted: list[int] = []
    results = measure_small_pairs(refs, 0.0, counted.append)
    assert results[1] is None and sum(counted) == 2 * small.nbytes
