"""A LoRA module as two factors, and what follows from them without forming ΔW.

Each module's update, in its base weight's layout and flattened to a matrix
(rows: the weight's first axis; a conv kernel's other axes joined), is

    ΔW = s · L · R,   L: m x r,  R: r x n,

with L = lora_B and R = lora_A (conv kernels flattened); when the base weight is
stored transposed (``fan_in_fan_out``, GPT-2's Conv1D, and embeddings) ΔW = s·(BA)ᵀ, so
L = Aᵀ and R = Bᵀ. ``docs/analyses.md`` ("Adapters") gives the closed forms below.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from diffai.model import CHUNK_ELEMENTS, TensorRef


@dataclass(frozen=True)
class LoraModule:
    module: str  # the module's name in the base model, e.g. model.layers.0.self_attn.q_proj
    a: TensorRef
    b: TensorRef
    rank: int
    alpha: float
    scale: float
    transposed: bool
    shape: tuple[int, ...]  # ΔW's shape: the base weight's

    @property
    def weight_name(self) -> str:
        return f"{self.module}.weight"

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def columns(self) -> int:
        return math.prod(self.shape[1:])

    def left(self) -> np.ndarray:
        """L (m x r) in float64."""
        if self.transposed:
            return _float64(self.a).reshape(self.rank, -1).T
        return _float64(self.b).reshape(-1, self.rank)

    def right(self) -> np.ndarray:
        """R (r x n) in float64."""
        if self.transposed:
            return _float64(self.b).reshape(-1, self.rank).T
        return _float64(self.a).reshape(self.rank, -1)

    def blocks(self) -> Iterator[np.ndarray]:
        """ΔW in C order, as blocks of whole rows (float64, about ``CHUNK_ELEMENTS`` each)."""
        left, right = self.left(), self.right()
        rows = max(1, CHUNK_ELEMENTS // max(self.columns, 1))
        for start in range(0, self.rows, rows):
            yield (self.scale * (left[start : start + rows] @ right)).reshape(-1)


def _float64(ref: TensorRef) -> np.ndarray:
    return np.asarray(ref.array(), dtype=np.float64)


# --- closed forms ------------------------------------------------------------------------


def frobenius(module: LoraModule) -> float:
    """‖ΔW‖_F = |s| · ‖R_L R_Rᵀ‖_F, from the QR factors of L and Rᵀ (no m x n matrix)."""
    return abs(module.scale) * _product_norm(module.left(), module.right())


def difference_norm(first: LoraModule, second: LoraModule) -> float:
    """‖ΔW₂ − ΔW₁‖_F: the difference is [s₂L₂, −s₁L₁]·[R₂; R₁], a product of rank r₁ + r₂."""
    left = np.hstack([second.scale * second.left(), -first.scale * first.left()])
    right = np.vstack([second.right(), first.right()])
    return _product_norm(left, right)


def inner_product(first: LoraModule, second: LoraModule) -> float:
    """⟨ΔW₁, ΔW₂⟩ = s₁s₂ Σ (L₁ᵀL₂) ⊙ (R₁R₂ᵀ): two r₁ x r₂ Gram matrices."""
    grams = (first.left().T @ second.left()) * (first.right() @ second.right().T)
    return first.scale * second.scale * float(grams.sum())


def moments(module: LoraModule, norm: float) -> tuple[float, float]:
    """Mean and population std of ΔW's elements: Σ ΔW = s·(1ᵀL)(R1), Σ ΔW² = ‖ΔW‖² (given)."""
    count = module.rows * module.columns
    total = module.scale * float(module.left().sum(axis=0) @ module.right().sum(axis=1))
    mean = total / count
    variance = norm**2 / count - mean**2
    return mean, math.sqrt(max(variance, 0.0))


def _product_norm(left: np.ndarray, right: np.ndarray) -> float:
    """‖L R‖_F as ‖R₁ R₂ᵀ‖_F with L = Q₁R₁, Rᵀ = Q₂R₂: the Q factors are orthonormal."""
    r_left = np.linalg.qr(left, mode="r")
    r_right = np.linalg.qr(right.T, mode="r")
    return float(np.linalg.norm(r_left @ r_right.T))
