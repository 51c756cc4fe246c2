"""Merge verification: does MERGED hold BASE + ΔW for every module the adapter touches?

Per module one streaming pass over base W, merged M and the expected update D
(ΔW from the factors; a saved module's S − W) gives, in float64,

    error = ‖M − W − D‖_F,   max |M − W − D|,   ‖D‖_F,   ‖M − W‖_F.

A correct merge stored in M's dtype is off by at most its rounding, u·‖W + D‖ (u the
unit roundoff: 2⁻²⁴ f32, 2⁻¹¹ f16, 2⁻⁸ bf16), plus the merge's own arithmetic, so
it passes when error ≤ MERGE_RTOL·‖D‖ + 2u‖W + D‖. Statuses, in this order:
``unverifiable`` (‖D‖ ≤ 2u‖W + D‖: no merged file in that dtype can show it; past
that bound some element's update exceeds half its ulp, so a merge must move it);
``not_merged`` (M equals W bit for bit: the fuse did not take effect); ``merged``;
``mismatch`` (M moved, but not by ΔW: merged twice, with another scale, another
adapter); and ``missing`` (MERGED lacks the tensor or has another shape).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from diffai.adapters.folder import Adapter, AdapterModel, adapter_of
from diffai.adapters.models import aligned_chunks, base_weight, delta_ref
from diffai.adapters.section import config_record
from diffai.model import Model, TensorRef

MERGE_RTOL = 1e-2
UNIT_ROUNDOFF = {"f64": 2.0**-53, "f32": 2.0**-24, "f16": 2.0**-11, "bf16": 2.0**-8}
FAILED = ("not_merged", "mismatch", "missing")


@dataclass
class _Sums:
    error: float = 0.0
    max_error: float = 0.0
    delta: float = 0.0
    moved: float = 0.0
    target: float = 0.0

    def add(self, base: np.ndarray, merged: np.ndarray, delta: np.ndarray) -> None:
        moved = merged - base
        error = moved - delta
        target = base + delta
        self.error += float(error @ error)
        self.max_error = max(self.max_error, float(np.abs(error).max(initial=0.0)))
        self.delta += float(delta @ delta)
        self.moved += float(moved @ moved)
        self.target += float(target @ target)


def merge_verification(base: Model, merged: Model, model: AdapterModel) -> dict[str, Any]:
    adapter = adapter_of(model)
    records = [_lora(base, merged, adapter, name) for name in adapter.modules]
    records += [_saved(base, merged, adapter, name) for name in adapter.saved]
    return {
        "mode": "merge_verification",
        "configs": {"baseline": None, "candidate": None, "adapter": config_record(adapter)},
        "base": base.path,
        "merged": merged.path,
        "modules": records,
        "saved_modules": list(adapter.saved),
        "depth": [],
        "merge": _totals(records),
    }


def _lora(base: Model, merged: Model, adapter: Adapter, name: str) -> dict[str, Any]:
    module = adapter.modules[name]
    weight = base_weight(base, adapter, name, module.shape)
    delta = delta_ref(module)
    return _verified(name, weight, merged.tensors.get(name), lambda: _chunks(delta))


def _saved(base: Model, merged: Model, adapter: Adapter, name: str) -> dict[str, Any]:
    saved = adapter.saved[name]
    weight = base_weight(base, adapter, name, saved.shape)

    def deltas() -> Iterator[np.ndarray]:
        return (s - w for s, w in aligned_chunks(saved, weight))

    return _verified(name, weight, merged.tensors.get(name), deltas)


def _chunks(ref: TensorRef) -> Iterator[np.ndarray]:
    return (chunk for (chunk,) in aligned_chunks(ref))


def _verified(
    name: str,
    weight: TensorRef,
    merged: TensorRef | None,
    deltas: Callable[[], Iterator[np.ndarray]],
) -> dict[str, Any]:
    record: dict[str, Any] = {"weight": name, "dtype": merged.dtype if merged else None}
    if merged is None or merged.shape != weight.shape:
        return {**record, "status": "missing", **dict.fromkeys(_FIGURES)}
    sums = _Sums()
    for (w, m), d in zip(aligned_chunks(weight, merged), deltas(), strict=True):
        sums.add(w, m, d)
    return {**record, **_judged(sums, UNIT_ROUNDOFF.get(merged.dtype))}


_FIGURES = ("delta_norm", "merged_delta_norm", "error", "relative_error", "max_abs_error",
            "tolerance")  # fmt: skip


def _judged(sums: _Sums, roundoff: float | None) -> dict[str, Any]:
    delta, error = math.sqrt(sums.delta), math.sqrt(sums.error)
    rounding = (roundoff or 0.0) * math.sqrt(sums.target)
    tolerance = MERGE_RTOL * delta + 2 * rounding
    figures = dict(zip(_FIGURES, (
        delta, math.sqrt(sums.moved), error, error / delta if delta else None, sums.max_error,
        tolerance,
    ), strict=True))  # fmt: skip
    return {"status": _status(sums, delta, error, rounding, tolerance), **figures}


def _status(sums: _Sums, delta: float, error: float, rounding: float, tolerance: float) -> str:
    if delta <= 2 * rounding and delta > 0.0:  # then even a correct merge may equal W
        return "unverifiable"
    if sums.moved == 0.0 and delta > 0.0:
        return "not_merged"
    return "merged" if error <= tolerance else "mismatch"


def _totals(records: list[dict[str, Any]]) -> dict[str, Any]:
    def named(*statuses: str) -> list[str]:
        return [r["weight"] for r in records if r["status"] in statuses]

    return {
        "checked": len(records),
        "merged": len(named("merged")),
        "failed": named(*FAILED),
        "unverifiable": named("unverifiable"),
    }
