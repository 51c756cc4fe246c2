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

if TYPE_CHECKING:
    from diffai.comparison import TensorComparison

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


def layer_impact(tensors: Iterable[TensorComparison]) -> list[LayerImpact]:
    """Layers in model order, each with its aggregated relative change."""
    groups: dict[str, list[TensorComparison]] = {}
    for tensor in tensors:
        groups.setdefault(layer_of(tensor.name), []).append(tensor)
    return [_aggregate(name, members) for name, members in groups.items()]


def _aggregate(name: str, members: list[TensorComparison]) -> LayerImpact:
    change, size, measured = relative_change(members)
    return LayerImpact(
        name=name,
        tensors=len(members),
        changed=sum(1 for t in members if t.status != "unchanged"),
        parameters=sum(_parameters(t) for t in members),
        relative_l2=change / size if measured and size else None,
    )


def relative_change(tensors: Iterable[TensorComparison]) -> tuple[float, float, int]:
    """(sqrt(Σ‖c−b‖²), sqrt(Σ‖b‖²), pairs measured) over the same-shaped pairs."""
    diffs = [t.diff for t in tensors if t.diff is not None and t.diff.l2 is not None]
    change = math.sqrt(sum(d.l2**2 for d in diffs))  # type: ignore[operator]
    size = math.sqrt(sum((d.baseline_l2 or 0.0) ** 2 for d in diffs))
    return change, size, len(diffs)


def _parameters(tensor: TensorComparison) -> int:
    side = tensor.candidate or tensor.baseline
    return side.elements if side else 0
