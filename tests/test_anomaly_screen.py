"""anomaly_detection's column screen passes on every tensor a check flags."""

from __future__ import annotations

import random

from diffai.analyses.anomaly import _suspects, tensor_findings
from diffai.comparison import TensorComparison
from diffai.stats import TensorStats


def _stats(chooser: random.Random) -> TensorStats:
    elements = chooser.choice([0, 1, 64])
    zeros = chooser.choice([0, elements, elements // 2])
    low, high, std = (chooser.choice([None, 0.0, -1.0, 1e-3, 2.0, 50.0, 1e300]) for _ in "abc")
    return TensorStats((elements,), chooser.choice(["f32", "bf16", "i64"]), "f32", elements,
                       4 * elements, 0.5, std, low, high, chooser.choice([0, 0, 3]),
                       chooser.choice([0, 0, 2]), zeros)  # fmt: skip


def test_the_screen_keeps_every_tensor_with_a_finding() -> None:
    chooser = random.Random(16)
    tensors = []
    for i in range(20_000):
        name = chooser.choice(["layer.weight", "layer.running_var", "layer.step"]) + str(i)
        base = None if chooser.random() < 0.1 else _stats(chooser)
        cand = None if chooser.random() < 0.05 else _stats(chooser)
        tensors.append(TensorComparison(name, "changed", base, cand, None))
    every = [finding for tensor in tensors for finding in tensor_findings(tensor)]
    screened = [finding for tensor in _suspects(tensors) for finding in tensor_findings(tensor)]
    assert screened == every
    assert len({f["kind"] for f in every}) == 6  # every kind of finding was met
