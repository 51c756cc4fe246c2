"""The report's layer records, built from layer_impact's columns, are its LayerImpacts'
strict-JSON records."""

from __future__ import annotations

import dataclasses
import math
import random

from diffai.comparison import TensorComparison
from diffai.layers import LayerImpact, layer_impact, layer_records
from diffai.stats import DiffStats, TensorStats

NORMS = [0.0, 1.0, 3.5, 1e150, 1e200, math.inf, math.nan, None]


def _flat_record(layer: LayerImpact) -> dict[str, object]:
    """A LayerImpact as strict JSON: its fields in order, a non-finite relative change None."""
    record = dataclasses.asdict(layer)
    value = record["relative_l2"]
    record["relative_l2"] = value if value is None or math.isfinite(value) else None
    return record


def _tensor(chooser: random.Random, index: int) -> TensorComparison:
    name = f"blocks.{chooser.randrange(40)}.{chooser.choice(['attn', 'mlp', ''])}.w{index}"
    elements = chooser.choice([1, 64, 2**40])
    side = TensorStats((elements,), "f32", "f32", elements, 4 * elements,
                       None, None, None, None, 0, 0, 0)  # fmt: skip
    if chooser.random() < 0.1:
        return TensorComparison(name, "removed", side, None, None)
    l2, base_l2 = chooser.choice(NORMS), chooser.choice(NORMS)
    diff = DiffStats(None, None, l2, None, None, 1, 1.0, base_l2, None)
    return TensorComparison(name, chooser.choice(["changed", "unchanged"]), side, side, diff)


def test_layer_records_are_the_layers_strict_records() -> None:
    chooser = random.Random(16)
    tensors = [_tensor(chooser, i) for i in range(3000)]
    expected = [_flat_record(layer) for layer in layer_impact(tensors)]
    assert repr(layer_records(tensors)) == repr(expected)
    assert any(record["relative_l2"] is None for record in expected)


def test_one_tensor_layers_and_no_layers() -> None:
    chooser = random.Random(7)
    tensors = [_tensor(chooser, i) for i in range(200)]
    singles = [TensorComparison(f"m{i}.weight", t.status, t.baseline, t.candidate, t.diff)
               for i, t in enumerate(tensors)]  # fmt: skip
    expected = [_flat_record(layer) for layer in layer_impact(singles)]
    assert repr(layer_records(singles)) == repr(expected)
    assert layer_records([]) == []
