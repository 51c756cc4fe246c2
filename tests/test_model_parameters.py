"""``Model.parameters`` is worked out once, and again whenever ``tensors`` changes."""

from __future__ import annotations

import numpy as np

from diffai.model import Model, TensorRef
from diffai.roles import Role


def ref(name: str, shape: tuple[int, ...], role_hint: Role | None = None) -> TensorRef:
    values = np.zeros(shape, np.float32)
    return TensorRef(name, shape, "f32", load=lambda: values, role_hint=role_hint)


def model(*refs: TensorRef) -> Model:
    return Model(path="m", format="safetensors", size_bytes=0, tensors={r.name: r for r in refs})


def test_parameters_count_the_learned_tensors() -> None:
    held = model(ref("w", (4, 4)), ref("optimizer.state.0.exp_avg", (4, 4)), ref("b", (3,)))
    assert held.parameters == 19
    assert held.parameters == 19


def test_parameters_follow_a_change_of_the_tensors_after_a_first_read() -> None:
    held = model(ref("w", (4, 4)), ref("b", (3,)))
    assert held.parameters == 19
    held.tensors["b"] = ref("b", (5,))
    assert held.parameters == 21
    held.tensors["c"] = ref("c", (2,))
    assert held.parameters == 23
    held.tensors["c"] = ref("c", (2,), role_hint="buffer")
    assert held.parameters == 21
    del held.tensors["w"]
    assert held.parameters == 5
    held.tensors = {"v": ref("v", (7,))}
    assert held.parameters == 7
