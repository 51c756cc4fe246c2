"""The reader protocol: a TensorRef streams values in shape-defined chunks from either source."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from diffai.model import CHUNK_ELEMENTS, ShortStream, TensorRef, chunk_sizes, iter_chunks
from diffai.stats import measure_pair, measure_tensor

SHAPES = [(), (0,), (5, 0), (4, 0, 3), (7,), (2, 3, 4), (3, CHUNK_ELEMENTS + 5), (600_000,)]


def pieces_of(values: np.ndarray, lengths: tuple[int, ...]) -> Iterator[np.ndarray]:
    """The flat values in pieces of the given lengths, cycled: a stream's irregular reads."""
    flat, position, turn = values.reshape(-1), 0, 0
    while position < flat.size:
        length = lengths[turn % len(lengths)]
        yield flat[position : position + length]
        position, turn = position + length, turn + 1


def streamed(
    values: np.ndarray, dtype: str, lengths: tuple[int, ...] = (1, 99_991, 7)
) -> TensorRef:
    return TensorRef("t", values.shape, dtype, stream=lambda: pieces_of(values, lengths))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_chunk_sizes_are_those_of_iter_chunks(shape) -> None:
    values = np.zeros(shape, np.float32)
    assert list(chunk_sizes(shape)) == [chunk.size for chunk in iter_chunks(values)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_a_stream_chunks_like_the_mapped_array(shape) -> None:
    values = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    mapped = TensorRef("t", shape, "f32", lambda: values)
    from_stream = list(streamed(values, "f32").chunks())
    assert [c.size for c in from_stream] == [c.size for c in mapped.chunks()]
    assert all(chunk.dtype == np.float32 for chunk in from_stream)
    np.testing.assert_array_equal(streamed(values, "f32").array(), values)


def test_a_streamed_side_measures_exactly_like_a_mapped_one() -> None:
    rng = np.random.default_rng(3)
    base, cand = rng.standard_normal((2, 700, 900)).astype(np.float32)
    mapped = measure_pair(TensorRef("t", base.shape, "f32", lambda: base),
                          TensorRef("t", cand.shape, "f32", lambda: cand), 0.0)  # fmt: skip
    mixed = measure_pair(
        TensorRef("t", base.shape, "f32", lambda: base), streamed(cand, "f32"), 0.0
    )
    assert mixed == mapped


@pytest.mark.parametrize(
    ("values", "problem"),
    [(np.zeros(9, np.float32), "ended early"), (np.zeros(11, np.float32), "runs past")],
)
def test_a_stream_of_the_wrong_length_is_an_error(values, problem) -> None:
    ref = TensorRef("t", (10,), "f32", stream=lambda: iter([values]))
    with pytest.raises(ShortStream, match=problem):
        measure_tensor(ref)


def test_stored_dtype_and_bytes_default_to_the_values_and_may_differ() -> None:
    values = np.zeros((4, 8), np.float32)
    plain = TensorRef("w", values.shape, "f32", lambda: values)
    packed = TensorRef("w", values.shape, "f32", lambda: values, stored_as="q4_0", stored_size=18)
    assert (plain.stored_dtype, plain.stored_bytes) == ("f32", 128)
    assert (packed.stored_dtype, packed.stored_bytes, packed.nbytes) == ("q4_0", 18, 128)
    stats = measure_tensor(packed)
    assert (stats.dtype, stats.stored_dtype, stats.bytes) == ("f32", "q4_0", 18)


def test_a_ref_needs_exactly_one_source() -> None:
    with pytest.raises(TypeError, match="exactly one"):
        TensorRef("t", (1,), "f32")
