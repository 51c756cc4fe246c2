"""Helpers every analysis shares: float dtypes, severities, safe ratios."""

from __future__ import annotations

import math
from collections.abc import Iterable

from diffai.stats import TensorStats

SEVERITIES = ("none", "low", "medium", "high", "critical")
FLOAT_DTYPES = frozenset({"f64", "f32", "f16", "bf16", "f8_e4m3", "f8_e5m2"})


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
