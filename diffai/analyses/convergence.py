"""convergence_analysis: is training settling between these two checkpoints?

From the per-tensor relative updates rᵢ = ‖cᵢ−bᵢ‖/‖bᵢ‖ of the weights:
- update magnitude U = sqrt(Σ‖cᵢ−bᵢ‖²) / sqrt(Σ‖bᵢ‖²), the model-wide relative step;
- spread S = standard deviation of log10(rᵢ) over the tensors that moved and are measured
  against themselves (``diffai.change``: not a bias a few steps from zero), in decades;
- stability = 1 / (1 + S): 1 when every tensor moves by the same fraction.
Status, first rule that holds, where U is taken over the weights that were not
scrambled (``diffai.change.is_scrambled``): ``diverging`` (NaN/Inf gained, or
U > 0.5: the step rivals the weights), ``disrupted`` (a weight matrix was
replaced or scrambled: no training step does that), ``converged`` (U < 1e-3),
``unstable`` (S > 1: updates differ by more than a decade), else ``converging``.
The reported ``update_magnitude`` is U over all the weights.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from diffai.change import SCRAMBLED_COSINE, RelativeChange, is_scrambled, may_be_scrambled
from diffai.comparison import Comparison, TensorComparison
from diffai.pair_columns import PairColumns

DIVERGING_UPDATE = 0.5
CONVERGED_UPDATE = 1e-3
UNSTABLE_SPREAD = 1.0
#: The bits of the integer root ``population_stdev`` rounds from (2 * 53 + 3, as statistics).
_ROOT_BITS = 2 * 53 + 3


def analyze(comparison: Comparison) -> dict[str, Any]:
    columns = comparison.columns
    positions = columns.measured_weights  # the measured weights among the measured pairs
    if not len(positions):
        return {"status": "unknown", "stability": None, "update_magnitude": None,
                "spread_decades": None, "tensors_measured": 0, "scrambled": []}  # fmt: skip
    paired = columns.measured
    if len(positions) != len(paired):
        paired = [paired[p] for p in positions.tolist()]
    changes = _WeightChanges.of(columns)
    change_squares = columns.of_weights(columns.change_squares)
    size_squares = columns.of_weights(columns.size_squares)
    update = _update_magnitude(change_squares, size_squares)
    spread = _spread(changes.own_relative())
    scrambled = changes.scrambled()
    rest = (
        _update_magnitude(*_trained(paired, scrambled, change_squares, size_squares))
        if scrambled
        else update
    )
    return {
        "status": _status(rest, spread, _gained_non_finite(paired), bool(scrambled)),
        "stability": 1.0 / (1.0 + spread),
        "update_magnitude": update,
        "spread_decades": spread,
        "median_relative_change": _median_of(changes.values),
        "tensors_measured": len(paired),
        "scrambled": scrambled,
    }


@dataclass(frozen=True)
class _WeightChanges:
    """The relative changes of the measured weights, as columns in model order: read
    from the comparison's (picking them out by name cost 1.4 us a tensor at 100,000)."""

    columns: PairColumns
    #: Positions among ``columns.relative``'s entries.
    kept: np.ndarray
    values: list[float | None]

    @classmethod
    def of(cls, columns: PairColumns) -> _WeightChanges:
        relative = columns.relative
        weight = columns.weight[columns.rows[relative.kept]]
        if weight.all():
            return cls(columns, np.arange(len(relative.values)), relative.values)
        kept = np.flatnonzero(weight)
        return cls(columns, kept, [relative.values[p] for p in kept.tolist()])

    def _own(self) -> np.ndarray:
        """Which of ``kept`` are measured against themselves."""
        return self.columns.relative.codes[self.kept] == 0

    def own_relative(self) -> list[float]:
        """rᵢ of the tensors measured against themselves: a bias a few steps from zero moves
        by many times its own size, which says nothing about how evenly training moves the
        weights."""
        own = self._own()
        if own.all():
            return [value for value in self.values if value]
        values = map(self.values.__getitem__, np.flatnonzero(own).tolist())
        return [value for value in values if value]

    def scrambled(self) -> list[str]:
        """The weight matrices whose values were replaced rather than trained.

        Only the pairs measured against themselves whose cosine is unknown or below
        ``SCRAMBLED_COSINE`` are looked at (the rule for each of 100,000 small tensors
        cost 2 us a tensor); shapes are asked once a shape."""
        columns, relative = self.columns, self.columns.relative
        measured = relative.kept[self.kept]  # positions among the measured pairs
        cosine = np.array([columns.diffs[p].cosine for p in measured.tolist()], np.float64)
        maybe = self._own() & ~(cosine >= SCRAMBLED_COSINE)  # a None cosine is NaN here
        found = []
        for entry in np.flatnonzero(maybe).tolist():
            t = columns.measured[measured[entry]]
            if (
                t.baseline
                and _may_be_scrambled(t.baseline.shape)
                and t.diff
                and is_scrambled(t.baseline.shape, t.diff.cosine, self.values[entry], "self")
            ):
                found.append(t.name)
        return found


#: ``may_be_scrambled`` once a shape (models hold a few hundred shapes at most).
_may_be_scrambled = lru_cache(maxsize=1024)(may_be_scrambled)


def _trained(
    paired: list[TensorComparison], scrambled: list[str], *columns: list[float]
) -> list[list[float]]:
    """Each column's entries for the weights that were not scrambled, in model order."""
    replaced = set(scrambled)
    kept = [row for row, t in enumerate(paired) if t.name not in replaced]
    return [[column[row] for row in kept] for column in columns]


def _update_magnitude(change_squares: list[float], size_squares: list[float]) -> float:
    """U = sqrt(Σ‖c−b‖²) / sqrt(Σ‖b‖²) over the weights (0 over none or no change)."""
    change, size = math.sqrt(sum(change_squares)), math.sqrt(sum(size_squares))
    if not size:
        return 0.0 if not change else math.inf
    return change / size


def _spread(relative: list[float]) -> float:
    return population_stdev(list(map(math.log10, relative))) if len(relative) > 1 else 0.0


def population_stdev(values: list[float]) -> float:
    """``statistics.pstdev(values)`` bit for bit, in 0.3 us a value instead of 2 us.

    pstdev takes the variance exactly, as fractions, and rounds its square root once.
    Here the exact sums are Python integers: every value times one power of two 2**shift
    is an integer (a float is m·2**e with m of 53 bits), so the variance is
    (n·ΣX² − (ΣX)²) / (n²·4**shift), the same fraction, and its root is rounded as pstdev
    rounds it. Values whose scaled form would pass the float range (or are not finite)
    are left to pstdev."""
    data = np.array(values, np.float64)
    exponents = np.frexp(data)[1]
    shift = int((53 - exponents).max())
    if not np.isfinite(data).all() or int(exponents.max()) + shift > 1023:
        import statistics  # here: with fractions and decimal, 5 ms of every run's start

        return statistics.pstdev(values)
    scaled = list(map(int, np.ldexp(data, shift).tolist()))
    count, total = len(scaled), sum(scaled)
    numerator = count * sum(map(operator.mul, scaled, scaled)) - total * total
    denominator = count * count
    if shift >= 0:
        denominator <<= 2 * shift
    else:
        numerator <<= -2 * shift
    common = math.gcd(numerator, denominator)  # in lowest terms, as Fraction puts them
    return _rounded_root(numerator // common, denominator // common)


def _rounded_root(numerator: int, denominator: int) -> float:
    """sqrt(numerator / denominator) correctly rounded, as CPython's statistics rounds it
    (``_float_sqrt_of_frac``, https://bugs.python.org/msg407078): an integer root of
    2·53 + 3 bits rounded to odd, then one correctly rounded division."""
    q = (numerator.bit_length() - denominator.bit_length() - _ROOT_BITS) // 2
    if q >= 0:
        return float(_root_to_odd(numerator, denominator << 2 * q) << q)
    return _root_to_odd(numerator << -2 * q, denominator) / (1 << -q)


def _root_to_odd(numerator: int, denominator: int) -> int:
    """isqrt(numerator / denominator), its last bit set when the root is not exact."""
    root = math.isqrt(numerator // denominator)
    return root | (root * root * denominator != numerator)


def _median(changes: dict[str, RelativeChange]) -> float | None:
    """``statistics.median`` of the known values of ``changes``."""
    return _median_of([change.value for change in changes.values()])


def _median_of(values: list[float | None]) -> float | None:
    """``statistics.median`` of the known values, sorted by numpy: a stable sort of the
    finite floats orders them as ``sorted`` does (0.2 -> 0.06 us a value)."""
    data = np.array([value for value in values if value is not None], np.float64)
    if not data.size or not np.isfinite(data).all():
        import statistics

        return statistics.median(data.tolist()) if data.size else None
    middle, ordered = data.size // 2, np.sort(data, kind="stable").tolist()
    return ordered[middle] if data.size % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _gained_non_finite(paired: list[TensorComparison]) -> bool:
    """Whether a candidate holds more NaN and inf than its baseline; only the candidates
    that hold some are compared (counts are never negative: report.schema.json)."""
    return any(
        (c.nan + c.inf) > (b.nan + b.inf)
        for t in paired
        if (c := t.candidate) is not None and (c.nan or c.inf) and (b := t.baseline) is not None
    )


def _status(update: float, spread: float, non_finite: bool, scrambled: bool) -> str:
    if non_finite or update > DIVERGING_UPDATE:
        return "diverging"
    if scrambled:
        return "disrupted"
    if update < CONVERGED_UPDATE:
        return "converged"
    return "unstable" if spread > UNSTABLE_SPREAD else "converging"
