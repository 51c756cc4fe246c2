"""The C helpers of opening a model (``diffai/formats/_opening.c``) answer as the Python they
replaced: tensor kinds as ``collections.Counter`` counts them, names as the joined checks
read them, and a compact header after non-ASCII metadata as the strict parse reads it."""

from __future__ import annotations

from collections import Counter
from operator import attrgetter

import numpy as np
import pytest
from diffai.formats._opening import plain_names, tensor_kinds

from diffai.formats.safetensors_header import compact_entries
from diffai.model import TensorRef
from tests.test_safetensors_columns import assert_agrees


def _ref(name: str, shape: tuple[int, ...], dtype: str, **stored: object) -> TensorRef:
    return TensorRef(name=name, shape=shape, dtype=dtype, load=lambda: np.zeros(shape), **stored)


def test_tensor_kinds_count_as_a_counter_of_the_four_attributes() -> None:
    shapes = [(2, 3), (3, 2), (2, 3), (4,)]
    refs = [_ref(f"t{i}", shapes[i % 4], "f32") for i in range(40)]
    refs += [_ref(f"q{i}", (2, 3), "f32", stored_as="qint8", stored_size=6) for i in range(12)]
    refs += [_ref(f"e{i}", (i % 11,), "f16") for i in range(30)]  # past the recent kinds kept
    expected = Counter(map(attrgetter("shape", "dtype", "stored_as", "stored_size"), refs))
    found = tensor_kinds(refs)
    assert found == expected
    assert list(found) == list(expected)


@pytest.mark.parametrize(
    ("names", "plain"),
    [
        (["a.weight", "b bias ~"], True),
        ([], True),
        (["a", "b\x7f"], False),
        (["a\tb"], False),
        (["é"], False),
        (["n" * 1024], True),
        (["n" * 1025], False),
    ],
)
def test_plain_names_are_printable_ascii_within_the_limit(names: list[str], plain: bool) -> None:
    assert plain_names(names, 1024) is plain


def test_a_compact_header_after_non_ascii_metadata_reads_as_the_strict_parse() -> None:
    entry = '{"dtype":"U8","shape":[1],"data_offsets":[%d,%d]}'
    text = '{"__metadata__":{"層":"é"},"層.a":' + entry % (0, 1) + ',"b":' + entry % (1, 2) + "}"
    assert compact_entries(text, 2) is not None  # read here, not left to the strict parse
    assert_agrees(text, 2)
