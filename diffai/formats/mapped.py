"""Files mapped into memory read-only, as plain ndarrays of bytes.

A ``np.memmap`` is an ndarray subclass whose every slice runs Python code
(``__array_finalize__``): 5.4 us per tensor view against 0.5 us for a plain
ndarray, a tenth of a second per 10,000 tensors. The plain view keeps the map
alive through its ``base``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def map_bytes(path: Path, offset: int = 0, length: int | None = None) -> np.ndarray:
    """``length`` bytes of ``path`` from ``offset`` (to the end when None), mapped read-only."""
    shape = None if length is None else (length,)
    return np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=shape).view(np.ndarray)
