"""The batched path (``measure_small_pairs``: the kernel finishes the figures in C) against
``measure_pair`` (Python accumulators over the kernel's sums): the same figures, bit for bit,
on the values where rounding could tell them apart."""

from __future__ import annotations

import dataclasses
import math
import struct
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from diffai import _kernel
from diffai.model import TensorRef
from diffai.stats import DiffStats, TensorStats, measure_pair, measure_small_pairs

RNG = np.random.default_rng(16)
NUMPY = {"f64": np.float64, "f32": np.float32, "f16": np.float16, "bf16": ml_dtypes.bfloat16}


def mapped(values: np.ndarray, dtype: str) -> TensorRef:
    stored = values.astype(NUMPY[dtype])
    return TensorRef("t", stored.shape, dtype, load=lambda: stored)


def bits(record: Any) -> dict[str, Any]:
    """Every field, floats by their bits: -0.0 is not 0.0 and NaN equals NaN."""
    return {
        name: struct.pack("<d", value) if isinstance(value, float) else value
        for name, value in vars(record).items()
    }


def noisy(size: int, scale: float = 1.0, centre: float = 0.0) -> np.ndarray:
    return centre + scale * RNG.standard_normal(size)


def with_specials(size: int) -> np.ndarray:
    values = noisy(size)
    values[:: max(1, size // 5)] = np.nan
    values[1 :: max(2, size // 3)] = np.inf
    values[2 :: max(3, size // 2)] = -np.inf
    return values


CASES = {
    "one element": (noisy(1), noisy(1)),
    "random 7": (noisy(7), noisy(7)),
    "block edge": (noisy(512), noisy(512)),
    "past a block": (noisy(513), noisy(513)),
    "8 x 8 moved 1e-3": ((base := noisy(64)), base + 1e-3 * noisy(64)),
    "identical": ((same := noisy(4096)), same.copy()),
    "constant": (np.full(100, 3.5), np.full(100, 3.5)),
    "constant against noise": (np.full(100, 3.5), noisy(100)),
    "far from zero (second pass)": (noisy(1000, 1e-3, 1e4), noisy(1000, 1e-3, 1e4)),
    "zeros": (np.zeros(50), np.zeros(50)),
    "negative zeros": (-np.zeros(50), np.zeros(50)),
    "specials": (with_specials(600), with_specials(600)),
    "all nan": (np.full(9, np.nan), np.full(9, np.nan)),
    "nan against numbers": (np.full(9, np.nan), noisy(9)),
    "all inf": (np.full(9, np.inf), np.full(9, -np.inf)),
    "near the float64 limit": (np.full(10, 1e200), np.full(10, 5e199)),
    "overflowing squares": (noisy(10, 1e160), noisy(10, 1e160)),
    "underflowing squares": (noisy(10, 1e-170), noisy(10, 1e-170)),
    "opposite": ((flip := noisy(30)), -flip),
    # Σx² − n·mean² keeps about two digits fewer here: a product rounded another way shows.
    **{f"offset {size}": (noisy(size, 1.0, 30.0), noisy(size, 1.0, 30.0)) for size in range(2, 60)},
}


@pytest.mark.parametrize("epsilon", [0.0, 1e-3])
@pytest.mark.parametrize("dtypes", [("f64", "f64"), ("f32", "f32"), ("f16", "f16"),
                                    ("bf16", "bf16"), ("f32", "f16")])  # fmt: skip
def test_batched_figures_are_those_of_measure_pair_bit_for_bit(dtypes, epsilon) -> None:
    with np.errstate(over="ignore", invalid="ignore"):
        pairs = [(mapped(b, dtypes[0]), mapped(c, dtypes[1])) for b, c in CASES.values()]
    batched = measure_small_pairs(pairs, epsilon)
    for name, (base, cand), result in zip(CASES, pairs, batched, strict=True):
        assert result is not None, name
        alone = measure_pair(base, cand, epsilon)
        assert [bits(r) for r in result] == [bits(r) for r in alone], name


def test_built_past_init_they_are_dataclasses_like_any_other() -> None:
    """``_kernel.frozen``: the fields in order, equal, hashable, still frozen."""
    values = ((2, 3), "f32", "f32", 6, 24, 0.5, 0.1, 0.0, 1.0, 0, 0, 1, None, None, None)
    names = tuple(field.name for field in dataclasses.fields(TensorStats))
    built = _kernel.frozen(TensorStats, names, values)
    init = TensorStats(*values)
    assert list(vars(built)) == list(vars(init)) == list(names)
    assert built == init and hash(built) == hash(init)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.mean = 1.0  # type: ignore[misc]
    assert dataclasses.replace(built, mean=2.0).mean == 2.0


@pytest.mark.parametrize(
    "args",
    [(), (DiffStats, ("a",), ()), (1, (), ()), (DiffStats, ["a"], [1])],
    ids=["no arguments", "lengths differ", "not a type", "lists"],
)
def test_frozen_refuses_what_it_cannot_build(args) -> None:
    with pytest.raises(TypeError):
        _kernel.frozen(*args)


def test_a_batched_constant_has_std_exactly_zero() -> None:
    (result,) = measure_small_pairs([(mapped(np.full(5, 0.1), "f32"),) * 2], 0.0)
    assert result is not None and result[0].std == 0.0 and math.copysign(1, result[0].std) == 1
