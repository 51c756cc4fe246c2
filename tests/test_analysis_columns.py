"""The analyses' one-pass columns (diffai/_attributes.c) read what ``attrgetter`` reads."""

from __future__ import annotations

from operator import attrgetter
from types import SimpleNamespace

import numpy as np
import pytest

from diffai.analyses import ANALYSES, columns, memory, run_analyses
from diffai.analyses.columns import attribute_columns, float_columns
from diffai.comparison import Comparison, compare_models
from diffai.model import Model, Sparsity, TensorRef

_ITEMS = [
    SimpleNamespace(count=3, size=0.25, none=None, big=2**60 + 1, flag=True),
    SimpleNamespace(count=-7, size=float("inf"), none=None, big=-(2**53) - 1, flag=False),
    SimpleNamespace(count=0, size=float("nan"), none=None, big=10**300, flag=True),
]
_FIELDS = ("count", "size", "none", "big", "flag")


def test_objects_are_the_lists_attrgetter_gives() -> None:
    expected = tuple(list(map(attrgetter(field), _ITEMS)) for field in _FIELDS)
    columns = attribute_columns(_ITEMS, _FIELDS)
    assert columns == expected
    pairs = zip(columns, expected, strict=True)
    assert all(a is b for got, want in pairs for a, b in zip(got, want, strict=True))


def test_floats_are_what_fromiter_makes_of_each_column() -> None:
    """Counts past 2**53 round as float() rounds them; None is NaN."""
    expected = np.array(
        [np.fromiter(map(attrgetter(field), _ITEMS), np.float64, len(_ITEMS)) for field in _FIELDS]
    )
    np.testing.assert_array_equal(float_columns(_ITEMS, _FIELDS), expected)


def test_a_none_item_is_nan_in_every_field() -> None:
    rows = float_columns([None, _ITEMS[0]], ("count", "size"))
    assert np.isnan(rows[:, 0]).all() and rows[:, 1].tolist() == [3.0, 0.25]


def test_properties_answer_as_in_python() -> None:
    refs = [_ref("a", stored_as="qint8", stored_size=9), _ref("b")]
    dtypes, sizes = attribute_columns(refs, ("stored_dtype", "stored_bytes"))
    assert (dtypes, sizes) == (["qint8", "f32"], [9, 24])


@pytest.mark.parametrize(
    ("items", "fields", "error"),
    [
        ([SimpleNamespace(a=1)], ("b",), AttributeError),
        ([SimpleNamespace(a="text")], ("a",), TypeError),
        ([SimpleNamespace(a=1)], (1,), TypeError),
    ],
)
def test_a_missing_or_unreadable_field_raises(items, fields, error) -> None:
    with pytest.raises(error):
        float_columns(items, fields)
    if error is AttributeError:
        with pytest.raises(error):
            attribute_columns(items, fields)


def test_floats_refuse_a_buffer_of_another_size_or_type() -> None:
    from diffai import _attributes

    for out in (np.empty((1, 2)), np.empty((1, 1), np.float32)):
        with pytest.raises(ValueError):
            _attributes.floats([SimpleNamespace(a=1)], ("a",), out)


def _ref(name: str, **encoding: object) -> TensorRef:
    return TensorRef(name, (2, 3), "f32", load=lambda: np.zeros((2, 3), np.float32), **encoding)


@pytest.mark.parametrize(
    "encodings",
    [
        [{}, {}],
        [{}, {"stored_as": "qint8"}],
        [{"stored_size": 5}, {}],
        [{"stored_as": "q4_k", "stored_size": 3}, {"sparse": Sparsity("coo", 2)}],
    ],
)
def test_bytes_by_dtype_counts_the_stored_encoding(encodings: list[dict]) -> None:
    """The plain fields stand for the properties only where no ref overrides them."""
    refs = {f"t{i}": _ref(f"t{i}", **encoding) for i, encoding in enumerate(encodings)}
    model = Model("m.safetensors", "safetensors", 0, refs)
    expected: dict[str, int] = {}
    for ref in refs.values():
        expected[ref.stored_dtype] = expected.get(ref.stored_dtype, 0) + ref.stored_bytes
    assert memory.bytes_by_dtype(model) == dict(
        sorted(expected.items(), key=lambda item: -item[1])
    )


def _comparison() -> Comparison:
    weights = {"fc.weight": np.ones((2, 3), np.float32), "fc.bias": np.zeros(3, np.float32)}
    later = {"fc.weight": np.full((2, 3), 2.0, np.float16), "head.bias": np.ones(3, np.float32)}
    return compare_models(_model(weights), _model(later))


def _model(arrays: dict[str, np.ndarray]) -> Model:
    refs = {
        name: TensorRef(name, array.shape, str(array.dtype).replace("float", "f"),
                        load=lambda array=array: array)
        for name, array in arrays.items()
    }  # fmt: skip
    return Model("m.safetensors", "safetensors", 0, refs)


def test_each_comparison_and_model_owns_its_columns_read_once() -> None:
    """No memo outside the objects: a comparison's (and a model's) columns are its own, read
    at the first ask, and another comparison of the same models reads its own."""
    comparison, other = _comparison(), _comparison()
    assert comparison.columns is comparison.columns
    assert comparison.columns.statuses is comparison.columns.statuses
    assert comparison.baseline.columns is comparison.baseline.columns
    assert other.columns is not comparison.columns
    assert other.baseline.columns is not comparison.baseline.columns
    assert other.columns.statuses is not comparison.columns.statuses


def test_the_columns_are_the_objects_own_values() -> None:
    comparison = _comparison()
    pairs, model = comparison.columns, comparison.candidate
    by_pair = {
        "name": pairs.names, "status": pairs.statuses, "role_hint": pairs.hints,
        "role": pairs.roles, "baseline": pairs.baselines, "candidate": pairs.candidates,
    }  # fmt: skip
    for field, column in by_pair.items():
        assert column == [getattr(t, field) for t in comparison.tensors]
    refs = model.columns
    assert refs.names == list(model.tensors)
    by_ref = {
        "role_hint": refs.hints, "shape": refs.shapes, "stored_as": refs.stored_as,
        "stored_size": refs.stored_size, "dtype": refs.dtypes, "nbytes": refs.nbytes,
    }  # fmt: skip
    for field, column in by_ref.items():
        assert column == [getattr(ref, field) for ref in model.tensors.values()]


def test_each_analysis_alone_on_a_fresh_comparison_gives_what_run_analyses_gives() -> None:
    """Whichever analysis reads a column first, on whichever comparison, reads the same."""
    alone = {key: analysis(_comparison()) for key, analysis in ANALYSES.items()}
    assert run_analyses(_comparison()) == alone


@pytest.mark.parametrize(
    "column",
    [[], ["weight"] * 3, ["buffer"] * 3, ["weight", "buffer", "weight"], ["buffer", "weight", "x"]],
)
def test_where_equal_picks_the_items_a_comprehension_picks(column: list[str]) -> None:
    items = [object() for _ in column]
    expected = [item for item, entry in zip(items, column, strict=True) if entry == "weight"]
    picked = columns.where_equal(items, column, "weight")
    assert picked == expected and picked is not items
