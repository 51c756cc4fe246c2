"""What a name map may do to a tensor's values as it renames it, in bounded memory.

- ``Transpose``: a 2-D tensor's axes swapped (a Keras kernel is ``[in, out]``, a PyTorch
  weight ``[out, in]``). A memory-mapped source gives the transposed strided view, which
  ``iter_chunks`` copies one C-order chunk at a time. A streamed source (dequantized
  blocks, a deflated member) yields rows in order, and a row of the transpose is a column
  of the source, so it is read in passes: each collects as many columns as
  ``TRANSPOSE_BUDGET`` elements hold. Memory stays at that budget; time grows with the
  passes (one per budget's worth of the tensor).
- ``RotaryPermutation``: llama.cpp's ``LlamaModel.permute`` (convert_hf_to_gguf.py),
  which reorders the rows of each head of Q and K from Hugging Face's halves layout
  (``rotate_half``: the first and second halves of a head pair up) to GGML's interleaved
  pairs, as ``reshape(heads, 2, d/2, ...).swapaxes(1, 2)``; ``inverse`` undoes it for a
  GGUF file's tensors. Rows move only within their head, so the values are read once,
  one head's rows at a time: memory is one head's block (``d`` rows), whatever the source.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from diffai.dtypes import numpy_dtype
from diffai.model import CHUNK_ELEMENTS, Model, TensorRef, regroup

#: Values one pass of a streamed transpose holds: 16M (64 MiB as f32).
TRANSPOSE_BUDGET = 1 << 24


class TransformError(ValueError):
    """A transform does not fit the tensor its rule matched; the caller names map and rule."""


class Transform(Protocol):
    def apply(self, ref: TensorRef, model: Model) -> TensorRef:
        """``ref`` with its values transformed (and its new shape); read lazily."""

    def describe(self) -> str:
        """What was done, for the report: ``transpose``, ``permute_rotary(heads=4, inverse)``."""


@dataclass(frozen=True)
class Transpose:
    budget: int = TRANSPOSE_BUDGET

    def apply(self, ref: TensorRef, model: Model) -> TensorRef:
        if len(ref.shape) != 2:
            raise TransformError(
                f"transpose needs a 2-D tensor, {ref.name!r} of {model.path} has shape "
                f"{list(ref.shape)}"
            )
        shape = (ref.shape[1], ref.shape[0])
        if ref.load is not None:
            load = ref.load
            return dataclasses.replace(ref, shape=shape, load=lambda: load().T)
        return dataclasses.replace(ref, shape=shape, stream=lambda: self._passes(ref))

    def _passes(self, ref: TensorRef) -> Iterator[np.ndarray]:
        rows, columns = ref.shape
        step = max(1, self.budget // max(rows, 1))
        for first in range(0, columns, step):
            block = np.empty((rows, min(step, columns - first)), numpy_dtype(ref.dtype))
            done = 0
            for group in row_groups(ref, max(1, CHUNK_ELEMENTS // max(columns, 1))):
                block[done : done + len(group)] = group[:, first : first + step]
                done += len(group)
            yield block.T

    def describe(self) -> str:
        return "transpose"


@dataclass(frozen=True)
class RotaryPermutation:
    """``heads`` (or ``kv_heads``, which wins as in llama.cpp) or the GGUF file's head counts."""

    heads: int | None = None
    kv_heads: int | None = None
    from_metadata: Literal["query", "key"] | None = None
    inverse: bool = True

    def apply(self, ref: TensorRef, model: Model) -> TensorRef:
        heads = self._heads(model)
        rows = ref.shape[0] if ref.shape else 0
        if not rows or rows % (2 * heads):
            raise TransformError(
                f"permute_rotary with {heads} heads does not fit {ref.name!r} of shape "
                f"{list(ref.shape)} in {model.path}: its first axis must be a multiple of "
                f"2 x {heads}"
            )
        return dataclasses.replace(ref, load=None, stream=lambda: self._permuted(ref, heads))

    def _permuted(self, ref: TensorRef, heads: int) -> Iterator[np.ndarray]:
        head_rows = ref.shape[0] // heads
        split = (head_rows // 2, 2) if self.inverse else (2, head_rows // 2)
        for block in row_groups(ref, head_rows):
            yield block.reshape(*split, -1).swapaxes(0, 1)

    def _heads(self, model: Model) -> int:
        if self.from_metadata is None:
            return self.kv_heads or self.heads or 1
        architecture = model.scalars.get("general.architecture")
        keys = ["head_count_kv", "head_count"] if self.from_metadata == "key" else ["head_count"]
        for key in keys:
            count = model.scalars.get(f"{architecture}.attention.{key}")
            if isinstance(count, int) and not isinstance(count, bool) and count > 0:
                return count
        raise TransformError(
            f"permute_rotary takes the {self.from_metadata} head count from the GGUF "
            f"metadata, and {model.path} has no {architecture}.attention.{keys[0]} of at least 1"
        )

    def describe(self) -> str:
        counts = (
            f"{self.from_metadata} heads from the GGUF metadata"
            if self.from_metadata
            else f"heads={self.kv_heads or self.heads}"
        )
        return f"permute_rotary({counts}{', inverse' if self.inverse else ''})"


def row_groups(ref: TensorRef, rows: int) -> Iterator[np.ndarray]:
    """The values as consecutive blocks of ``rows`` rows (first axis), each ``[rows, ...]``."""
    row = math.prod(ref.shape[1:])
    count = ref.shape[0] if ref.shape else 1
    blocks = [min(rows, count - first) for first in range(0, count, rows)]
    chunks = regroup(ref, ref.chunks(), [b * row for b in blocks])
    for block, block_rows in zip(chunks, blocks, strict=True):
        yield block.reshape(block_rows, *ref.shape[1:])  # by count: a row may be empty
