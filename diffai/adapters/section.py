"""The report's ``adapter`` section, in one of three modes (docs/analyses.md, "Adapters").

- ``adapter_vs_adapter``: per module, ΔW₁ against ΔW₂ in closed form (norms, mean,
  std, inner product, cosine, ‖ΔW₂ − ΔW₁‖); with ``--base``, each ΔW's size against
  the base weight it updates, per module and per depth;
- ``base_and_adapter``: one adapter's ΔW against its base weights;
- ``merge_verification``: a merged model against base + adapter (``diffai.adapters.merge``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from diffai.adapters.factors import LoraModule, difference_norm, frobenius, inner_product, moments
from diffai.adapters.folder import Adapter, AdapterModel, adapter_of
from diffai.adapters.models import base_weight
from diffai.components import placement
from diffai.model import Model, TensorRef

#: What each figure is computed from; nothing is sampled.
EXACTNESS = {
    "closed_form": ["norm", "mean", "std", "inner", "cosine", "l2", "relative_l2"],
    "streamed": ["the tensors section: ΔW streamed in row blocks, every element"],
    "sampled": [],
}


def adapter_vs_adapter(
    baseline: AdapterModel, candidate: AdapterModel, base: Model | None
) -> dict[str, Any]:
    first, second = adapter_of(baseline), adapter_of(candidate)
    names = list(first.modules) + [n for n in second.modules if n not in first.modules]
    records = [_pair(first.modules.get(n), second.modules.get(n), base, first) for n in names]
    return _section("adapter_vs_adapter", first, second, records, base)


def base_and_adapter(base: Model, candidate: AdapterModel) -> dict[str, Any]:
    adapter = adapter_of(candidate)
    records = [_pair(None, module, base, adapter) for module in adapter.modules.values()]
    return _section("base_and_adapter", None, adapter, records, base)


def _section(
    mode: str, first: Adapter | None, second: Adapter | None, records: list[dict[str, Any]],
    base: Model | None,
) -> dict[str, Any]:  # fmt: skip
    return {
        "mode": mode,
        "configs": {"baseline": config_record(first), "candidate": config_record(second)},
        "base": base.path if base is not None else None,
        "modules": records,
        "saved_modules": _saved(first, second),
        "depth": _depth(records) if base is not None else [],
        "exactness": EXACTNESS,
    }


def config_record(adapter: Adapter | None) -> dict[str, Any] | None:
    if adapter is None:
        return None
    return {"path": adapter.path, **adapter.config.summary(), "modules": len(adapter.modules)}


def _saved(*adapters: Adapter | None) -> list[str]:
    """modules_to_save tensors: compared whole in the tensors section, never as ΔW."""
    names = [name for adapter in adapters if adapter for name in adapter.saved]
    return list(dict.fromkeys(names))


def _pair(
    first: LoraModule | None, second: LoraModule | None, base: Model | None, owner: Adapter
) -> dict[str, Any]:
    known = first or second
    assert known is not None
    base_norm = _base_norm(base, owner, known) if base is not None else None
    sides = _side(first, base_norm), _side(second, base_norm)
    record: dict[str, Any] = {
        "module": known.module,
        "weight": known.weight_name,
        "status": "both" if first and second else ("removed" if first else "added"),
        "base_norm": base_norm,
        "baseline": sides[0],
        "candidate": sides[1],
    }
    if first is None or second is None or sides[0] is None or sides[1] is None:
        return {**record, "inner": None, "cosine": None, "l2": None, "relative_l2": None}
    return {**record, **_between(first, second, sides[0]["norm"], sides[1]["norm"])}


def _side(module: LoraModule | None, base_norm: float | None) -> dict[str, Any] | None:
    if module is None:
        return None
    norm = frobenius(module)
    mean, std = moments(module, norm)
    return {
        "rank": module.rank,
        "alpha": module.alpha,
        "scale": module.scale,
        "shape": list(module.shape),
        "norm": norm,
        "mean": mean,
        "std": std,
        "relative_size": norm / base_norm if base_norm else None,
    }


def _between(
    first: LoraModule, second: LoraModule, first_norm: float, second_norm: float
) -> dict[str, Any]:
    inner = inner_product(first, second)
    norms = first_norm * second_norm
    l2 = difference_norm(first, second)
    return {
        "inner": inner,
        "cosine": max(-1.0, min(1.0, inner / norms)) if norms else None,
        "l2": l2,
        "relative_l2": l2 / first_norm if first_norm else None,
    }


def _base_norm(base: Model, adapter: Adapter, module: LoraModule) -> float:
    return tensor_norm(base_weight(base, adapter, module.weight_name, module.shape))


def tensor_norm(ref: TensorRef) -> float:
    """‖W‖_F, summed in float64 chunk by chunk."""
    total = 0.0
    for chunk in ref.chunks():
        values = np.asarray(chunk, dtype=np.float64)
        total += float(values @ values)
    return math.sqrt(total)


def _depth(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per block of the stack: √Σ‖ΔW‖² / √Σ‖W‖² over its modules, for each side."""
    groups: dict[tuple[str | None, int | None], list[dict[str, Any]]] = {}
    for record in records:
        where = placement(record["weight"])
        groups.setdefault((where.stack, where.block), []).append(record)
    return [_depth_row(stack, block, members) for (stack, block), members in groups.items()]


def _depth_row(
    stack: str | None, block: int | None, members: list[dict[str, Any]]
) -> dict[str, Any]:
    base = math.sqrt(sum((m["base_norm"] or 0.0) ** 2 for m in members))
    row: dict[str, Any] = {"stack": stack, "block": block, "modules": len(members)}
    for side in ("baseline", "candidate"):
        norms = [m[side]["norm"] for m in members if m[side] is not None]
        size = math.sqrt(sum(n * n for n in norms)) if norms else None
        row[f"relative_size_{side}"] = size / base if size is not None and base else None
    return row
