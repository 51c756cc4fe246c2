"""Per-layer aggregation (``--show-layer-impact``): tensors grouped by module prefix.

A layer's relative change is sqrt(sum ‖c−b‖²) / sqrt(sum ‖b‖²) over its
same-shaped tensors, i.e. the relative L2 change of the layer's weights taken
as one vector, so a big bias cannot hide behind a small weight or vice versa.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from diffai import _columns

if TYPE_CHECKING:
    from diffai.comparison import TensorComparison
    from diffai.pair_columns import PairColumns

ROOT_LAYER = "(root)"

Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True)
class LayerImpact:
    name: str
    tensors: int
    changed: int
    parameters: int
    relative_l2: float | None


#: A layer record's keys: LayerImpact's fields, in order.
_RECORD_KEYS = tuple(field.name for field in fields(LayerImpact))


def layer_of(tensor_name: str) -> str:
    """The module prefix: ``encoder.layer.0.attn.weight`` -> ``encoder.layer.0.attn``."""
    prefix, _, _ = tensor_name.rpartition(".")
    return prefix or ROOT_LAYER


def layers_of(tensor_names: Iterable[str]) -> list[str]:
    """``layer_of`` of each name, without a call per name (0.15 us a name, calls 0.4)."""
    return [name.rpartition(".")[0] or ROOT_LAYER for name in tensor_names]


def layer_impact(tensors: Iterable[TensorComparison]) -> list[LayerImpact]:
    """The weights' layers in model order (other roles left out, as the report's layer
    records leave them), each with its aggregated relative change."""
    names, counts, changed, parameters, relative = _layer_columns(_pair_columns(tensors))
    return list(map(LayerImpact, names, counts, changed, parameters, relative))


def layer_records(tensors: Iterable[TensorComparison]) -> list[dict[str, Any]]:
    """``layer_impact`` as the report's strict-JSON records (the weights' layers)."""
    return layer_records_of(_pair_columns(tensors))


def layer_records_of(columns: PairColumns) -> list[dict[str, Any]]:
    """The layer records of the columns' weights (their fields in order, a non-finite
    relative change None), built from the columns in one C call (``_columns.build_rows``):
    a ``LayerImpact`` and then its record cost 2.3 us a layer at 100,000 one-tensor
    layers, a dict comprehension 0.3 us."""
    names, counts, changed, parameters, relative = _layer_columns(columns)
    finite = [r if r is None or math.isfinite(r) else None for r in relative]
    return _columns.build_rows(dict, _RECORD_KEYS, (names, counts, changed, parameters, finite))


def _pair_columns(tensors: Iterable[TensorComparison]) -> PairColumns:
    # Imported here: diffai.pair_columns builds on this module.
    from diffai.pair_columns import PairColumns

    return PairColumns.of(tensors)


def _layer_columns(
    columns: PairColumns,
) -> tuple[list[str], list[int], list[int], list[int], list[float | None]]:
    """``LayerImpact``'s fields of the columns' weights as columns, one entry a layer.

    Summed as columns read a field a pass: a list and four generator sums per layer cost
    8 us a tensor at 100,000 one-tensor layers. ``np.bincount`` adds each layer's
    squares in model order, as ``sum`` did, and the squares stay Python's ``**`` (it
    differs from numpy's x*x in the last bit for about 1 float in 1,000): no bit moves.
    """
    layers, number, weights = _weight_layers(columns)
    count, tensors = len(layers), columns.tensors
    if len(weights) != len(tensors):
        tensors = [tensors[row] for row in weights.tolist()]
    groups = number[columns.layer_ids[weights]]
    measured = number[columns.layer_ids[columns.rows[columns.measured_weights]]]
    change = _root_sums(measured, columns.of_weights(columns.change_squares), count)
    size = _root_sums(measured, columns.of_weights(columns.size_squares), count)
    sides = [t.candidate or t.baseline for t in tensors]
    totals = np.zeros(count, np.int64)
    elements = [side.elements if side else 0 for side in sides]
    if count == len(groups):  # a tensor a layer: np.add.at took 0.12 us a tensor at 100,000
        totals[groups] = elements
    else:
        np.add.at(totals, groups, elements)
    moved = np.array([t.status != "unchanged" for t in tensors], bool)
    pairs = np.bincount(measured, minlength=count).tolist()
    return (
        layers,
        np.bincount(groups, minlength=count).tolist(),
        np.bincount(groups[moved], minlength=count).tolist(),
        totals.tolist(),
        [c / s if n and s else None for c, s, n in zip(change, size, pairs, strict=True)],
    )


def _weight_layers(columns: PairColumns) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The layers of the weights, first seen first; each layer's number among them (by its
    number among all pairs' layers); the weights' positions among the pairs."""
    weights = np.flatnonzero(columns.weight)
    if len(weights) == len(columns.names):  # every pair a weight: the usual case
        return columns.layers, np.arange(len(columns.layers)), weights
    ids = columns.layer_ids[weights]
    present, first = np.unique(ids, return_index=True)
    order = present[np.argsort(first, kind="stable")]
    number = np.zeros(len(columns.layers), np.intp)
    number[order] = np.arange(len(order))
    return [columns.layers[i] for i in order.tolist()], number, weights


def grouped_layers(names: list[str]) -> tuple[list[str], np.ndarray]:
    """``group_ids(layers_of(names))``, in one C pass (``_columns.layer_groups``): 1.2 us
    a name at 100,000 one-tensor layers, 0.3 in C; the numbers are read-only."""
    layers, numbers = _columns.layer_groups(names, ROOT_LAYER)
    return layers, np.frombuffer(numbers, np.intp)


def group_ids(keys: Sequence[Key]) -> tuple[list[Key], np.ndarray]:
    """The distinct keys in order of first appearance, and each key's number among them.

    One dict maps each key to its last position (a dict keeps a key where it first came);
    the numbers follow by indexing arrays: 0.59 us a key at 100,000 distinct keys, against
    0.78 for numbering ``dict.fromkeys``'s keys and looking each key up."""
    last = dict(zip(keys, range(len(keys)), strict=True))
    number = np.empty(len(keys), np.intp)
    number[np.fromiter(last.values(), np.intp, len(last))] = np.arange(len(last))
    return list(last), number[np.fromiter(map(last.__getitem__, keys), np.intp, len(keys))]


def _root_sums(groups: np.ndarray, squares: list[float], count: int) -> list[float]:
    """sqrt(Σ squares) per group, summed in order."""
    weights = np.array(squares, np.float64)
    return np.sqrt(np.bincount(groups, weights=weights, minlength=count)).tolist()


def relative_change(tensors: Iterable[TensorComparison]) -> tuple[float, float, int]:
    """(sqrt(Σ‖c−b‖²), sqrt(Σ‖b‖²), pairs measured) over the same-shaped pairs."""
    _, change, size = measured_norms(tensors)
    return math.sqrt(sum(squares(change))), math.sqrt(sum(squares(size))), len(change)


def measured_norms(
    tensors: Iterable[TensorComparison],
) -> tuple[list[str], list[float], list[float]]:
    """The name, ‖c−b‖ and ‖b‖ (0 when unknown) of each pair whose difference was measured.

    A list per column: tuples per pair, unpacked three times, cost 1.6 us a pair at 100,000
    pairs, these passes 0.5 us."""
    kept = [t for t in tensors if (d := t.diff) is not None and d.l2 is not None]
    diffs = [t.diff for t in kept]
    return (
        [t.name for t in kept],
        [d.l2 for d in diffs],  # type: ignore[union-attr]
        [d.baseline_l2 or 0.0 for d in diffs],  # type: ignore[union-attr]
    )


def squares(norms: list[float]) -> list[float]:
    """``square`` of each norm: one comprehension costs 0.03 us a norm, a call each 0.25 us;
    only a list holding a norm past the float range takes the calls."""
    try:
        return [norm**2 for norm in norms]
    except OverflowError:
        return list(map(square, norms))


def square(norm: float) -> float:
    """``norm ** 2`` (not ``norm * norm``: the figures were always summed from ``**``), inf
    past the float range, where ``**`` raises: a norm read from a shard report
    (``diffai merge``) can be any float."""
    try:
        return norm**2
    except OverflowError:
        return math.inf
