"""Canonical dtype names (``f32``, ``bf16`` ...) and their numpy equivalents.

Every reader maps its own dtype spelling to these names, so outputs and
comparisons never depend on which format a tensor came from.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

NUMPY_DTYPES: dict[str, np.dtype] = {
    "f64": np.dtype(np.float64),
    "f32": np.dtype(np.float32),
    "f16": np.dtype(np.float16),
    "bf16": np.dtype(ml_dtypes.bfloat16),
    "f8_e4m3": np.dtype(ml_dtypes.float8_e4m3fn),
    "f8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
    "i64": np.dtype(np.int64),
    "i32": np.dtype(np.int32),
    "i16": np.dtype(np.int16),
    "i8": np.dtype(np.int8),
    "u64": np.dtype(np.uint64),
    "u32": np.dtype(np.uint32),
    "u16": np.dtype(np.uint16),
    "u8": np.dtype(np.uint8),
    "bool": np.dtype(np.bool_),
    "c64": np.dtype(np.complex64),
    "c128": np.dtype(np.complex128),
}

_NAMES_BY_DTYPE = {dtype: name for name, dtype in NUMPY_DTYPES.items()}


def numpy_dtype(name: str) -> np.dtype:
    """The little-endian numpy dtype for a canonical name."""
    return NUMPY_DTYPES[name]


def canonical_name(dtype: np.dtype) -> str | None:
    """The canonical name of a numpy dtype (either byte order); None if diffai cannot measure it."""
    return _NAMES_BY_DTYPE.get(np.dtype(dtype).newbyteorder("<"))


def is_complex(name: str) -> bool:
    return name in ("c64", "c128")
