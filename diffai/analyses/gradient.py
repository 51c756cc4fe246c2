"""gradient_analysis: is the update reaching every depth of the network?

Without gradients on disk, the weight update Δ = c − b between two checkpoints
is the gradient proxy (for SGD-like optimizers Δ is the sum of the steps
taken). Per repeated block k (``layer.k``), rₖ = ‖Δₖ‖/‖bₖ‖. ``flow_health``:
``exploding`` when some block's update exceeds its weights (rₖ > 1),
``vanishing`` when the first third of the blocks moves less than 1% as much as
the last third, ``no_update`` when nothing moved, else ``healthy``. ``norm`` is
the model-wide ‖Δ‖₂.

When both checkpoints carry Adam state, the candidate's first moments
(``exp_avg``, an average of recent gradients) are real gradient measurements:
then ``norm`` is ‖exp_avg‖₂, the depth profile uses each parameter's RMS
first moment, ``exploding`` also means ‖exp_avg‖ grew more than tenfold, and
``source`` says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from diffai import _columns
from diffai.comparison import Comparison, TensorComparison
from diffai.layers import squares
from diffai.pair_columns import PairColumns

EXPLODING_UPDATE = 1.0
EXPLODING_MOMENT_GROWTH = 10.0  # ‖exp_avg‖ grew tenfold between the checkpoints
VANISHING_RATIO = 0.01
MIN_BLOCKS = 3
#: A repeated block's index in a name (``layers.3.attn.weight``): what diffai/_columns.c's
#: ``block_indices`` finds, as ``re.search`` with it would.
BLOCK = r"\.(\d+)(?:\.|$)"


def analyze(comparison: Comparison) -> dict[str, Any]:
    moments = _moment_pairs(comparison, "exp_avg")
    if moments:
        return _from_optimizer_state(moments, _moment_pairs(comparison, "exp_avg_sq"))
    return _from_weight_update(comparison.columns)


def _from_weight_update(columns: PairColumns) -> dict[str, Any]:
    """From the measured weights' norms, which the comparison's columns hold."""
    rows = columns.rows[columns.measured_weights]
    names = (
        columns.names
        if len(rows) == len(columns.names)
        else [columns.names[row] for row in rows.tolist()]
    )
    change_squares = columns.of_weights(columns.change_squares)
    size_squares = columns.of_weights(columns.size_squares)
    change, size = math.sqrt(sum(change_squares)), math.sqrt(sum(size_squares))
    indices, sums = _block_sums(names, change_squares, size_squares)
    blocks = [
        (index, _relative(math.sqrt(c), math.sqrt(s)))
        for index, c, s in zip(indices, *sums, strict=True)
        if s
    ]
    return {
        "flow_health": _health(len(names), change, blocks, EXPLODING_UPDATE),
        "norm": change if names else None,
        "source": "weight_update",
        "relative_update": _relative(change, size),
        **_profile(blocks),
    }


def _from_optimizer_state(
    moments: list[TensorComparison], second: list[TensorComparison]
) -> dict[str, Any]:
    moment_squares = squares([t.diff.candidate_l2 for t in moments])  # type: ignore[union-attr,misc]
    norm = math.sqrt(sum(moment_squares))
    before = math.sqrt(sum(squares([t.diff.baseline_l2 for t in moments])))  # type: ignore[union-attr,misc]
    elements = [t.candidate.elements if t.candidate else 0 for t in moments]
    indices, (totals, sums) = _block_sums([t.name for t in moments], elements, moment_squares)
    blocks = [
        (index, math.sqrt(s / int(total)))
        for index, total, s in zip(indices, totals, sums, strict=True)
        if total
    ]
    growth = norm / before if before else None
    return {
        "flow_health": _health(len(moments), norm, blocks, math.inf, growth),
        "norm": norm,
        "source": "optimizer_state (Adam exp_avg)",
        "norm_baseline": before,
        "gradient_rms": _gradient_rms(second),
        **_profile(blocks),
    }


def _moment_pairs(comparison: Comparison, leaf: str) -> list[TensorComparison]:
    if comparison.columns.named_weights:  # a moment's name is optimizer_state's (diffai.roles)
        return []
    tensors, names = comparison.tensors, comparison.columns.names
    return [
        t
        # endswith first: the exact test on every name cost 0.2 us a tensor
        for row in [row for row, name in enumerate(names) if name.endswith(leaf)]
        if (t := tensors[row]).name.rpartition(".")[2] == leaf
        and t.diff
        and t.diff.candidate_l2 is not None
    ]


def _gradient_rms(second: list[TensorComparison]) -> float | None:
    """sqrt of the mean of exp_avg_sq: the RMS gradient Adam has seen (bias-uncorrected)."""
    sides = [t.candidate for t in second if t.candidate and t.candidate.mean is not None]
    total = sum(s.elements for s in sides)
    return math.sqrt(sum(s.mean * s.elements for s in sides) / total) if total else None  # type: ignore[operator]


def _block_sums(names: list[str], *columns: Sequence[float]) -> tuple[list[int], list[list[float]]]:
    """The repeated blocks' indices in depth order, and each column summed per block.

    A name's block is where ``BLOCK`` first matches it (``_columns.block_indices``: the
    search cost 1 us a name at 100,000 names, the C scan 0.05). ``np.bincount`` adds each
    block's values in model order, as a sum over the block's tensors did: a list of
    tensors per block and two sums each cost 5 us a tensor at 100,000 tensors."""
    rows, found = _columns.block_indices(names)
    indices = sorted(set(found))
    number = {index: n for n, index in enumerate(indices)}
    groups = np.array([number[index] for index in found], np.intp)
    picked = np.array(rows, np.intp)
    return indices, [
        np.bincount(groups, np.asarray(column, np.float64)[picked], len(indices)).tolist()
        for column in columns
    ]


def _profile(blocks: list[tuple[int, float]]) -> dict[str, Any]:
    if not blocks:
        return {"blocks": 0, "early_late_ratio": None, "max_block": None}
    index, value = max(blocks, key=lambda block: block[1])
    return {
        "blocks": len(blocks),
        "early_late_ratio": _early_late_ratio(blocks),
        "max_block": {"index": index, "value": value},
    }


def _early_late_ratio(blocks: list[tuple[int, float]]) -> float | None:
    if len(blocks) < MIN_BLOCKS:
        return None
    third = len(blocks) // 3
    early = sum(v for _, v in blocks[:third]) / third
    late = sum(v for _, v in blocks[-third:]) / third
    return early / late if late else None


def _health(
    measured: int,
    norm: float,
    blocks: list[tuple[int, float]],
    exploding_at: float,
    growth: float | None = None,
) -> str:
    if not measured:
        return "unknown"
    if norm == 0:
        return "no_update"
    if any(value > exploding_at for _, value in blocks) or (growth or 0) > EXPLODING_MOMENT_GROWTH:
        return "exploding"
    ratio = _early_late_ratio(blocks)
    return "vanishing" if ratio is not None and ratio < VANISHING_RATIO else "healthy"


def _relative(change: float, size: float) -> float | None:
    return change / size if size else None
