"""Stand-ins for what numpy pickles: dtypes, scalars and arrays, rebuilt as data.

numpy pickles an array as ``_reconstruct(ndarray, (0,), b'b')`` (an empty
array) and a ``BUILD`` whose state holds ``(1, shape, dtype, is_fortran,
raw bytes)``; ``np.random.get_state()`` is such an array of uint32 in a tuple.
Calling numpy's own hooks with a file's arguments is what numpy's
``allow_pickle=False`` exists to prevent, so here the state is checked (a plain
number dtype, a shape whose bytes are exactly the raw bytes given) and the
array is a read-only view of those bytes. Object and structured dtypes are
refused by the dtype stand-in, before any array is made.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from diffai.formats.limits import MAX_DIMS
from diffai.formats.pytorch.standins import are_counts, refuse_state
from diffai.model import Scalar

#: numpy scalar type codes a checkpoint may hold (``np.float64(loss)``); never object or structured.
NUMPY_SCALAR_CODES = frozenset(
    ["b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"]
)


class _NumpyDtype:
    """Stand-in for ``numpy.dtype(code)``, plain numbers only; one BUILD sets its byte order."""

    __slots__ = ("_built", "dtype")

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        self._built = False

    def __setstate__(self, state: Any) -> None:
        if self._built:
            raise ValueError("BUILD gave a numpy dtype its state twice")
        if not _is_plain_dtype_state(state):
            raise ValueError(f"unexpected numpy dtype state {state!r:.80}")
        self.dtype, self._built = self.dtype.newbyteorder(state[1]), True

    def __repr__(self) -> str:
        return f"numpy.dtype({self.dtype.str!r})"


#: numpy's state of a plain number dtype (version 3), byte order aside; its ``__setstate__``
#: refuses other versions and reads fields (flags, subarray) a plain number has not.
_DTYPE_STATE = (3, None, None, None, -1, -1, 0)
_DTYPE_STATE_TYPES = (int, str, type(None), type(None), type(None), int, int, int)


def _is_plain_dtype_state(state: Any) -> bool:
    return type(state) is tuple and tuple(map(type, state)) == _DTYPE_STATE_TYPES and (
        state[1] in ("<", ">", "|", "=") and state[:1] + state[2:] == _DTYPE_STATE
    )


def _numpy_dtype(code: Any, *_align_copy: Any) -> _NumpyDtype:
    if code not in NUMPY_SCALAR_CODES:
        raise ValueError(f"numpy dtype {code!r:.40} is not a plain number type")
    return _NumpyDtype(np.dtype(code))


def _numpy_scalar(dtype: Any, data: Any) -> Scalar | complex:
    """``np.float64(0.5)`` as pickled: a dtype and its bytes, returned as a Python number."""
    if not (isinstance(dtype, _NumpyDtype) and isinstance(data, bytes)):
        raise ValueError("malformed numpy scalar")
    if len(data) != dtype.dtype.itemsize:
        raise ValueError(f"numpy scalar of {dtype.dtype} has {len(data)} bytes")
    return np.frombuffer(data, dtype=dtype.dtype)[0].item()


@dataclass(frozen=True, slots=True)
class _NdarrayType:
    """Stand-in for ``numpy.ndarray``: only ever ``_reconstruct``'s first argument."""

    __setstate__ = refuse_state

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY = _NdarrayType()


class PickledArray:
    """The array ``_reconstruct`` starts and one ``BUILD`` fills; ``array`` is None until then."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if self.array is not None:
            raise ValueError("BUILD gave a numpy array its state twice")
        self.array = _array_from_state(state)

    def __repr__(self) -> str:
        return "a numpy array"


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> PickledArray:
    """``numpy._core.multiarray._reconstruct`` exactly as ``ndarray.__reduce__`` calls it."""
    if not (cls is _NDARRAY and shape == (0,) and typecode == b"b"):
        raise ValueError(
            f"_reconstruct({cls!r:.40}, {shape!r:.40}, {typecode!r:.40}) is not how numpy "
            "pickles an array"
        )
    return PickledArray()


def _array_from_state(state: Any) -> np.ndarray:
    """``(1, shape, dtype, is_fortran, raw)``, checked before any byte is used."""
    if not (isinstance(state, tuple) and len(state) == 5 and type(state[0]) is int):
        raise ValueError(f"unexpected numpy array state {state!r:.80}")
    version, shape, dtype, fortran, raw = state
    if not (
        version == 1
        and are_counts(shape)
        and len(shape) <= MAX_DIMS
        and isinstance(dtype, _NumpyDtype)
        and isinstance(fortran, bool)
        and isinstance(raw, bytes)
    ):
        raise ValueError(f"unexpected numpy array state {state!r:.80}")
    expected = math.prod(shape) * dtype.dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"a numpy array of shape {list(shape)!r:.80} and dtype {dtype.dtype} needs "
            f"{expected:,} bytes, its state holds {len(raw):,}"
        )
    return np.frombuffer(raw, dtype.dtype).reshape(shape, order="F" if fortran else "C")


NUMPY_FUNCTIONS: dict[tuple[str, str], Callable[..., Any]] = {
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
}
NUMPY_STAND_INS: dict[tuple[str, str], Any] = {("numpy", "ndarray"): _NDARRAY}
