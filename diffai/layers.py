"""Per-layer aggregation (``--show-layer-impact``): tensors grouped by module prefix.

A layer's relative change is sqrt(sum ‖c−b‖²) / sqrt(sum ‖b‖²) over its
same-shaped tensors, i.e. the relative L2 change of the layer's weights taken
as one vector, so a big bias cannot hide behind a small weight or vice versa.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from diffai.comparison import TensorComparison
    from diffai.stats import DiffStats

ROOT_LAYER = "(root)"


@dataclass(frozen=True)
class LayerImpact:
    name: str
    tensors: int
    changed: int
    parameters: int
    relative_l2: float | None


def layer_of(tensor_name: str) -> str:
    """The module prefix: ``encoder.layer.0.attn.weight`` -> ``encoder.layer.0.attn``."""
    prefix, _, _ = tensor_name.rpartition(".")
    return prefix or ROOT_LAYER


def layers_of(tensor_names: Iterable[str]) -> list[str]:
    """``layer_of`` of each name, without a call per name (0.15 us a name, calls 0.4)."""
    return [name.rpartition(".")[0] or ROOT_LAYER for name in tensor_names]


def layer_impact(tensors: Iterable[TensorComparison]) -> list[LayerImpact]:
    """Layers in model order, each with its aggregated relative change.

    Summed as columns: a list and four generator sums per layer cost 9 us a tensor at
    100,000 one-tensor layers. ``np.bincount`` adds each layer's squares in model order,
    as ``sum`` did, and the squares stay Python's ``**`` (it differs from numpy's x*x in
    the last bit for about 1 float in 1,000), so no bit moves.
    """
    members = list(tensors)
    if not members:
        return []
    index: dict[str, int] = {}
    groups = [index.setdefault(layer_of(t.name), len(index)) for t in members]
    count = len(index)
    pairs = [(g, d) for g, t in zip(groups, members, strict=True) if _measured(d := t.diff)]
    measured = np.array([g for g, _ in pairs], np.intp)
    change = _root_sums(measured, [d.l2**2 for _, d in pairs], count)  # type: ignore[union-attr,operator]
    size = _root_sums(measured, [(d.baseline_l2 or 0.0) ** 2 for _, d in pairs], count)  # type: ignore[union-attr]
    parameters = np.zeros(count, np.int64)
    np.add.at(parameters, groups, [_parameters(t) for t in members])
    changed = [g for g, t in zip(groups, members, strict=True) if t.status != "unchanged"]
    ratios = (
        c / s if n and s else None
        for c, s, n in zip(
            change, size, np.bincount(measured, minlength=count).tolist(), strict=True
        )
    )
    return list(
        map(
            LayerImpact,
            index,
            np.bincount(groups, minlength=count).tolist(),
            np.bincount(np.array(changed, np.intp), minlength=count).tolist(),
            parameters.tolist(),
            ratios,
        )
    )


def _measured(diff: DiffStats | None) -> bool:
    return diff is not None and diff.l2 is not None


def _root_sums(groups: np.ndarray, squares: list[float], count: int) -> list[float]:
    """sqrt(Σ squares) per group, summed in order."""
    return np.sqrt(
        np.bincount(groups, weights=np.array(squares, np.float64), minlength=count)
    ).tolist()


def relative_change(tensors: Iterable[TensorComparison]) -> tuple[float, float, int]:
    """(sqrt(Σ‖c−b‖²), sqrt(Σ‖b‖²), pairs measured) over the same-shaped pairs."""
    diffs = [t.diff for t in tensors if t.diff is not None and t.diff.l2 is not None]
    change = math.sqrt(sum([d.l2**2 for d in diffs]))  # type: ignore[operator]
    size = math.sqrt(sum([(d.baseline_l2 or 0.0) ** 2 for d in diffs]))
    return change, size, len(diffs)


def _parameters(tensor: TensorComparison) -> int:
    side = tensor.candidate or tensor.baseline
    return side.elements if side else 0
