"""The report's per-tensor records: strict JSON (no NaN, no Infinity) whatever the values."""

from __future__ import annotations

import math

import pytest

from diffai.change import RelativeChange
from diffai.report import diff_record, stats_record
from diffai.stats import DiffStats, TensorStats


def side(**values: float | None) -> TensorStats:
    fields = {"mean": 0.5, "std": 1.0, "min": -1.0, "max": 2.0, **values}
    return TensorStats((2, 3), "f32", "f32", 6, 24, nan=0, inf=0, zeros=1, **fields)  # type: ignore[arg-type]


def change(**values: float | None) -> DiffStats:
    fields = {"max_abs": 0.1, "mean_abs": 0.05, "l2": 0.2, "relative_l2": 0.1, "cosine": 0.99,
              "baseline_l2": 2.0, "candidate_l2": 2.1, **values}  # fmt: skip
    return DiffStats(changed=6, changed_fraction=1.0, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param({}, {"mean": 0.5, "std": 1.0, "min": -1.0, "max": 2.0}, id="finite"),
        pytest.param({"max": math.inf}, {"max": None, "mean": 0.5}, id="inf"),
        pytest.param({"std": math.nan}, {"std": None, "max": 2.0}, id="nan"),
        pytest.param(
            {"mean": None, "std": None, "min": None, "max": None},
            {"mean": None, "max": None},
            id="no finite element",
        ),
        pytest.param(
            {"min": None, "max": -math.inf},
            {"min": None, "max": None, "std": 1.0},
            id="None and inf",
        ),
        pytest.param(
            {"min": -1e308, "max": -1e308},
            {"min": -1e308, "max": -1e308},
            id="finite values whose sum overflows",
        ),
    ],
)
def test_a_side_keeps_its_finite_floats_and_nulls_the_others(
    values: dict[str, float | None], expected: dict[str, float | None]
) -> None:
    record = stats_record(side(**values))
    assert record is not None
    assert {key: record[key] for key in expected} == expected
    assert list(record) == ["shape", "dtype", "stored_dtype", "elements", "bytes", "mean", "std",
                            "min", "max", "nan", "inf", "zeros"]  # fmt: skip
    assert record["shape"] == [2, 3]


def test_a_diff_nulls_its_non_finite_floats_and_says_its_relative_change() -> None:
    record = diff_record(change(cosine=None, l2=math.inf), RelativeChange(0.25, "module"))
    assert record is not None
    assert (record["cosine"], record["l2"], record["max_abs"]) == (None, None, 0.1)
    assert (record["relative_change"], record["relative_basis"]) == (0.25, "module")
    assert list(record)[-2:] == ["relative_change", "relative_basis"]


def test_a_diff_without_a_relative_change_says_none() -> None:
    record = diff_record(change(), None)
    assert record is not None
    assert (record["relative_change"], record["relative_basis"]) == (None, "none")
