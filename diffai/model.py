"""The lazy model every reader returns: tensor references, scalars, metadata.

The reader protocol is ``TensorRef``. It knows, without touching the values:

- ``shape`` and the **value dtype** ``dtype``: what the statistics see (a
  dequantized tensor's f32, say);
- the **stored dtype** ``stored_dtype`` and **stored bytes** ``stored_bytes``:
  what the tensor's encoding takes in the file (``qint8``, GGUF's ``q4_k`` ...),
  which is what memory and compression figures are about; both default to the
  value dtype and ``elements x itemsize``. A container's own compression (a
  deflated npz member) is transport, not encoding, and does not count;

and it yields the values in C order as flat chunks (``chunks``), so nothing is
ever needed whole. A reader gives one of two sources: ``load``, a whole array
that is cheap to have (a memory-mapped view; the kernel then reads f32, f16 and
bf16 chunks straight from the page cache), or ``stream``, value pieces in C
order of any length (a deflated member, dequantized blocks, remote ranges),
regrouped here into chunks whose boundaries depend only on the shape, so two
same-shaped tensors chunk alike whatever their sources.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeAlias

import numpy as np

from diffai.dtypes import numpy_dtype
from diffai.ref_columns import RefColumns
from diffai.roles import Role, roles_of

#: Elements per chunk and side. The kernel keeps no buffers of its own; the chunk bounds
#: only the float64 copy of dtypes it does not read (ints, f8) and the Python work per call.
#: Measured on 2 x 512 MiB, one worker: 128K elements 0.29 s (f16 0.25 s), 256K 0.28 s
#: (0.21 s), 512K and 1M no better than 256K for f16.
CHUNK_ELEMENTS = 1 << 18

#: A non-tensor value of a checkpoint (epoch, lr, loss, betas ...), JSON-like.
Scalar: TypeAlias = "bool | int | float | str | list[Scalar] | None"

#: Value pieces of a tensor in C order, flat, of any lengths adding up to its elements.
ValueStream: TypeAlias = Callable[[], Iterable[np.ndarray]]


class _once:
    """``functools.cached_property`` without its lock: Python 3.11 takes an RLock on every
    first read (200,000 first reads: 0.25 s, here 0.075 s), and a race would only compute
    the same number twice."""

    def __init__(self, compute: Callable[[Any], Any]) -> None:
        self._compute, self._name = compute, compute.__name__

    def __get__(self, ref: Any, owner: type | None = None) -> Any:
        if ref is None:
            return self
        value = ref.__dict__[self._name] = self._compute(ref)
        return value


@dataclass(frozen=True)
class Sparsity:
    """How a sparse tensor is stored: torch's layout (``coo``, ``csr`` ...) and its ``nnz``
    (stored elements, or stored blocks of a blocked layout, as ``_nnz()`` counts them)."""

    layout: str
    nnz: int


@dataclass(frozen=True)
class TensorRef:
    """One tensor of a model, described without reading its values (the reader protocol).

    Exactly one of ``load`` and ``stream`` is given. ``load`` returns an ndarray of
    ``shape`` whose dtype is ``numpy_dtype(dtype)`` (either byte order), possibly a
    strided memory-mapped view; ``stream`` yields the values as pieces (see
    ``ValueStream``). ``stored_as`` and ``stored_size`` override the stored dtype
    and bytes when the encoding is not the values' own; ``sparse`` says how a sparse
    tensor is stored (its values are then those of the dense tensor it stands for).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    load: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)
    stream: ValueStream | None = field(default=None, repr=False, compare=False)
    stored_as: str | None = None
    stored_size: int | None = None
    role_hint: Role | None = None
    sparse: Sparsity | None = None
    #: How a quantized tensor's values were dequantized (scheme, scale, zero point, axis).
    quantization: dict[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if (self.load is None) == (self.stream is None):
            raise TypeError(f"tensor {self.name!r} needs exactly one of load and stream")

    # Cached: comparison, batching, progress and the report ask for them 12 times a tensor.
    @_once
    def elements(self) -> int:
        return math.prod(self.shape)

    @_once
    def nbytes(self) -> int:
        """Bytes of the values (what the statistics stream), ``elements x itemsize``."""
        return self.elements * numpy_dtype(self.dtype).itemsize

    @property
    def stored_dtype(self) -> str:
        return self.stored_as or self.dtype

    @property
    def stored_bytes(self) -> int:
        return self.nbytes if self.stored_size is None else self.stored_size

    def array(self) -> np.ndarray:
        """The values as an ndarray of ``shape``: the mapped view when there is one, else
        assembled from the stream (a copy; fine for small tensors and library users)."""
        if self.load is not None:
            return self.load()
        values = np.empty(self.elements, numpy_dtype(self.dtype))
        position = 0
        for chunk in self.chunks():
            values[position : position + chunk.size] = chunk
            position += chunk.size
        return values.reshape(self.shape)

    def chunks(self, elements: int = CHUNK_ELEMENTS) -> Iterator[np.ndarray]:
        """The values in C order as flat chunks of at most ``elements`` (one row at least)."""
        if self.load is not None:
            return iter_chunks(self.load(), elements)
        assert self.stream is not None  # __post_init__ holds one of them
        return regroup(self, self.stream(), chunk_sizes(self.shape, elements))


@dataclass
class Model:
    """A model artifact as one flat namespace of tensors and scalars (names joined by dots)."""

    path: str
    format: str
    size_bytes: int
    tensors: dict[str, TensorRef] = field(default_factory=dict)
    scalars: dict[str, Scalar] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Where a remote model's bytes came from (``formats.remote``): its files, their store
    #: SHA-256, and the files proven identical on both sides, so read once; None when local.
    source: dict[str, Any] | None = None

    @_once  # the report and the architecture analysis read it: 0.8 us a tensor each at 100,000
    def parameters(self) -> int:
        """Elements of the learned tensors (``diffai.roles``): a training checkpoint's Adam
        moments, counters and RNG state are not parameters of the model. Counted at the first
        read: ``tensors`` must be final by then (it is once a comparison has begun)."""
        refs, roles = self.tensors.values(), self.roles
        return sum(ref.elements for ref, role in zip(refs, roles, strict=True) if role == "weight")

    @_once  # parameters and the architecture analysis read them
    def roles(self) -> list[Role]:
        """Each tensor's role (``diffai.roles``), in model order, by roles_of's one C pass
        (role_of a name cost 0.6 us at 100,000 names); ``tensors`` final, as for ``columns``."""
        return roles_of(self.columns.names, self.columns.hints)

    @_once  # the memory and architecture analyses read them: ~25 ms a pass at 100,000 tensors
    def columns(self) -> RefColumns:
        """The tensors as columns (``diffai.ref_columns``), read in one pass at the first
        read: like ``parameters``, ``tensors`` must be final by then."""
        return RefColumns.of(self.tensors)


class Layout(NamedTuple):
    """A tensor's value dtype and shape with the sizes they imply, which a reader computes
    once per distinct shape: a mixture-of-experts header repeats a few shapes 100,000 times."""

    dtype: str
    shape: tuple[int, ...]
    elements: int
    nbytes: int


def layout(dtype: str, shape: tuple[int, ...]) -> Layout:
    elements = math.prod(shape)
    return Layout(dtype, shape, elements, elements * numpy_dtype(dtype).itemsize)


def mapped_view(data: np.ndarray, begin: int, end: int, layout: Layout) -> np.ndarray:
    """Bytes ``begin:end`` of a mapped file as the tensor ``layout`` describes: a reader's
    ``load`` as ``partial(mapped_view, data, begin, end, layout)`` lets the batched kernel
    (``diffai/_batch.c``) read those bytes in place, without this view (2 numpy calls a side:
    ~1 us of a 100,000-pair run's ~20 us a pair). Made by ``np.ndarray`` itself, bounds
    checked by the reader (no tensor lies past the data): 0.4 us a view, where slicing,
    ``view`` and ``reshape`` took 1.5 us."""
    return np.ndarray(layout.shape, numpy_dtype(layout.dtype), data, begin)


def iter_chunks(array: np.ndarray, budget: int = CHUNK_ELEMENTS) -> Iterator[np.ndarray]:
    """The elements in C order as 1-D chunks of at most ``budget`` elements (one row at least).

    Chunk boundaries are ``chunk_sizes(array.shape)``, whatever the strides; a strided
    view is copied one chunk at a time.
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


def chunk_sizes(shape: tuple[int, ...], budget: int = CHUNK_ELEMENTS) -> Iterator[int]:
    """The element counts of ``iter_chunks`` over an array of ``shape``, from the shape alone."""
    if not shape:
        yield 1
        return
    row = math.prod(shape[1:])
    if row > budget:
        for _ in range(shape[0]):
            yield from chunk_sizes(shape[1:], budget)
        return
    rows = max(1, budget // max(row, 1))
    for start in range(0, shape[0], rows):
        yield min(rows, shape[0] - start) * row


class ShortStream(ValueError):
    """A value stream ended before (or ran past) its tensor's elements: a reader's bug, since
    each reader checks its data's length before it yields a value."""


def regroup(
    ref: TensorRef, pieces: Iterable[np.ndarray], sizes: Iterable[int]
) -> Iterator[np.ndarray]:
    """Pieces of any lengths as chunks of exactly ``sizes``, copying only across piece edges."""
    source = (np.ascontiguousarray(piece).reshape(-1) for piece in pieces if piece.size)
    pending = np.empty(0, numpy_dtype(ref.dtype))
    for size in sizes:
        parts = [pending[:size]]
        pending = pending[size:]
        missing = size - parts[0].size
        while missing:
            piece = next(source, None)
            if piece is None:
                raise ShortStream(f"tensor {ref.name!r}: the value stream ended early")
            parts.append(piece[:missing])
            pending = piece[missing:]
            missing -= parts[-1].size
        yield parts[0] if len(parts) == 1 else np.concatenate(parts)
    if pending.size or next(source, None) is not None:
        raise ShortStream(f"tensor {ref.name!r}: the value stream runs past its elements")
