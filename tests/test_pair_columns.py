"""The comparison's shared columns give every derived stage the figures it gives for the
weights alone: buffers, counters and unmeasured pairs among them change nothing."""

from __future__ import annotations

import math
import random

from diffai.analyses import convergence, gradient
from diffai.change import relative_changes
from diffai.comparison import CompareOptions, Comparison, TensorComparison
from diffai.layers import layer_records, layer_records_of
from diffai.model import Model
from diffai.stats import DiffStats, TensorStats

NORMS = [0.0, 1e-3, 1.0, 3.5, 1e200, math.inf, None]
LEAVES = ["weight", "bias", "running_mean", "num_batches_tracked", "exp_avg_sq"]


def _side(shape: tuple[int, ...]) -> TensorStats:
    elements = math.prod(shape)
    return TensorStats(shape, "f32", "f32", elements, 4 * elements,
                       0.0, 1.0, -1.0, 1.0, 0, 0, 0)  # fmt: skip


def _tensor(chooser: random.Random, index: int) -> TensorComparison:
    name = f"blocks.{chooser.randrange(12)}.{chooser.choice(['attn', 'mlp'])}.{index}."
    name += chooser.choice(LEAVES)
    side = _side(chooser.choice([(4,), (16, 16), (32, 64)]))
    if chooser.random() < 0.1:
        return TensorComparison(name, "removed", side, None, None)
    l2, base_l2 = chooser.choice(NORMS), chooser.choice(NORMS)
    relative = l2 / base_l2 if l2 is not None and base_l2 and math.isfinite(base_l2) else None
    cosine = chooser.choice([None, 0.1, 0.99])
    diff = DiffStats(None, None, l2, relative, cosine, 1, 1.0, base_l2, None)
    return TensorComparison(name, chooser.choice(["changed", "unchanged"]), side, side, diff)


def _comparison(tensors: list[TensorComparison]) -> Comparison:
    model = Model("m", "test", 0)
    return Comparison(model, model, tensors, [], CompareOptions())


def test_every_stage_reads_only_what_it_judges() -> None:
    chooser = random.Random(8)
    for _ in range(40):
        tensors = [_tensor(chooser, i) for i in range(chooser.randint(0, 60))]
        mixed = _comparison(tensors)
        weights = [t for t in tensors if t.role == "weight"]
        alone = _comparison(weights)
        assert mixed.relative_changes == relative_changes(tensors)
        assert repr(layer_records_of(mixed.columns)) == repr(layer_records(weights))
        assert repr(convergence.analyze(mixed)) == repr(convergence.analyze(alone))
        if not any(t.name.endswith(".exp_avg") for t in tensors):
            assert repr(gradient.analyze(mixed)) == repr(gradient.analyze(alone))
