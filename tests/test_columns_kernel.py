"""diffai/_columns.c's loops over names give what the Python they replace gives."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from diffai import _columns
from diffai.analyses.gradient import BLOCK
from diffai.change import RelativeChange
from diffai.layers import ROOT_LAYER, group_ids, grouped_layers, layers_of
from diffai.roles import ROLES, role_of, roles_of

#: Pieces of names: digits of every kind, dots, newlines, rule words, non-ASCII letters.
_PIECES = (
    "", "0", "7", "12", "007", "99999999999999999999999", "٣", "१२", "x5", "5x", "\n", "5\n",
    "layers", "attn", "weight", "bias", "running_mean", "step", "step\n", "exp_avg",
    "optimizer", "state", "rng_state", "callbacks", "attn.bias", "Ünïcode", "(root)", "😀",
)  # fmt: skip


def _names(chooser: random.Random, count: int) -> list[str]:
    short = [".".join(p) for size in (1, 2) for p in itertools.product(_PIECES, repeat=size)]
    longer = [
        chooser.choice([".", "", "_"]).join(
            chooser.choice(_PIECES) for _ in range(chooser.randint(1, 6))
        )
        for _ in range(count)
    ]
    return short + longer


def test_layer_groups_are_the_layers_numbered() -> None:
    names = _names(random.Random(3), 5000)
    layers, numbers = grouped_layers(names)
    expected = group_ids(layers_of(names))
    assert layers == expected[0] and numbers.tolist() == expected[1].tolist()
    assert grouped_layers([])[0] == [] and ROOT_LAYER in layers


def test_block_indices_are_the_first_matches() -> None:
    names = _names(random.Random(4), 20000)
    found = [(row, int(m[1])) for row, name in enumerate(names) if (m := re.search(BLOCK, name))]
    rows, indices = _columns.block_indices(names)
    assert list(zip(rows, indices, strict=True)) == found
    assert any(index > 2**64 for index in indices) and 3 in indices  # "٣" is a 3


def test_roles_of_is_role_of_each() -> None:
    chooser = random.Random(5)
    names = _names(chooser, 20000)
    hints = [chooser.choice([None, None, None, *ROLES]) for _ in names]
    assert roles_of(names, hints) == list(map(role_of, names, hints))
    assert roles_of(names, [None] * len(names)) == list(map(role_of, names))


def test_names_must_be_a_list_of_strings() -> None:
    with pytest.raises(TypeError):
        _columns.block_indices(("a.1",))
    with pytest.raises(TypeError):
        _columns.block_indices(["a.1", 2])
    with pytest.raises(TypeError):
        _columns.layer_groups([b"a.b"], ROOT_LAYER)


def test_rows_built_are_the_objects_and_records_of_each_row() -> None:
    values, bases = [0.5, None, 2.0], ["self", "none", "model"]
    built = _columns.build_rows(RelativeChange, ("value", "basis"), (values, bases))
    assert built == list(map(RelativeChange, values, bases))
    assert list(map(vars, built)) == list(map(vars, map(RelativeChange, values, bases)))
    records = _columns.build_rows(dict, ("a", "b"), ([1, 2], ["x", None]))
    assert records == [{"a": 1, "b": "x"}, {"a": 2, "b": None}]
    assert _columns.build_rows(dict, ("a",), ([],)) == []
    with pytest.raises(ValueError):
        _columns.build_rows(dict, ("a", "b"), ([1, 2], [1]))
    with pytest.raises(ValueError):
        _columns.build_rows(dict, ("a",), ([1], [2]))


def test_each_object_keeps_its_value() -> None:
    changes = [RelativeChange(1.0, "self"), RelativeChange(2.0, "model")]
    _columns.set_each(changes, "value", [3.0, None])
    assert [change.value for change in changes] == [3.0, None]
    with pytest.raises(ValueError):
        _columns.set_each(changes, "value", [1.0])
