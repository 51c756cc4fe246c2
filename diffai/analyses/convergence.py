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
import statistics
from functools import lru_cache
from typing import Any

from diffai.analyses.common import weight_tensors
from diffai.change import RelativeChange, is_scrambled, may_be_scrambled
from diffai.comparison import Comparison, TensorComparison
from diffai.layers import relative_change

DIVERGING_UPDATE = 0.5
CONVERGED_UPDATE = 1e-3
UNSTABLE_SPREAD = 1.0


def analyze(comparison: Comparison) -> dict[str, Any]:
    paired = [
        t
        for t in weight_tensors(comparison)
        if t.diff is not None and t.diff.l2 is not None
    ]
    if not paired:
        return {"status": "unknown", "stability": None, "update_magnitude": None,
                "spread_decades": None, "tensors_measured": 0, "scrambled": []}  # fmt: skip
    changes = _weight_changes(comparison, paired)
    update = _update_magnitude(paired)
    spread = _spread(_own_relative(changes))
    scrambled = scrambled_weights(paired, changes)
    rest = _update_magnitude(_trained(paired, scrambled)) if scrambled else update
    return {
        "status": _status(rest, spread, _gained_non_finite(paired), bool(scrambled)),
        "stability": 1.0 / (1.0 + spread),
        "update_magnitude": update,
        "spread_decades": spread,
        "median_relative_change": _median(changes),
        "tensors_measured": len(paired),
        "scrambled": scrambled,
    }


def _weight_changes(
    comparison: Comparison, paired: list[TensorComparison]
) -> dict[str, RelativeChange]:
    """The relative changes of the measured weights: all of them when every tensor is a
    weight and every one was measured (the usual case; picking them out by name cost 1.4 us
    a tensor at 100,000 tensors). Their order does not matter: S and the median do not
    depend on it, and ``scrambled_weights`` looks them up by name."""
    measured = comparison.relative_changes
    if len(paired) == len(comparison.tensors) == len(measured):
        return measured
    return {
        t.name: change for t in paired if (change := measured.get(t.name)) is not None
    }


def scrambled_weights(
    paired: list[TensorComparison], changes: dict[str, RelativeChange]
) -> list[str]:
    """The weight matrices whose values were replaced rather than trained.

    Only shapes that may be scrambled are looked at, asked once a shape: the rule for
    each of 100,000 small tensors cost 2 us a tensor."""
    return [
        t.name
        for t in paired
        if t.baseline
        and _may_be_scrambled(t.baseline.shape)
        and t.diff
        and t.name in changes
        and is_scrambled(
            t.baseline.shape,
            t.diff.cosine,
            changes[t.name].value,
            changes[t.name].basis,
        )
    ]


#: ``may_be_scrambled`` once a shape (models hold a few hundred shapes at most).
_may_be_scrambled = lru_cache(maxsize=1024)(may_be_scrambled)


def _trained(
    paired: list[TensorComparison], scrambled: list[str]
) -> list[TensorComparison] | None:
    """The weights that were not scrambled, None when there are none."""
    replaced = set(scrambled)
    return [t for t in paired if t.name not in replaced] or None


def _update_magnitude(paired: list[TensorComparison] | None) -> float | None:
    """U over the weights (0 over none)."""
    if paired is None:
        return 0.0
    change, size, _ = relative_change(paired)
    if not size:
        return 0.0 if not change else math.inf
    return change / size


def _own_relative(changes: dict[str, RelativeChange]) -> list[float]:
    """rᵢ of the tensors measured against themselves: a bias a few steps from zero moves by
    many times its own size, which says nothing about how evenly training moves the weights."""
    return [c.value for c in changes.values() if c.basis == "self" and c.value]


def _spread(relative: list[float]) -> float:
    logs = [math.log10(r) for r in relative]
    return statistics.pstdev(logs) if len(logs) > 1 else 0.0


def _median(changes: dict[str, RelativeChange]) -> float | None:
    values = [c.value for c in changes.values() if c.value is not None]
    return statistics.median(values) if values else None


def _gained_non_finite(paired: list[TensorComparison]) -> bool:
    return any(
        (c.nan + c.inf) > (b.nan + b.inf)
        for t in paired
        if (c := t.candidate) is not None and (b := t.baseline) is not None
    )


def _status(
    update: float | None, spread: float, non_finite: bool, scrambled: bool
) -> str:
    if non_finite or (update is not None and update > DIVERGING_UPDATE):
        return "diverging"
    if scrambled:
        return "disrupted"
    if update is not None and update < CONVERGED_UPDATE:
        return "converged"
    return "unstable" if spread > UNSTABLE_SPREAD else "converging"
