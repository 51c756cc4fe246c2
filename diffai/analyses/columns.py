"""Reading many objects' attributes as columns, and picking items by a column's value.

Why: at 100,000 tensors a pass over the pairs (or a model's refs) costs 15-30 ms whatever
it reads, cache misses and ``getattr`` (~50 ns an attribute here), so the analyses read
what they need of each object in one pass (``diffai/_attributes.c``). The columns they
share are owned by what they describe, read once each: the pairs' by the comparison
(``Comparison.columns``, ``diffai.pair_columns``), a model's refs' by the model
(``Model.columns``, ``diffai.ref_columns``). The columns are the objects' own values:
nothing is recomputed or rounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import compress, repeat
from operator import eq
from typing import Any, TypeVar

import numpy as np

from diffai import _attributes

_Item = TypeVar("_Item")


def attribute_columns(items: Sequence[Any], fields: tuple[str, ...]) -> tuple[list[Any], ...]:
    """Each field of every item, one list a field, read in one pass (``diffai/_attributes.c``)."""
    return _attributes.objects(items, fields)


def float_columns(items: Sequence[Any], fields: tuple[str, ...]) -> np.ndarray:
    """Each field of every item as a float64 row, None (and every field of a None item) as
    NaN, read in one pass (``diffai/_attributes.c``); counts are exact as floats below 2**53."""
    rows = np.empty((len(fields), len(items)), np.float64)
    _attributes.floats(items, fields, rows)
    return rows


def where_equal(items: list[_Item], column: list[Any], value: object) -> list[_Item]:
    """The items whose entry in ``column`` (of strings) equals ``value``.

    The usual answers, none or all (no tensor re-typed, every tensor a weight), come from
    ``list.count``, 2 ms a 100,000 entries; else ``map(eq, column, repeat(value))``, 6-12 ms,
    where ``map(value.__eq__, column)`` (a method-wrapper call each) took 20 ms."""
    matches = column.count(value)
    if matches in (0, len(column)):
        return list(items) if matches else []
    return list(compress(items, map(eq, column, repeat(value))))
