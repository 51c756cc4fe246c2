"""Helpers every analysis shares: which tensors are weights, severities, safe ratios."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from diffai.comparison import Comparison, TensorComparison
from diffai.stats import TensorStats

SEVERITIES = ("none", "low", "medium", "high", "critical")
FLOAT_DTYPES = frozenset({"f64", "f32", "f16", "bf16", "f8_e4m3", "f8_e5m2"})

#: Optimizer moments and counters saved beside the weights in training checkpoints.
_OPTIMIZER_LEAVES = frozenset(
    {"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "step"}
)
_OPTIMIZER_SEGMENT = re.compile(r"(^|\.)optim(izer)?[^.]*\.")


def is_optimizer_state(name: str) -> bool:
    return bool(_OPTIMIZER_SEGMENT.search(name)) or name.rpartition(".")[2] in _OPTIMIZER_LEAVES


def weight_tensors(comparison: Comparison) -> list[TensorComparison]:
    """The model's own tensors: everything but optimizer state."""
    return [t for t in comparison.tensors if not is_optimizer_state(t.name)]


def is_float(stats: TensorStats | None) -> bool:
    return stats is not None and stats.dtype in FLOAT_DTYPES


def max_abs(stats: TensorStats) -> float | None:
    if stats.min is None or stats.max is None:
        return None
    return max(abs(stats.min), abs(stats.max))


def worst_severity(severities: Iterable[str]) -> str:
    return max(severities, key=SEVERITIES.index, default="none")


def norm_of(values: Iterable[float | None]) -> float:
    """sqrt(Σ vᵢ²): the L2 norm of tensors taken as one vector, from their per-tensor norms."""
    return math.sqrt(sum(v * v for v in values if v is not None))


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None
