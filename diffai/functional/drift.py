"""How one output moved between the models, accumulated run by run in float64.

Per output, over every element of every probe: ``max_abs`` and ``mean_abs`` of
c − b; ``relative_l2`` = ‖c − b‖₂ / ‖b‖₂ (null when ‖b‖₂ = 0); ``cosine`` of
the two as flat vectors (null when a norm is 0); ``mismatch_fraction``, the
elements where |c − b| > atol + rtol·|b| (Polygraphy's rule; equal values,
infinities included, never mismatch, a NaN always does). The sums take the
pairs finite on both sides; ``nan``/``inf`` count the rest per side.

A classification-like output (floats, two axes or more, a last axis of at least
two classes, and a name no recurrent state has) also gets, per row (all axes
but the last): ``top1_agreement``, the fraction of rows whose arg-max is the
same, and ``kl_divergence``, the mean KL(softmax(b) ‖ softmax(c)) in nats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diffai.dtypes import canonical_name
from diffai.functional.probes import STATE_NAMES


@dataclass
class Drift:
    """The running sums of one output; ``record()`` turns them into the report's fields."""

    name: str
    atol: float
    rtol: float
    shape: tuple[int, ...] = ()
    dtype: str = ""
    elements: int = 0
    finite: int = 0
    mismatches: int = 0
    max_abs: float = 0.0
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SUMS, 0.0))
    nonfinite: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NONFINITE, 0))
    rows: int = 0
    agreeing: int = 0
    kl_sum: float = 0.0

    def add(self, baseline: np.ndarray, candidate: np.ndarray) -> None:
        base, cand = baseline.astype(np.float64), candidate.astype(np.float64)
        if not self.elements:  # the first run's shape: later runs may hold fewer probes
            self.shape = tuple(baseline.shape)
            self.dtype = canonical_name(baseline.dtype) or str(baseline.dtype)
        self.elements += base.size
        for side, values in (("baseline", base), ("candidate", cand)):
            self.nonfinite[f"{side}_nan"] += int(np.isnan(values).sum())
            self.nonfinite[f"{side}_inf"] += int(np.isinf(values).sum())
        self._differences(base, cand)
        if self.classification(baseline):
            self._classes(base, cand)

    def _differences(self, base: np.ndarray, cand: np.ndarray) -> None:
        with np.errstate(invalid="ignore", over="ignore"):
            close = (base == cand) | (np.abs(cand - base) <= self.atol + self.rtol * np.abs(base))
        self.mismatches += int(close.size - close.sum())
        both = np.isfinite(base) & np.isfinite(cand)
        b, c = base[both], cand[both]
        delta = c - b
        self.finite += b.size
        if b.size:
            self.max_abs = max(self.max_abs, float(np.abs(delta).max()))
        for key, values in (("abs", np.abs(delta)), ("d2", delta * delta), ("b2", b * b)):
            self.sums[key] += float(values.sum())
        self.sums["c2"] += float((c * c).sum())
        self.sums["bc"] += float((b * c).sum())

    def classification(self, array: np.ndarray) -> bool:
        floats = array.dtype.kind == "f"
        return (
            floats
            and array.ndim >= 2
            and array.shape[-1] >= 2
            and not STATE_NAMES.search(self.name)
        )

    def _classes(self, base: np.ndarray, cand: np.ndarray) -> None:
        b = base.reshape(-1, base.shape[-1])
        c = cand.reshape(-1, cand.shape[-1])
        rows = np.isfinite(b).all(axis=1) & np.isfinite(c).all(axis=1)
        b, c = b[rows], c[rows]
        self.rows += b.shape[0]
        self.agreeing += int((b.argmax(axis=1) == c.argmax(axis=1)).sum())
        log_b, log_c = _log_softmax(b), _log_softmax(c)
        self.kl_sum += float((np.exp(log_b) * (log_b - log_c)).sum())

    def record(self) -> dict[str, Any]:
        norms = math.sqrt(self.sums["b2"]), math.sqrt(self.sums["c2"])
        error = math.sqrt(self.sums["d2"])
        record: dict[str, Any] = {
            "name": self.name, "shape": list(self.shape), "dtype": self.dtype,
            "elements": self.elements, "max_abs": self.max_abs,
            "mean_abs": self.sums["abs"] / self.finite if self.finite else None,
            "relative_l2": error / norms[0] if norms[0] else (0.0 if not error else None),
            "cosine": self.sums["bc"] / (norms[0] * norms[1]) if all(norms) else None,
            "mismatch_fraction": self.mismatches / self.elements if self.elements else 0.0,
            **self.nonfinite,
        }  # fmt: skip
        if self.rows:
            record["classes"] = self.shape[-1]
            record["top1_agreement"] = self.agreeing / self.rows
            record["kl_divergence"] = max(self.kl_sum / self.rows, 0.0)
        return record


SUMS = ("abs", "d2", "b2", "c2", "bc")
NONFINITE = ("baseline_nan", "baseline_inf", "candidate_nan", "candidate_inf")


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
