"""architecture_comparison over columns decides as it did a name at a time."""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from diffai.analyses import architecture
from diffai.comparison import compare_models
from diffai.model import Model, TensorRef
from diffai.roles import Role

_NAMES = st.lists(st.text(alphabet="ab.01_\n", max_size=12), max_size=30)


@given(_NAMES)
def test_the_block_runs_find_what_a_match_a_name_finds(names: list[str]) -> None:
    matches = (architecture._BLOCK_INDEX.match(name) for name in names)
    assert architecture._block_indices(names) == {(m[1], m[2]) for m in matches if m}


@given(_NAMES)
def test_the_block_runs_find_it_in_model_order(names: list[str]) -> None:
    ordered = sorted(names)  # names of a block next to each other, as models hold them
    matches = (architecture._BLOCK_INDEX.match(name) for name in ordered)
    assert architecture._block_indices(ordered) == {(m[1], m[2]) for m in matches if m}


def _model(hints: dict[str, Role | None]) -> Model:
    tensors = {
        name: TensorRef(name, (3,), "f32", load=lambda: np.ones(3, np.float32), role_hint=hint)
        for name, hint in hints.items()
    }
    return Model("model.safetensors", "safetensors", 0, tensors)


def test_a_hint_on_one_side_only_gives_each_side_its_own_roles() -> None:
    """The comparison's roles serve only when both sides hint alike: here its pair has no
    hint (the sides disagree), so its role is a weight, the baseline's a graph constant."""
    base = _model({"fc.weight": None, "shape": "constant"})
    cand = _model({"fc.weight": None, "shape": None})
    result = architecture.analyze(compare_models(base, cand))
    assert (result["added"], result["migration"]) == (["shape"], "moderate")
    assert (result["parameters_baseline"], result["parameters_candidate"]) == (3, 6)
    assert result["parameters_baseline"] == base.parameters


def test_the_same_names_in_another_order_are_the_same_architecture() -> None:
    base = _model({"a.0.w": None, "a.1.w": None, "optimizer.state.0.exp_avg": None})
    cand = _model({"a.1.w": None, "a.0.w": None})
    result = architecture.analyze(compare_models(base, cand))
    assert (result["added"], result["removed"], result["migration"]) == ([], [], "easy")
    assert result["depth_baseline"] == result["depth_candidate"] == 2


def test_pairs_hinting_another_role_than_their_tensors_leave_the_models_roles() -> None:
    """A merged report's pairs hint the role their shard decided; the architecture is the
    models' own, whatever the pairs say."""
    comparison = compare_models(_model({"a.0.w": None}), _model({"a.0.w": None}))
    hinted = [dataclasses.replace(t, role_hint="optimizer_state") for t in comparison.tensors]
    merged = dataclasses.replace(comparison, tensors=hinted)
    assert architecture.analyze(merged) == architecture.analyze(comparison)
    assert architecture.analyze(merged)["parameters_baseline"] == 3
