"""LoRA / PEFT adapters as models: their updates ΔW = s·B·A compared, sized against a base
model, and merges verified (docs/analyses.md, "Adapters").

``prepare`` is the one entry: given the two models of a run and the optional base model
and adapter, it returns the models to compare and the report's ``adapter`` section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffai.errors import UsageError
from diffai.model import Model

PathLike = str | Path


def open_models(
    baseline: PathLike,
    candidate: PathLike,
    format: str | None = None,
    base: PathLike | None = None,
    adapter: PathLike | None = None,
    sharded: bool = False,
) -> tuple[Model, Model, dict[str, Any] | None]:
    """Open a run's models (and base model and adapter), then ``prepare`` them."""
    from diffai.formats import open_model
    from diffai.formats import open_models as open_pair

    opened = open_pair(baseline, candidate, format)
    extra = [open_model(path) if path else None for path in (base, adapter)]
    found = prepare(*opened, *extra)
    if found[2] is not None and sharded:
        # diffai merge rebuilds reports from tensors alone: the adapter section would be lost.
        raise UsageError("--shard does not split an adapter comparison; run it whole")
    return found


def prepare(
    baseline: Model, candidate: Model, base: Model | None = None, adapter: Model | None = None
) -> tuple[Model, Model, dict[str, Any] | None]:
    """Adapter vs adapter: their ΔW; base vs adapter: base vs base + ΔW; with ``adapter``
    (base vs merged): the models as they are, and the merge verified."""
    from diffai.adapters.reader import is_adapter

    kinds = (is_adapter(baseline), is_adapter(candidate))
    if adapter is None and kinds == (False, False):  # two plain models: the common case
        _require(base is None, BASE_USAGE)
        return baseline, candidate, None
    return _with_adapters(baseline, candidate, base, adapter, kinds)


def _with_adapters(
    baseline: Model,
    candidate: Model,
    base: Model | None,
    adapter: Model | None,
    kinds: tuple[bool, bool],
) -> tuple[Model, Model, dict[str, Any] | None]:
    """``prepare`` when an adapter takes part: only then are the ΔW modules imported."""
    from diffai.adapters import merge, models, section
    from diffai.adapters.reader import is_adapter

    if adapter is not None:
        _require(not any(kinds) and base is None and is_adapter(adapter), MERGE_USAGE)
        return baseline, candidate, merge.merge_verification(baseline, candidate, adapter)
    if kinds == (True, True):
        found = section.adapter_vs_adapter(baseline, candidate, base)  # type: ignore[arg-type]
        return models.delta_model(baseline), models.delta_model(candidate), found  # type: ignore[arg-type]
    _require(base is None, BASE_USAGE)
    _require(kinds != (True, False), ORDER_USAGE)
    found = section.base_and_adapter(baseline, candidate)  # type: ignore[arg-type]
    return baseline, models.applied_model(baseline, candidate), found  # type: ignore[arg-type]


MERGE_USAGE = (
    "--adapter takes a PEFT adapter folder and two plain models: diffai BASE MERGED "
    "--adapter ADAPTER_DIR (and no --base)"
)
BASE_USAGE = "--base sizes two adapters' updates: diffai ADAPTER_1 ADAPTER_2 --base BASE_MODEL"
ORDER_USAGE = "a base model and an adapter compare as: diffai BASE_MODEL ADAPTER_DIR"


def _require(condition: bool, usage: str) -> None:
    if not condition:
        raise UsageError(usage)
