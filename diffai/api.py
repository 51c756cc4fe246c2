"""The library entry point: ``diffai.compare(baseline, candidate, ...) -> Report``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from diffai.compare import CompareOptions, compare_models
from diffai.errors import UsageError
from diffai.formats import open_model
from diffai.report import Report
from diffai.stats import ProgressCallback


def compare(
    baseline: str | Path,
    candidate: str | Path,
    *,
    epsilon: float = 0.0,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    format: str | None = None,
    workers: int | None = None,
    on_bytes: ProgressCallback | None = None,
) -> Report:
    """Compare two model artifacts (files or folders, any supported format) tensor by tensor.

    ``epsilon`` is the absolute difference above which an element counts as
    changed; ``include``/``exclude`` are glob patterns on tensor and scalar
    names; ``on_bytes`` is called with byte counts as tensors are read.
    Raises ``DiffaiError`` subclasses for anything wrong with the inputs.
    """
    options = compare_options(epsilon, include, exclude, workers)
    base_model = open_model(baseline, format)
    cand_model = open_model(candidate, format)
    return Report(compare_models(base_model, cand_model, options, on_bytes))


def compare_options(
    epsilon: float, include: Sequence[str], exclude: Sequence[str], workers: int | None
) -> CompareOptions:
    if not epsilon >= 0.0:
        raise UsageError(f"epsilon must be a non-negative number, got {epsilon}")
    if workers is not None and workers < 1:
        raise UsageError(f"workers must be at least 1, got {workers}")
    return CompareOptions(epsilon, tuple(include), tuple(exclude), workers)
