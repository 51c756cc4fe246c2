"""Canonical dtype names (``f32``, ``bf16`` ...) and their numpy equivalents.

Every reader maps its own dtype spelling to these names, so outputs and
comparisons never depend on which format a tensor came from.

``bf16`` and the ``f8`` types are ml_dtypes', whose import is 8-9 ms of every run's
start (``-X importtime``): it is imported the first time a name, a dtype or
``NUMPY_DTYPES`` asks for one of them, so a model without them never pays it.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import numpy as np

#: The names whose types numpy has.
_NUMPY_OWN = {
    "f64": np.float64, "f32": np.float32, "f16": np.float16, "i64": np.int64,
    "i32": np.int32, "i16": np.int16, "i8": np.int8, "u64": np.uint64, "u32": np.uint32,
    "u16": np.uint16, "u8": np.uint8, "bool": np.bool_, "c64": np.complex64,
    "c128": np.complex128,
}  # fmt: skip
#: The names whose types ml_dtypes adds: the attribute of ml_dtypes holding each, and its
#: bytes per element (what a header's sizes are checked by, without the import).
_ML_DTYPES = {
    "bf16": ("bfloat16", 2), "f8_e4m3": ("float8_e4m3fn", 1), "f8_e5m2": ("float8_e5m2", 1),
}  # fmt: skip
#: Every canonical name, in the order ``NUMPY_DTYPES`` lists them (membership is asked of
#: this, which needs no import).
NAMES = (
    "f64", "f32", "f16", "bf16", "f8_e4m3", "f8_e5m2", "i64", "i32", "i16", "i8", "u64",
    "u32", "u16", "u8", "bool", "c64", "c128",
)  # fmt: skip

#: The dtypes known so far: numpy's own, and ml_dtypes' once imported (``_numpy_dtypes``).
_KNOWN: dict[str, np.dtype] = {name: np.dtype(kind) for name, kind in _NUMPY_OWN.items()}
_NAMES_BY_DTYPE = {dtype: name for name, dtype in _KNOWN.items()}


def __getattr__(name: str) -> Any:
    """``NUMPY_DTYPES``: every canonical name's little-endian numpy dtype (PEP 562: built,
    with ml_dtypes' import, by the first module that reads it)."""
    if name == "NUMPY_DTYPES":
        return _numpy_dtypes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _numpy_dtypes() -> dict[str, np.dtype]:
    """Every name's dtype, ml_dtypes' types included (imported here), also made known
    to ``numpy_dtype`` and ``canonical_name``."""
    import ml_dtypes

    added = {name: np.dtype(getattr(ml_dtypes, kind)) for name, (kind, _) in _ML_DTYPES.items()}
    _KNOWN.update(added)
    _NAMES_BY_DTYPE.update({dtype: name for name, dtype in added.items()})
    return {name: _KNOWN[name] for name in NAMES}


def numpy_dtype(name: str) -> np.dtype:
    """The little-endian numpy dtype for a canonical name."""
    try:
        return _KNOWN[name]
    except KeyError:  # one of ml_dtypes' not imported yet (or no canonical name)
        return _numpy_dtypes()[name]


def itemsize(name: str) -> int:
    """Bytes per element of a canonical name's dtype (ml_dtypes' without its import)."""
    known = _ML_DTYPES.get(name)
    return known[1] if known else numpy_dtype(name).itemsize


def canonical_name(dtype: np.dtype) -> str | None:
    """The canonical name of a numpy dtype (either byte order); None if diffai cannot measure it."""
    little = np.dtype(dtype).newbyteorder("<")
    name = _NAMES_BY_DTYPE.get(little)
    if name is None and "ml_dtypes" in sys.modules:  # only then can one of its types exist
        _numpy_dtypes()
        name = _NAMES_BY_DTYPE.get(little)
    return name


def is_complex(name: str) -> bool:
    return name in ("c64", "c128")
