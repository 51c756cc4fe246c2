"""The renderers' one-walk shortcuts give what the plain sort and scans gave."""

from __future__ import annotations

import os
import random
from typing import Any

from diffai.components import _RULES, component_of
from diffai.renderers.depth import gained_non_finite, tensor_change
from diffai.renderers.html_report import front_coded
from diffai.renderers.markdown import MIN_ROW_CHARS, _walked

STATUSES = ("changed", "unchanged", "added", "shape_changed")


def table_order(tensor: dict[str, Any]) -> tuple[int, float]:
    """The comment table's order as a sort key: NaN/Inf, structural, by change, unchanged."""
    if gained_non_finite(tensor):
        return (0, 0.0)
    if tensor["status"] == "unchanged":
        return (3, 0.0)
    value = tensor_change(tensor)
    return (1, 0.0) if value is None else (2, -value)


def tensor(rng: random.Random, index: int) -> dict[str, Any]:
    status = rng.choice(STATUSES)
    side = {"nan": rng.choice((0, 0, 0, 1)), "inf": 0, "shape": [2], "dtype": "f32"}
    measured = status in ("changed", "unchanged") and rng.random() < 0.9
    value = rng.choice((0.0, 0.5, 0.25, rng.random())) if measured else None
    diff = {"relative_change": value} if measured else None
    name = f"model.layers.{index % 7}.mlp.experts.{index % 5}.w{index % 3 + 1}.weight"
    return {"name": name, "status": status, "diff": diff, "baseline": {**side, "nan": 0},
            "candidate": side}  # fmt: skip


def test_the_first_rows_are_those_of_the_sorted_table_ties_in_report_order() -> None:
    rng = random.Random(7)
    tensors = [tensor(rng, index) for index in range(3000)]
    for limit in (MIN_ROW_CHARS * 10, MIN_ROW_CHARS * 900, MIN_ROW_CHARS * 5000):
        _, first = _walked(tensors, limit)
        assert first == sorted(tensors, key=table_order)[: limit // MIN_ROW_CHARS + 1]


def test_a_component_is_the_first_rule_matching_any_segment() -> None:
    def first_rule(segments: list[str]) -> str:
        lowered = ".".join(segments).lower().split(".")
        return next((c for c, rule in _RULES if any(rule.search(p) for p in lowered)), "other")

    names = ["model.layers.3.Self_Attn.q_proj", "h.0.ln_1", "moe.norm.fc1", "head", "x.y", "A.B"]
    for name in names:
        assert component_of(name.split(".")) == first_rule(name.split("."))


def test_front_coding_shares_the_common_prefix_in_utf16_units() -> None:
    names = ["a.b.c", "a.b.d", "a.\U0001f600x", "a.\U0001f600y", "", "zz", "zz", "zzz"]
    expected: list[int | str] = []
    previous = ""
    for name in names:
        shared = os.path.commonprefix([previous, name])  # noqa: RUF071 (characters, meant)
        expected += [len(shared.encode("utf-16-le")) // 2, name[len(shared) :]]
        previous = name
    assert front_coded(names) == expected
