"""The lazy model every reader returns: tensor references, scalars, metadata.

A ``TensorRef`` knows its shape, dtype and byte size without touching the
values; ``TensorRef.array()`` hands out a (usually memory-mapped) numpy view
and ``TensorRef.chunks()`` walks it as flat chunks, as the comparison does, so
nothing is loaded whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeAlias

import numpy as np

from diffai.dtypes import numpy_dtype
from diffai.roles import role_of

#: Elements per chunk and side. The kernel keeps no buffers of its own; the chunk bounds
#: only the float64 copy of dtypes it does not read (ints, f8) and the Python work per call.
#: Measured on 2 x 512 MiB, one worker: 128K elements 0.29 s (f16 0.25 s), 256K 0.28 s
#: (0.21 s), 512K and 1M no better than 256K for f16.
CHUNK_ELEMENTS = 1 << 18

#: A non-tensor value of a checkpoint (epoch, lr, loss, betas ...), JSON-like.
Scalar: TypeAlias = "bool | int | float | str | list[Scalar] | None"


@dataclass(frozen=True)
class TensorRef:
    """One tensor of a model, described without reading its values.

    ``load`` returns an ndarray of ``shape`` whose dtype is ``numpy_dtype(dtype)``
    (either byte order); it may be a strided memory-mapped view.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    load: Callable[[], np.ndarray] = field(repr=False, compare=False)

    # Cached: comparison, batching, progress and the report ask for them 12 times a tensor.
    @cached_property
    def elements(self) -> int:
        return math.prod(self.shape)

    @cached_property
    def nbytes(self) -> int:
        return self.elements * numpy_dtype(self.dtype).itemsize

    def array(self) -> np.ndarray:
        """The values as an ndarray of ``shape``, usually a memory-mapped view (not a copy)."""
        return self.load()

    def chunks(self, elements: int = CHUNK_ELEMENTS) -> Iterator[np.ndarray]:
        """The values in C order as flat chunks of at most ``elements`` (one row at least)."""
        return iter_chunks(self.array(), elements)


@dataclass
class Model:
    """A model artifact as one flat namespace of tensors and scalars (names joined by dots)."""

    path: str
    format: str
    size_bytes: int
    tensors: dict[str, TensorRef] = field(default_factory=dict)
    scalars: dict[str, Scalar] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def parameters(self) -> int:
        """Elements of the learned tensors (``diffai.roles``): a training checkpoint's Adam
        moments, counters and RNG state are not parameters of the model."""
        return sum(ref.elements for name, ref in self.tensors.items() if role_of(name) == "weight")


def iter_chunks(array: np.ndarray, budget: int = CHUNK_ELEMENTS) -> Iterator[np.ndarray]:
    """The elements in C order as 1-D chunks of at most ``budget`` elements (one row at least).

    Chunk boundaries depend only on the shape, so two same-shaped tensors
    chunk alike whatever their strides; a strided view is copied one chunk at a time.
    """
    if array.ndim == 0:
        yield array.reshape(1)
        return
    row = math.prod(array.shape[1:])
    if row > budget:
        for index in range(array.shape[0]):
            yield from iter_chunks(array[index], budget)
        return
    rows = max(1, budget // max(row, 1))
    for start in range(0, array.shape[0], rows):
        yield np.ascontiguousarray(array[start : start + rows]).reshape(-1)
