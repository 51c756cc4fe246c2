"""The records diffai/_records.c builds are those ``tensor_record`` builds, key order included,
and it leaves to ``tensor_record`` only what it cannot build the same way for certain."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from diffai import report
from diffai.change import RelativeChange
from diffai.comparison import TensorComparison
from diffai.pairing.renames import Rename
from diffai.report import tensor_record, tensor_records
from diffai.stats import TensorStats
from tests.test_report_records import change, side


class Changes(dict[str, RelativeChange]):
    """Not a dict exactly: its ``get``, not its items, is what a record reads."""

    def get(self, name: str, default: Any = None) -> RelativeChange:  # type: ignore[override]
        return RelativeChange(0.5, "model")


def tensor(name: str = "a.weight", **parts: Any) -> TensorComparison:
    values = {"status": "changed", "baseline": side(), "candidate": side(), "diff": change()}
    return TensorComparison(name, **{**values, **parts})


def as_built(records: list[dict[str, Any]]) -> list[Any]:
    """The records with every dict's key order, which ``==`` does not compare."""

    def ordered(value: Any) -> Any:
        if isinstance(value, dict):
            return [(key, ordered(item)) for key, item in value.items()]
        return value

    return [ordered(record) for record in records]


@pytest.fixture
def fallbacks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the tensors whose records went through ``tensor_record``."""
    names: list[str] = []

    def counted(item: TensorComparison, relative: RelativeChange | None) -> dict[str, Any]:
        names.append(item.name)
        return tensor_record(item, relative)

    monkeypatch.setattr(report, "tensor_record", counted)
    yield names


def quantized() -> TensorStats:
    return TensorStats((4,), "f32", "qint8", 4, 4, 0.5, 1.0, -1.0, 2.0, 0, 0, 0,
                       quantization={"scheme": "per_tensor_affine", "scale": math.inf})  # fmt: skip


def sparse() -> TensorStats:
    return TensorStats((4,), "f32", "f32", 4, 16, 0.5, 1.0, -1.0, 2.0, 0, 0, 2, "coo", 2)


BUILT_HERE = [
    pytest.param(tensor(), id="finite"),
    pytest.param(tensor(candidate=side(max=math.inf)), id="a side's inf"),
    pytest.param(tensor(baseline=side(mean=None, std=None, min=None, max=None)), id="no values"),
    pytest.param(tensor(diff=change(l2=math.nan, cosine=None)), id="a diff's nan"),
    pytest.param(tensor(status="added", baseline=None, diff=None), id="added"),
    pytest.param(tensor(status="removed", candidate=None, diff=None), id="removed"),
    pytest.param(tensor("b.bias"), id="no relative change"),
    pytest.param(tensor("c.weight", diff=change(cosine=None)), id="inf relative change, nulled"),
]
LEFT_TO_PYTHON = [
    pytest.param(tensor(status="renamed", rename=Rename("old", "exact", 1.0)), id="renamed"),
    pytest.param(tensor(candidate=quantized()), id="quantized"),
    pytest.param(tensor(baseline=sparse()), id="sparse"),
    pytest.param(tensor(baseline=side(mean=1)), id="an int in a float field"),
    pytest.param(tensor("c.weight"), id="inf relative change, finite floats"),
    pytest.param(
        tensor("c.weight", diff=change(max_abs=1e308, mean_abs=1e308)), id="sum overflows"
    ),
]
CHANGES = {"a.weight": RelativeChange(0.25, "module"), "c.weight": RelativeChange(math.inf, "self")}


@pytest.mark.parametrize("item", BUILT_HERE)
def test_a_usual_tensor_is_built_in_c_as_python_builds_it(
    item: TensorComparison, fallbacks: list[str]
) -> None:
    records = tensor_records([item], CHANGES)
    assert as_built(records) == as_built([tensor_record(item, CHANGES.get(item.name))])
    assert fallbacks == []


@pytest.mark.parametrize("item", LEFT_TO_PYTHON)
def test_what_c_cannot_build_the_same_way_is_left_to_python(
    item: TensorComparison, fallbacks: list[str]
) -> None:
    records = tensor_records([item], CHANGES)
    assert as_built(records) == as_built([tensor_record(item, CHANGES.get(item.name))])
    assert fallbacks == [item.name]


def test_a_mapping_that_is_not_a_dict_is_read_by_its_get() -> None:
    items = [tensor(), tensor("b.bias")]
    records = tensor_records(items, Changes(CHANGES))
    assert [r["diff"]["relative_basis"] for r in records] == ["model", "model"]
    assert [r["diff"]["relative_change"] for r in records] == [0.5, 0.5]


def test_a_pair_without_a_diff_leaves_its_change_unread() -> None:
    """As ``diff_record``: no figures, so an odd change object is never asked."""
    item = tensor("d.weight", status="added", baseline=None, diff=None)
    records = tensor_records([item], {"d.weight": object()})
    assert records[0]["diff"] is None and records[0]["baseline"] is None


def test_the_overflowing_sum_nulls_the_infinite_relative_change_as_python_does() -> None:
    item = tensor("c.weight", diff=change(max_abs=1e308, mean_abs=1e308))
    assert tensor_records([item], CHANGES)[0]["diff"]["relative_change"] is None
