"""The relative changes worked out as columns equal the per-pair definition bit for bit."""

from __future__ import annotations

import math
import random

from diffai.change import NEGLIGIBLE, RelativeChange, relative_changes
from diffai.comparison import TensorComparison
from diffai.layers import layer_of
from diffai.stats import DiffStats, TensorStats


def _pair(name: str, l2: float | None, base_l2: float | None, elements: int) -> TensorComparison:
    relative = l2 / base_l2 if l2 is not None and base_l2 else None
    diff = DiffStats(None, None, l2, relative, None, 1, 1.0, base_l2, None)
    side = TensorStats((elements,), "f32", "f32", elements, 4 * elements,
                       None, None, None, None, 0, 0, 0)  # fmt: skip
    return TensorComparison(name, "changed", side, side, diff)


def _by_the_definition(tensors: list[TensorComparison]) -> dict[str, RelativeChange]:
    """diffai.change's docstring, one pair at a time, sums in model order."""
    pairs = [t for t in tensors if t.diff and t.diff.l2 is not None
             and t.diff.baseline_l2 is not None
             and math.isfinite(t.diff.l2) and math.isfinite(t.diff.baseline_l2)]  # fmt: skip
    sums: dict[object, list[float]] = {}
    for t in pairs:
        for key in ((t.role, layer_of(t.name)), t.role):
            group = sums.setdefault(key, [0.0, 0])
            group[0] += t.diff.baseline_l2 * t.diff.baseline_l2  # type: ignore[union-attr,operator]
            group[1] += t.baseline.elements  # type: ignore[union-attr]

    def rms(key: object) -> float:
        squares, elements = sums[key]
        return math.sqrt(squares / elements) if elements else 0.0

    result = {}
    for t in pairs:
        d, n = t.diff, t.baseline.elements  # type: ignore[union-attr]
        own = d.baseline_l2 / math.sqrt(n) if n else 0.0  # type: ignore[union-attr,operator]
        module, model = rms((t.role, layer_of(t.name))), rms(t.role)
        if own and own >= NEGLIGIBLE * module:
            basis, size = "self", own
        elif module and module >= NEGLIGIBLE * model:
            basis, size = "module", module
        else:
            basis, size = ("model", model) if model else ("none", 0.0)
        if d.l2 == 0:  # type: ignore[union-attr]
            value: float | None = 0.0
        elif basis == "self" and d.relative_l2 is not None:  # type: ignore[union-attr]
            value = d.relative_l2  # type: ignore[union-attr]
        elif size:
            value = d.l2 / math.sqrt(n) / size  # type: ignore[union-attr,operator]
        else:
            value = None
        finite = value is None or math.isfinite(value)
        result[t.name] = RelativeChange(value if finite else None, basis)  # type: ignore[arg-type]
    return result


def test_columns_give_the_definitions_numbers_bit_for_bit() -> None:
    chooser = random.Random(16)
    norms = (0.0, 1e-300, 3e-9, 0.02, math.inf, math.nan, None)
    tensors, names = [], set()
    for _ in range(3000):
        module = f"encoder.layer.{chooser.randrange(40)}.{chooser.choice(['attn', 'mlp'])}"
        leaf = chooser.choice(["weight", "bias", "running_mean", "num_batches_tracked"])
        name = f"{module}.{leaf}"  # the leaf last, so the roles (and their groups) differ
        if name in names:
            continue
        names.add(name)
        scale = 10 ** chooser.uniform(-4, 3)
        l2 = chooser.choice(norms) if chooser.random() < 0.2 else scale * chooser.random()
        base_l2 = chooser.choice(norms) if chooser.random() < 0.2 else scale * chooser.random()
        tensors.append(_pair(name, l2, base_l2, chooser.choice([1, 7, 4096])))
    tensors.append(_pair("encoder.layer.0.attn.empty", 0.0, 0.0, 0))  # an empty tensor
    tensors.append(_pair("head.overflow.weight", 1e300, 1e-300, 4))  # the ratio overflows
    tensors.append(_pair("head.overflow.bias", 1e300, 0.0, 4))
    tensors.append(_pair("rng_state.seed", 1.0, 0.0, 4))  # a role all zero: basis none
    assert len({t.role for t in tensors}) > 2
    assert relative_changes(tensors) == _by_the_definition(tensors)


def test_nothing_measured_gives_no_changes() -> None:
    assert relative_changes([_pair("a.weight", None, 1.0, 4)]) == {}
    assert relative_changes([_pair("a.weight", math.inf, 1.0, 4)]) == {}
