"""The lazy model every reader returns: tensor references, scalars, metadata.

A ``TensorRef`` knows its shape, dtype and byte size without touching the
values; ``TensorRef.array()`` hands out a (usually memory-mapped) numpy view
that the comparison walks chunk by chunk, so nothing is loaded whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeAlias

import numpy as np

from diffai.dtypes import numpy_dtype
from diffai.roles import role_of

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
        return self.load()


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
