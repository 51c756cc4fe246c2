"""``diffai.change``'s relative changes worked out as columns, for every pair at once.

One object per pair cost 26 us a pair at 100,000 pairs (a ``_Pair`` and two group sums
each); arrays take about 2 us. The numbers are those of the per-pair definition bit for
bit: each group's Σ‖b‖² is ``np.bincount``'s, which adds in input order as the loop over
pairs did, the element counts it adds as floats are exact below 2**53, and every other
step is the same IEEE operation in the same order (tests/test_change_columns.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from diffai import _columns
from diffai.change import NEGLIGIBLE, RelativeChange
from diffai.layers import group_ids
from diffai.pair_columns import PairColumns, all_given

if TYPE_CHECKING:
    from diffai.comparison import TensorComparison

_FIELDS = tuple(field.name for field in dataclasses.fields(RelativeChange))
#: The bases in the order of the codes ``_basis`` gives.
_BASES = np.array(["self", "module", "model", "none"], object)


@dataclass(frozen=True)
class RelativeColumns:
    """The relative changes of the measured pairs that have them: their positions among
    the measured pairs (``PairColumns.rows``), values (None unknown) and basis codes."""

    kept: np.ndarray
    values: list[float | None]
    codes: np.ndarray

    @property
    def bases(self) -> list[str]:
        return _BASES[self.codes].tolist()


def relative_changes_of(tensors: Iterable[TensorComparison]) -> dict[str, RelativeChange]:
    """``diffai.change.relative_changes``: its definitions, over columns."""
    return changes_by_name(PairColumns.of(tensors))


def changes_by_name(columns: PairColumns) -> dict[str, RelativeChange]:
    """Each relative change by its pair's name."""
    relative = columns.relative
    # Built past the dataclass's __init__, all in one C call (_columns.build_rows): a
    # _kernel.frozen call a pair cost 0.57 us, the __init__ 0.77.
    built = _columns.build_rows(RelativeChange, _FIELDS, (relative.values, relative.bases))
    names = columns.names
    rows = columns.rows[relative.kept]
    if len(rows) == len(names):
        return dict(zip(names, built, strict=True))
    return dict(zip([names[row] for row in rows.tolist()], built, strict=True))


def relative_columns(columns: PairColumns) -> RelativeColumns:
    """The relative changes of the measured pairs with a baseline and its norm, both
    norms finite."""
    diffs, change_l2, baseline_l2 = columns.diffs, columns.change_l2, columns.baseline_l2
    sides = [t.baseline for t in columns.measured]
    kept = np.arange(len(diffs))
    if None in baseline_l2 or not all_given(sides):
        known = zip(baseline_l2, sides, strict=True)
        kept = np.flatnonzero([n is not None and s is not None for n, s in known])
        diffs, sides, change_l2, baseline_l2 = _picked(kept, diffs, sides, change_l2, baseline_l2)
    change, baseline = np.array(change_l2, np.float64), np.array(baseline_l2, np.float64)
    finite = np.isfinite(change) & np.isfinite(baseline)
    if not finite.all():
        kept, change, baseline = kept[finite], change[finite], baseline[finite]
        diffs, sides = _picked(np.flatnonzero(finite), diffs, sides)
    if not len(kept):
        return RelativeColumns(kept, [], np.zeros(0, np.intp))
    rows = columns.rows[kept]
    role_ids = _role_ids(columns.roles, rows)
    modules = columns.layer_ids[rows] * (role_ids.max() + 1) + role_ids  # (layer, role)
    elements = np.array([side.elements for side in sides], np.float64)
    relative = [d.relative_l2 for d in diffs]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        sizes = np.sqrt(elements)
        own_rms = np.divide(baseline, sizes, out=np.zeros_like(sizes), where=elements != 0)
        module_rms = _group_rms(modules, baseline, elements)
        model_rms = _group_rms(role_ids, baseline, elements)
        codes, basis_rms = _basis(own_rms, module_rms, model_rms)
        # Measured against itself, the value is relative_l2: the same number, not a re-rounding.
        own = (codes == 0) & np.array([r is not None for r in relative], bool)
        value = np.where(own, np.array(relative, np.float64), change / sizes / basis_rms)
    # Values near the float64 limit overflow the ratio: unmeasurable, as relative_l2 is then.
    known = np.isfinite(value) & (own | (basis_rms != 0))
    zero = change == 0
    value[zero], known[zero] = 0.0, True
    values = value.tolist()
    for unknown in np.flatnonzero(~known).tolist():
        values[unknown] = None
    return RelativeColumns(kept, values, codes)


def _picked(positions: np.ndarray, *columns: list[Any]) -> list[list[Any]]:
    """Each column's entries at ``positions``."""
    picked = positions.tolist()
    return [[column[p] for p in picked] for column in columns]


def _role_ids(roles: list[str], rows: np.ndarray) -> np.ndarray:
    """Each row's role's number: all zero when every pair has one role (the usual case;
    numbering 100,000 roles cost 0.3 us a pair). Numbers only group: any numbering sums
    each group in the same order."""
    if roles and roles.count(roles[0]) == len(roles):
        return np.zeros(len(rows), np.intp)
    return group_ids([roles[row] for row in rows.tolist()])[1]


def _group_rms(groups: np.ndarray, baseline: np.ndarray, elements: np.ndarray) -> np.ndarray:
    """Per pair, its group's rms = sqrt(Σ‖b‖² / Σ elements), 0 for a group of no elements."""
    squares = np.bincount(groups, weights=baseline * baseline)
    counts = np.bincount(groups, weights=elements)
    rms = np.sqrt(np.divide(squares, counts, out=np.zeros_like(squares), where=counts != 0))
    return rms[groups]


def _basis(
    own_rms: np.ndarray, module_rms: np.ndarray, model_rms: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per pair, its basis (an index into ``BASES``), the first that is not negligible,
    and that basis's rms."""
    is_self = (own_rms != 0) & (own_rms >= NEGLIGIBLE * module_rms)
    is_module = ~is_self & (module_rms != 0) & (module_rms >= NEGLIGIBLE * model_rms)
    is_model = ~is_self & ~is_module & (model_rms != 0)
    choices = [is_self, is_module, is_model]
    codes = np.select(choices, [0, 1, 2], 3)
    return codes, np.select(choices, [own_rms, module_rms, model_rms], 0.0)
