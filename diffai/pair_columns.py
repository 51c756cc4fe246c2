"""A comparison's pairs as columns, read once for every stage derived from them.

The relative changes, the layer records, convergence and gradient read the same fields
of every pair (its name, role, norms and elements). Each stage reading them again cost
~0.1 us a field and a pass at 100,000 pairs, and the layer grouping 1 us a name; here
they are read once a comparison (``Comparison.columns``, which owns them: nothing is
kept between comparisons), the measured pairs' fields as lists in model order. The
analyses read the pairs' statuses and statistics from here too, the first time one asks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from itertools import repeat
from operator import attrgetter, is_not
from typing import TYPE_CHECKING

import numpy as np

from diffai import _attributes, _columns
from diffai.layers import grouped_layers, squares
from diffai.roles import roles_of

if TYPE_CHECKING:
    from diffai.change_columns import RelativeColumns
    from diffai.comparison import Status, TensorComparison
    from diffai.roles import Role
    from diffai.stats import DiffStats, TensorStats

_NAME, _HINT, _DIFF = attrgetter("name"), attrgetter("role_hint"), attrgetter("diff")
_L2, _BASE_L2 = attrgetter("l2"), attrgetter("baseline_l2")


def all_given(objects: list[object]) -> bool:
    """Whether no entry is None, by identity: ``None in objects`` asks each dataclass's
    Python ``__eq__`` (1 us an object at 100,000 objects, this 0.03)."""
    return all(map(is_not, objects, repeat(None)))


@dataclass(frozen=True, eq=False)
class PairColumns:
    """Every pair's name, role and layer, and the measured pairs' (``diff.l2`` known)
    norms, in model order; ``rows`` are the measured pairs' positions among all."""

    tensors: list[TensorComparison]
    names: list[str]
    #: The readers' role hints (``TensorComparison.role_hint``) the roles come from.
    hints: list[Role | None]
    roles: list[Role]
    #: Each pair's layer's number among ``layers`` (``layers.layer_of``), first seen first.
    layer_ids: np.ndarray
    layers: list[str]
    rows: np.ndarray
    diffs: list[DiffStats]
    change_l2: list[float]
    baseline_l2: list[float | None]

    @classmethod
    def of(cls, tensors: Iterable[TensorComparison]) -> PairColumns:
        tensors = list(tensors)
        names = list(map(_NAME, tensors))
        layers, layer_ids = grouped_layers(names)
        hints = list(map(_HINT, tensors))
        roles = roles_of(names, hints)
        # Each pair keeps the value its TensorComparison.role would compute (a first read
        # cost 2.2 us a pair at 100,000 pairs; the report and analyses read it per pair).
        _columns.set_each(tensors, "role", roles)
        diffs = list(map(_DIFF, tensors))
        if all_given(diffs) and None not in (change := list(map(_L2, diffs))):
            rows = np.arange(len(tensors))  # every pair measured: the usual case
        else:
            rows = np.flatnonzero([d is not None and d.l2 is not None for d in diffs])
            diffs = [diffs[row] for row in rows.tolist()]
            change = list(map(_L2, diffs))
        return cls(
            tensors, names, hints, roles, layer_ids, layers, rows, diffs, change,
            list(map(_BASE_L2, diffs)),
        )  # fmt: skip

    @cached_property
    def hinted(self) -> bool:
        """Whether a reader gave some pair its role."""
        return self.hints.count(None) != len(self.hints)

    @cached_property
    def _states(self) -> tuple[list[Status], list[TensorStats | None], list[TensorStats | None]]:
        """Each pair's status and both sides' statistics, read in one pass
        (``diffai/_attributes.c``) when an analysis first asks: a pass over 100,000 pairs
        costs 15-30 ms whatever it reads, and anomaly and quantization need them."""
        return _attributes.objects(self.tensors, ("status", "baseline", "candidate"))

    @property
    def statuses(self) -> list[Status]:
        return self._states[0]

    @property
    def baselines(self) -> list[TensorStats | None]:
        return self._states[1]

    @property
    def candidates(self) -> list[TensorStats | None]:
        return self._states[2]

    @cached_property
    def measured(self) -> list[TensorComparison]:
        """The measured pairs themselves."""
        if len(self.rows) == len(self.tensors):
            return self.tensors
        return [self.tensors[row] for row in self.rows.tolist()]

    @cached_property
    def weight(self) -> np.ndarray:
        """Whether each pair's role is ``weight``."""
        if self.roles.count("weight") == len(self.roles):
            return np.ones(len(self.roles), bool)
        return np.array([role == "weight" for role in self.roles], bool)

    @cached_property
    def named_weights(self) -> bool:
        """Whether every pair is a weight by its name alone (no reader's hint)."""
        return not self.hinted and bool(self.weight.all())

    @cached_property
    def measured_weights(self) -> np.ndarray:
        """The positions among the measured pairs of the weights."""
        return np.flatnonzero(self.weight[self.rows])

    @cached_property
    def change_squares(self) -> list[float]:
        """‖c−b‖² of each measured pair, from Python's ``**`` (``layers.squares``)."""
        return squares(self.change_l2)

    @cached_property
    def size_squares(self) -> list[float]:
        """‖b‖² of each measured pair, 0 when unknown."""
        return squares([norm or 0.0 for norm in self.baseline_l2])

    def of_weights(self, column: list[float]) -> list[float]:
        """A measured pairs' column, its weights' entries only."""
        kept = self.measured_weights
        if len(kept) == len(column):
            return column
        return [column[position] for position in kept.tolist()]

    @cached_property
    def relative(self) -> RelativeColumns:
        """The relative changes (``diffai.change``) of the measured pairs, as columns."""
        # Imported here: diffai.change_columns builds on this module.
        from diffai.change_columns import relative_columns

        return relative_columns(self)
