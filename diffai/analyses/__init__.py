"""Analyses: pure functions of a comparison, one module each, registered in ``ANALYSES``.

Each returns a JSON-ready dict measured from the tensors; docs/analyses.md
gives every formula and threshold. The report calls them in this order, which
is also the order of the text output's analysis lines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diffai.analyses import (
    anomaly,
    architecture,
    convergence,
    gradient,
    memory,
    quantization,
    training,
)
from diffai.comparison import Comparison

Analysis = Callable[[Comparison], dict[str, Any]]

ANALYSES: dict[str, Analysis] = {
    "anomaly_detection": anomaly.analyze,
    "architecture_comparison": architecture.analyze,
    "convergence_analysis": convergence.analyze,
    "gradient_analysis": gradient.analyze,
    "memory_analysis": memory.analyze,
    "quantization_analysis": quantization.analyze,
    "training_progress": training.analyze,
}


def run_analyses(comparison: Comparison) -> dict[str, dict[str, Any]]:
    """Every analysis; the columns they share are the comparison's and its models', read once
    (``Comparison.columns``, ``Model.columns``)."""
    return {key: analysis(comparison) for key, analysis in ANALYSES.items()}
