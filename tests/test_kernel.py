"""The compiled per-chunk kernel against numpy: exact upcasts, block edges, odd buffers."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sysconfig
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from diffai import _kernel
from diffai.model import TensorRef
from diffai.stats import measure_pair, measure_tensor

BLOCK = 512  # elements the kernel upcasts at a time (_kernel.c)
EVERY_HALF = np.arange(1 << 16, dtype=np.uint16)


def unchanged_against_float64(stored: np.ndarray, code: int, as_float64: np.ndarray) -> None:
    """Every element upcast by the kernel equals numpy's float64 conversion of it."""
    _, side, diff = _kernel.measure_pair(stored, code, as_float64, _kernel.F64, 0.0)
    finite = np.isfinite(as_float64)
    compared, changed, sum_dd = diff[:3]
    assert (compared, changed, sum_dd) == (np.count_nonzero(finite), 0, 0.0)
    nan, inf = np.isnan(as_float64).sum(), np.isinf(as_float64).sum()
    assert side[6:] == (nan, inf)


def test_every_f16_value_upcasts_exactly_in_whole_blocks() -> None:
    """Full blocks take the hardware conversion (F16C) where the CPU has it."""
    halves = EVERY_HALF.view(np.float16)
    unchanged_against_float64(halves, _kernel.F16, halves.astype(np.float64))


def test_every_f16_value_upcasts_exactly_by_bits() -> None:
    """Runs shorter than eight take the bit arithmetic: subnormals, zeros, inf and NaN too."""
    halves = EVERY_HALF.view(np.float16)
    for start in range(0, halves.size, 7):
        run = halves[start : start + 7]
        unchanged_against_float64(run, _kernel.F16, run.astype(np.float64))


def test_every_bf16_value_upcasts_exactly() -> None:
    with np.errstate(invalid="ignore"):  # numpy warns about the NaN patterns it converts
        as_float64 = EVERY_HALF.view(ml_dtypes.bfloat16).astype(np.float64)
    unchanged_against_float64(EVERY_HALF, _kernel.BF16, as_float64)


def test_unaligned_buffers_read_like_aligned_ones() -> None:
    """Safetensors data can start at any byte: the kernel must not assume alignment."""
    values = np.random.default_rng(1).standard_normal(3 * BLOCK + 5).astype(np.float32)
    raw = b"\0" + values.tobytes()
    unaligned = np.frombuffer(raw, np.float32, offset=1)
    assert unaligned.ctypes.data % 4
    assert _kernel.measure_side(unaligned, _kernel.F32) == _kernel.measure_side(values, _kernel.F32)


def test_non_finite_values_at_block_edges() -> None:
    """A NaN or inf sends only its own block element by element; every block still counts."""
    rng = np.random.default_rng(2)
    base = rng.standard_normal(4 * BLOCK + 3)
    cand = base + rng.standard_normal(base.size) * 1e-3
    base[[BLOCK - 1, 3 * BLOCK]] = np.nan, np.inf
    cand[[BLOCK, 4 * BLOCK + 2]] = -np.inf, np.nan
    base_stats, cand_stats, diff = measure_pair(
        TensorRef("b", base.shape, "f64", lambda: base),
        TensorRef("c", cand.shape, "f64", lambda: cand),
        0.0,
    )
    both = np.isfinite(base) & np.isfinite(cand)
    delta = (cand - base)[both]
    assert (base_stats.nan, base_stats.inf, cand_stats.nan, cand_stats.inf) == (1, 1, 1, 1)
    assert base_stats.mean == pytest.approx(base[np.isfinite(base)].mean(), rel=1e-12)
    assert cand_stats.min == cand[np.isfinite(cand)].min()
    assert diff.changed == both.sum() + 4  # every finite position moved, and four non-finite ones
    assert diff.max_abs == np.abs(delta).max()
    assert diff.l2 == pytest.approx(np.linalg.norm(delta), rel=1e-12)
    assert diff.baseline_l2 == pytest.approx(np.linalg.norm(base[both]), rel=1e-12)


def test_big_endian_values_are_measured_like_little_endian_ones() -> None:
    little = np.random.default_rng(3).standard_normal(1000).astype("<f4")
    big = little.astype(">f4")
    stats = [measure_tensor(TensorRef("t", a.shape, "f32", lambda a=a: a)) for a in (little, big)]
    assert stats[0] == stats[1]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(lambda: _kernel.measure_side(b"abc", _kernel.F32),
                     "3 bytes is not a whole number of 4-byte elements", id="ragged"),
        pytest.param(lambda: _kernel.measure_side(b"abcd", 9), "unknown element code 9",
                     id="unknown-code"),
        pytest.param(lambda: _kernel.measure_pair(b"1234", _kernel.F32, b"12345678", 1, 0.0),
                     "the sides hold 1 and 2 elements", id="different-lengths"),
    ],
)  # fmt: skip
def test_misuse_is_a_value_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_a_fast_math_build_is_refused() -> None:
    """-ffast-math (say, from a user's CFLAGS) would make the kernel count no NaN or inf."""
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    if shutil.which(compiler[0]) is None:
        pytest.skip(f"no C compiler {compiler[0]!r} here")
    source = Path(_kernel.__file__).with_name("_kernel.c")
    if not source.exists():
        pytest.skip("installed without its source")
    include = sysconfig.get_paths()["include"]
    build = [*compiler, "-fsyntax-only", f"-I{include}", str(source)]
    assert subprocess.run(build, capture_output=True).returncode == 0
    refused = subprocess.run([*build, "-ffast-math"], capture_output=True, text=True)
    assert refused.returncode != 0 and "must not be compiled with -ffast-math" in refused.stderr
