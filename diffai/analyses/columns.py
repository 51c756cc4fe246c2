"""The comparison's tensors as columns, read once and shared by the analyses that need them.

Why: at 100,000 tensors a pass over the pairs (or a model's refs) costs 15-30 ms whatever
it reads, cache misses and ``getattr`` (~50 ns an attribute here), and five analyses each
made their own: anomaly the pairs' sides, architecture their names, hints and roles,
quantization their statuses, convergence and gradient their roles; memory and architecture
each model's encodings and shapes. Within ``run_analyses`` (``sharing``) each is read in
one pass (``diffai/_attributes.c``) the first time an analysis asks; an analysis called alone
reads its own. The columns are the objects' own values: nothing is recomputed or rounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from itertools import compress, repeat
from operator import eq
from typing import Any, NamedTuple, TypeVar

import numpy as np

from diffai import _attributes
from diffai.comparison import Comparison, Status
from diffai.model import Model
from diffai.roles import Role
from diffai.stats import TensorStats

_Shared = TypeVar("_Shared")
_Item = TypeVar("_Item")

#: What the analyses of one ``run_analyses`` call have read, by (id of the object, kind):
#: the comparison and its models outlive the call, so their ids stay theirs.
_SHARED: ContextVar[dict[tuple[int, str], Any] | None] = ContextVar("shared", default=None)


@contextmanager
def sharing() -> Iterator[None]:
    """Columns read during the block are read once and shared, then dropped."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def _shared(owner: object, kind: str, read: Callable[[], _Shared]) -> _Shared:
    memo = _SHARED.get()
    if memo is None:
        return read()
    key = (id(owner), kind)
    if key not in memo:
        memo[key] = read()
    return memo[key]


class Pairs(NamedTuple):
    """``Comparison.tensors`` as columns, in its order."""

    names: list[str]
    statuses: list[Status]
    hints: list[Role | None]
    roles: list[Role]
    baselines: list[TensorStats | None]
    candidates: list[TensorStats | None]


class Refs(NamedTuple):
    """A model's tensors as columns, in model order: their names, role hints and shapes, and
    the fields their stored encoding comes from (``TensorRef.stored_dtype``/``stored_bytes``)."""

    names: list[str]
    hints: list[Role | None]
    shapes: list[tuple[int, ...]]
    stored_as: list[str | None]
    stored_size: list[int | None]
    dtypes: list[str]
    nbytes: list[int]


def pairs(comparison: Comparison) -> Pairs:
    fields = ("name", "status", "role_hint", "role", "baseline", "candidate")
    return _shared(
        comparison, "pairs", lambda: Pairs(*attribute_columns(comparison.tensors, fields))
    )


def refs(model: Model) -> Refs:
    fields = ("role_hint", "shape", "stored_as", "stored_size", "dtype", "nbytes")
    tensors = model.tensors
    return _shared(
        model, "refs", lambda: Refs(list(tensors), *attribute_columns(tensors.values(), fields))
    )


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
