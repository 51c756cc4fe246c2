"""layer_impact's column sums equal the per-layer definition bit for bit."""

from __future__ import annotations

import math
import random

from diffai.comparison import TensorComparison
from diffai.layers import LayerImpact, layer_impact, layer_of
from diffai.stats import DiffStats, TensorStats


def _tensor(chooser: random.Random, index: int) -> TensorComparison:
    name = f"layers.{chooser.randrange(30)}.{chooser.choice(['attn', 'mlp', ''])}.w{index}"
    elements = chooser.choice([1, 6, 4096, 2**40])
    side = TensorStats((elements,), "f32", "f32", elements, 4 * elements,
                       None, None, None, None, 0, 0, 0)  # fmt: skip
    kind = chooser.random()
    if kind < 0.1:  # added: no baseline, no difference
        return TensorComparison(name, "added", None, side, None)
    l2 = None if kind < 0.2 else _norm(chooser)
    base_l2 = None if chooser.random() < 0.1 else _norm(chooser)
    diff = DiffStats(None, None, l2, None, None, 1, 1.0, base_l2, None)
    return TensorComparison(name, chooser.choice(["changed", "unchanged"]), side, side, diff)


def _norm(chooser: random.Random) -> float:
    """Mostly ordinary norms, some zero, a few so large the others vanish beside them."""
    return chooser.choice([0.0] * 10 + [1e150] + [chooser.random() * 10] * 189)


def _by_the_definition(tensors: list[TensorComparison]) -> list[LayerImpact]:
    groups: dict[str, list[TensorComparison]] = {}
    for tensor in tensors:
        groups.setdefault(layer_of(tensor.name), []).append(tensor)
    layers = []
    for name, members in groups.items():
        diffs = [t.diff for t in members if t.diff is not None and t.diff.l2 is not None]
        change = math.sqrt(sum(d.l2**2 for d in diffs))  # type: ignore[operator]
        size = math.sqrt(sum((d.baseline_l2 or 0.0) ** 2 for d in diffs))
        sides = [t.candidate or t.baseline for t in members]
        layers.append(LayerImpact(
            name, len(members), sum(1 for t in members if t.status != "unchanged"),
            sum(side.elements for side in sides if side), change / size if diffs and size else None,
        ))  # fmt: skip
    return layers


def test_layer_sums_give_the_definitions_numbers_bit_for_bit() -> None:
    chooser = random.Random(16)
    tensors = [_tensor(chooser, i) for i in range(5000)]
    nan = DiffStats(None, None, math.nan, None, None, 1, 1.0, 1.0, None)
    tensors.append(TensorComparison("broken.weight", "changed", None, None, nan))
    chooser.shuffle(tensors)  # a layer's tensors need not be next to each other
    got, expected = layer_impact(tensors), _by_the_definition(tensors)
    assert [repr(vars(layer)) for layer in got] == [repr(vars(layer)) for layer in expected]
    assert all(type(layer.parameters) is int for layer in got)


def test_no_tensors_no_layers() -> None:
    assert layer_impact([]) == []
