"""Model order: a lexically sorted file's names sorted naturally, by one string a name."""

from __future__ import annotations

import random

import pytest

from diffai.comparison import model_order, natural_key

PIECES = ["a", "b", ".", "_", "-", " ", "~", "é", "\x01", "0", "00", "007", "1", "2", "9",
          "10", "099", "12345678901234567890123"]  # fmt: skip


def names(count: int, seed: int, extra: tuple[str, ...] = ()) -> dict[str, None]:
    rng = random.Random(seed)
    drawn = {"".join(rng.choices(PIECES, k=rng.randint(1, 6))) for _ in range(count)}
    return dict.fromkeys(sorted(drawn | set(extra)))


@pytest.mark.parametrize("seed", range(5))
def test_the_string_key_orders_like_the_tuples(seed) -> None:
    tensors = names(3000, seed)
    assert model_order(tensors) == sorted(tensors, key=natural_key)


def test_a_name_holding_a_nul_is_ordered_by_the_tuples() -> None:
    tensors = names(500, 9, ("a\0", "a\x001", "a1", "a", "a0\0"))
    assert model_order(tensors) == sorted(tensors, key=natural_key)


def test_layers_sort_by_number_and_equal_numbers_keep_the_file_order() -> None:
    tensors = dict.fromkeys(sorted(["layers.10.w", "layers.2.w", "layers.02.w", "layers.1.w"]))
    assert model_order(tensors) == ["layers.1.w", "layers.02.w", "layers.2.w", "layers.10.w"]
