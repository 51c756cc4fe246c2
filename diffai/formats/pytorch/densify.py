"""A sparse tensor's parts, checked, as the dense tensor they stand for: what ``to_dense()`` gives.

Every layout comes down to one list: the C-order position, in the dense
tensor, of each stored value. Checking that list is checking the file (every
index in range, the compressed pointers consistent, a "coalesced" flag true),
and streaming the dense values is walking it in order: each chunk starts as
zeros and gets its stored values added, in the file's order, in the values'
own dtype, exactly as torch's ``to_dense()`` adds them (so duplicates of an
uncoalesced COO tensor are summed, and a stored ``-0.0`` reads as ``0.0``).
Memory is the sorted position list (at most 24 bytes per stored value while
it is sorted), a copy of the values and one chunk: never the dense tensor,
whatever its shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np

from diffai.dtypes import numpy_dtype
from diffai.model import CHUNK_ELEMENTS, Sparsity, TensorRef, ValueStream

#: Largest element count a position can name: numpy indexes with signed 64-bit integers.
_MAX_ELEMENTS = 2**63 - 1
#: Torch's ``to_dense()`` cannot add these (``add_dense_sparse`` is not implemented for f8).
_NOT_ADDED = frozenset({"f8_e4m3", "f8_e5m2"})
_INDEX_DTYPES = {"coo": frozenset({"i64"}), "compressed": frozenset({"i32", "i64"})}
#: Compressed layouts: (whether the compressed axis is the rows, whether values are blocks).
_COMPRESSED = {
    "csr": (True, False), "csc": (False, False), "bsr": (True, True), "bsc": (False, True),
}  # fmt: skip


@dataclass(frozen=True)
class Part:
    """One tensor of a sparse layout: its diffai dtype name and its values (any strides)."""

    dtype: str
    array: np.ndarray


def sparse_ref(
    name: str, layout: str, size: tuple[int, ...], parts: list[Part], coalesced: bool | None
) -> TensorRef:
    """The dense tensor the parts stand for, streamed; ``ValueError`` says what is wrong."""
    values = parts[-1]
    if values.dtype in _NOT_ADDED:
        raise ValueError(f"a sparse {values.dtype} tensor, which torch cannot make dense")
    if math.prod(size) > _MAX_ELEMENTS:
        raise ValueError(f"a sparse tensor of shape {list(size)!r:.80} is too large to index")
    locate = partial(_locate, layout, size, parts, coalesced)
    nnz = locate()[1]  # checked now, so a bad tensor fails the read; kept only while streamed
    stream = _stream(lambda: locate()[0], values.array, math.prod(size), values.dtype)
    stored = sum(part.array.nbytes for part in parts)
    sparsity = Sparsity(layout, nnz)
    return TensorRef(name, size, values.dtype, stream=stream, stored_size=stored, sparse=sparsity)


def _locate(
    layout: str, size: tuple[int, ...], parts: list[Part], coalesced: bool | None
) -> tuple[np.ndarray, int]:
    """The position of each stored value in the dense tensor, and the tensor's nnz."""
    values = parts[-1].array
    if layout == "coo":
        return _coo_positions(parts[0], values, size, coalesced)
    return _compressed_positions(layout, parts[:2], values, size)


def _stream(
    locate: Callable[[], np.ndarray], values: np.ndarray, elements: int, dtype: str
) -> ValueStream:
    """The dense values in pieces of ``CHUNK_ELEMENTS``, each zeros plus its stored values."""
    target = numpy_dtype(dtype)

    def pieces() -> Iterator[np.ndarray]:
        positions = locate()
        order = np.argsort(positions, kind="stable")  # duplicates keep the file's order
        sorted_positions, sorted_values = positions[order], values.reshape(-1)[order]
        del positions, order
        for start in range(0, elements, CHUNK_ELEMENTS):
            end = min(elements, start + CHUNK_ELEMENTS)
            low, high = np.searchsorted(sorted_positions, [start, end])
            piece = np.zeros(end - start, target)
            np.add.at(piece, sorted_positions[low:high] - start, sorted_values[low:high])
            yield piece

    return pieces


# --- COO -----------------------------------------------------------------------------------


def _coo_positions(
    part: Part, values: np.ndarray, size: tuple[int, ...], coalesced: bool | None
) -> tuple[np.ndarray, int]:
    """``indices`` is (sparse dims, nnz); ``values`` is (nnz, *dense dims)."""
    indices = part.array
    _check_index_dtype(part.dtype, "coo")
    if indices.ndim != 2 or not 0 < indices.shape[0] <= len(size):
        raise ValueError(f"COO indices of shape {list(indices.shape)} do not fit size {list(size)}")
    sparse_dims, nnz = indices.shape
    if values.shape != (nnz, *size[sparse_dims:]):
        raise ValueError(
            f"COO values of shape {list(values.shape)} do not fit {nnz} indices and size "
            f"{list(size)}"
        )
    _check_in_range(indices.reshape(sparse_dims, -1), size[:sparse_dims], "COO index")
    flat = _raveled(indices, size[:sparse_dims])
    if coalesced is not None and not isinstance(coalesced, bool):
        raise ValueError(f"is_coalesced {coalesced!r:.40} is not a bool")
    if coalesced and np.any(flat[1:] <= flat[:-1]):
        raise ValueError(
            "its indices are marked coalesced but are not sorted and unique; refused as ambiguous"
        )
    return _blocks(flat, math.prod(size[sparse_dims:])), nnz


def _raveled(indices: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
    """Each index's C-order position among ``dims`` (in range, so below their product)."""
    flat = np.zeros(indices.shape[1], np.int64)
    for axis, dim in enumerate(dims):
        flat = flat * dim + indices[axis].astype(np.int64)
    return flat


def _blocks(starts: np.ndarray, block: int) -> np.ndarray:
    """The positions of ``block`` consecutive elements from each start, flat."""
    return (starts[:, None] * block + np.arange(block, dtype=np.int64)).reshape(-1)


# --- CSR, CSC, BSR, BSC ----------------------------------------------------------------------


def _compressed_positions(
    layout: str, parts: list[Part], values: np.ndarray, size: tuple[int, ...]
) -> tuple[np.ndarray, int]:
    """``compressed`` is (*batch, n + 1) pointers into ``plain`` (*batch, nnz); ``values`` is
    (*batch, nnz, [block rows, block columns,] *dense dims)."""
    by_rows, blocked = _COMPRESSED[layout]
    compressed, plain = parts[0].array, parts[1].array
    if parts[0].dtype != parts[1].dtype:
        raise ValueError(f"{layout} indices of dtypes {parts[0].dtype} and {parts[1].dtype}")
    _check_index_dtype(parts[0].dtype, "compressed")
    batch = compressed.shape[:-1]
    if compressed.ndim < 1 or plain.shape[:-1] != batch or len(size) < len(batch) + 2:
        raise ValueError(f"{layout} indices do not fit size {list(size)}")
    nnz = plain.shape[-1]
    block = values.shape[len(batch) + 1 : len(batch) + 3] if blocked else (1, 1)
    rows, columns = size[len(batch) : len(batch) + 2]
    dense = size[len(batch) + 2 :]
    if values.shape != (*batch, nnz, *(block if blocked else ()), *dense) or 0 in block:
        raise ValueError(
            f"{layout} values of shape {list(values.shape)} do not fit size {list(size)}"
        )
    if rows % block[0] or columns % block[1]:
        raise ValueError(f"{layout} blocks {list(block)} do not tile size {list(size)}")
    grid = (rows // block[0], columns // block[1])
    outer, inner = grid if by_rows else grid[::-1]
    flat_compressed = compressed.reshape(-1, compressed.shape[-1]).astype(np.int64)
    flat_plain = plain.reshape(-1, nnz).astype(np.int64)
    outer_index = _checked_pointers(layout, flat_compressed, flat_plain, outer, inner)
    block_rows, block_columns = (outer_index, flat_plain) if by_rows else (flat_plain, outer_index)
    matrix = (rows, columns)
    return _block_positions(block_rows, block_columns, block, matrix, math.prod(dense)), nnz


def _checked_pointers(
    layout: str, compressed: np.ndarray, plain: np.ndarray, outer: int, inner: int
) -> np.ndarray:
    """The outer index of each stored block, once the pointers hold torch's invariants."""
    if compressed.shape[1] != outer + 1:
        raise ValueError(f"{layout} compressed indices hold {compressed.shape[1]}, not {outer + 1}")
    counts = np.diff(compressed, axis=1)
    nnz = plain.shape[1]
    if np.any(compressed[:, 0] != 0) or np.any(compressed[:, -1] != nnz) or np.any(counts < 0):
        raise ValueError(f"{layout} compressed indices are not nondecreasing from 0 to nnz {nnz}")
    _check_in_range(plain.reshape(1, -1), (inner,), f"{layout} plain index")
    outer_index = np.repeat(np.tile(np.arange(outer), len(compressed)), counts.reshape(-1))
    outer_index = outer_index.reshape(plain.shape)
    keys = outer_index * inner + plain
    if np.any(keys[:, 1:] <= keys[:, :-1]):
        raise ValueError(
            f"{layout} plain indices are not sorted and unique in each compressed row; "
            "refused as ambiguous"
        )
    return outer_index


def _block_positions(
    block_rows: np.ndarray, block_columns: np.ndarray, block: tuple[int, int],
    matrix: tuple[int, int], dense: int,
) -> np.ndarray:  # fmt: skip
    """Positions of every value of every (batch, stored block), in the values' C order."""
    rows = block_rows[:, :, None, None] * block[0] + np.arange(block[0])[:, None]
    cols = block_columns[:, :, None, None] * block[1] + np.arange(block[1])
    batch = np.arange(len(block_rows), dtype=np.int64)[:, None, None, None] * math.prod(matrix)
    return _blocks((batch + rows * matrix[1] + cols).reshape(-1), dense)


def _check_index_dtype(dtype: str, kind: str) -> None:
    if dtype not in _INDEX_DTYPES[kind]:
        raise ValueError(f"sparse indices of dtype {dtype}, which torch refuses")


def _check_in_range(indices: np.ndarray, dims: tuple[int, ...], what: str) -> None:
    if not indices.size:
        return
    low, high = indices.min(axis=1), indices.max(axis=1)
    for axis, dim in enumerate(dims):
        bad = int(low[axis]) if low[axis] < 0 else int(high[axis])
        if not 0 <= bad < dim:
            raise ValueError(f"{what} {bad} is out of range for an axis of size {dim}")
