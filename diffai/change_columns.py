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
from typing import TYPE_CHECKING

import numpy as np

from diffai import _kernel
from diffai.change import NEGLIGIBLE, RelativeChange
from diffai.layers import group_ids, layer_groups

if TYPE_CHECKING:
    from diffai.comparison import TensorComparison

_FIELDS = tuple(field.name for field in dataclasses.fields(RelativeChange))
#: The bases in the order of the codes ``_basis`` gives.
_BASES = np.array(["self", "module", "model", "none"], object)


def relative_changes_of(tensors: Iterable[TensorComparison]) -> dict[str, RelativeChange]:
    """``diffai.change.relative_changes``: its definitions, over columns."""
    # A list per column: one pass building a tuple a pair, then unzipped, cost 0.95 us a
    # pair at 100,000 pairs, a pass a field 0.6 us.
    kept = [
        t
        for t in tensors
        if (d := t.diff) is not None
        and t.baseline is not None
        and d.l2 is not None
        and d.baseline_l2 is not None
    ]
    if not kept:
        return {}
    diffs = [t.diff for t in kept]
    names, roles = [t.name for t in kept], [t.role for t in kept]
    counts = [t.baseline.elements for t in kept]  # type: ignore[union-attr]
    change_l2, baseline_l2 = [d.l2 for d in diffs], [d.baseline_l2 for d in diffs]  # type: ignore[union-attr]
    relative = [d.relative_l2 for d in diffs]  # type: ignore[union-attr]
    change, baseline = np.array(change_l2, np.float64), np.array(baseline_l2, np.float64)
    finite = np.isfinite(change) & np.isfinite(baseline)
    if not finite.all():
        if not finite.any():
            return {}
        kept = np.flatnonzero(finite).tolist()
        names, roles, counts, relative = (
            [column[i] for i in kept] for column in (names, roles, counts, relative)
        )
        change, baseline = change[finite], baseline[finite]
    role_ids = group_ids(roles)[1]
    modules = layer_groups(names)[1] * (role_ids.max() + 1) + role_ids  # (layer, role)
    elements = np.array(counts, np.float64)
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
    pairs = zip(values, _BASES[codes].tolist(), strict=True)
    # Built past the dataclass's __init__ (_kernel.frozen): 0.57 against 0.77 us a pair.
    built = [_kernel.frozen(RelativeChange, _FIELDS, pair) for pair in pairs]
    return dict(zip(names, built, strict=True))


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
