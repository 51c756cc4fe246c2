"""quantization_analysis: what did a precision change cost and save?

Over the tensors whose dtype changed (same shape):
- compression = Σ candidate bytes / Σ baseline bytes;
- relative_error = sqrt(Σ‖c−b‖²) / sqrt(Σ‖b‖²), measured element by element;
- sqnr_db = 10·log10(Σ‖b‖² / Σ‖c−b‖²), the signal-to-quantization-noise ratio;
- precision_loss by relative_error: minimal ≤ 1e-3 (f16 casts, ~2e-4), low ≤ 1e-2
  (bf16, ~1.7e-3), moderate ≤ 1e-1, high above;
- speedup: an **estimate** for memory-bandwidth-bound inference, the whole
  model's baseline bytes / candidate bytes; compute-bound work may gain less.
A quantized tensor a reader dequantizes (PyTorch's qint8, quint8, qint32,
quint4x2, quint2x4) is compared by its dequantized values, with its stored
bytes (integers plus per-channel scales and zero points), so a float -> int8
model reads its true error and compression. Plain integer tensors (an export
keeping its scales in separate tensors) are compared as stored: their error reads high.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from diffai.analyses import columns
from diffai.analyses.common import ratio
from diffai.comparison import Comparison, TensorComparison
from diffai.layers import relative_change

PRECISION_BOUNDS = (("minimal", 1e-3), ("low", 1e-2), ("moderate", 1e-1))


def analyze(comparison: Comparison) -> dict[str, Any]:
    statuses = comparison.columns.statuses  # shared: a pass of its own took 9 ms
    retyped = columns.where_equal(comparison.tensors, statuses, "dtype_changed")
    base_bytes = sum(t.baseline.bytes for t in retyped if t.baseline)
    cand_bytes = sum(t.candidate.bytes for t in retyped if t.candidate)
    change, size, measured = relative_change(retyped)
    error = change / size if measured and size else (0.0 if measured and not change else None)
    return {
        "detected": bool(retyped),
        "compression": ratio(cand_bytes, base_bytes) if retyped else None,
        "relative_error": error,
        "sqnr_db": 20 * math.log10(1 / error) if error else None,
        "precision_loss": precision_loss(error) if retyped else "none",
        "speedup": _speedup(comparison) if retyped else None,
        "speedup_basis": "estimate: memory-bandwidth bound, baseline bytes / candidate bytes",
        "tensors": len(retyped),
        "conversions": _conversions(retyped),
    }


def precision_loss(relative_error: float | None) -> str:
    if relative_error is None:
        return "unknown"
    for label, bound in PRECISION_BOUNDS:
        if relative_error <= bound:
            return label
    return "high"


def _conversions(retyped: list[TensorComparison]) -> dict[str, int]:
    pairs = (
        f"{t.baseline.stored_dtype}->{t.candidate.stored_dtype}"
        for t in retyped
        if t.baseline and t.candidate
    )
    return dict(Counter(pairs))


def _speedup(comparison: Comparison) -> float | None:
    before = sum(ref.stored_bytes for ref in comparison.baseline.tensors.values())
    after = sum(ref.stored_bytes for ref in comparison.candidate.tensors.values())
    return ratio(before, after)
