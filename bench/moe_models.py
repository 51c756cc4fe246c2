"""The MoE suite's files: a mixture-of-experts pair and the 8x8 pairs the slope is taken on.

- the MoE pair (issue 16): 48 blocks, each with attention q/k/v/o (64 x 64), a router
  (64 experts x 64), 64 experts of three matrices (w1, w3: 32 x 64, w2: 64 x 32) and two
  norms (64): 9,552 f32 tensors, 2 x 77 MiB with the headers; the candidate is the
  baseline plus noise of relative L2 1e-3 on every tensor (``perf_models.Values``);
- ``count`` tensors of 8 x 8 f32 with the same names' pattern, for 10,000 and 100,000:
  the marginal cost per tensor is the slope of whole-process time between them.

Files are kept between runs, as the perf suite's are.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from perf_models import SEED, Spec, Values, expected_size, write_pair

BLOCKS, EXPERTS, HIDDEN, EXPERT_HIDDEN = 48, 64, 64, 32
#: Tensors per block of the 8 x 8 models: the MoE block's count.
BLOCK_TENSORS = 4 + 1 + 3 * EXPERTS + 2


def moe_spec(blocks: int = BLOCKS, experts: int = EXPERTS) -> Spec:
    spec: Spec = []
    for i in range(blocks):
        prefix = f"model.layers.{i}"
        for part in ("q_proj", "k_proj", "v_proj", "o_proj"):
            spec.append((f"{prefix}.self_attn.{part}.weight", (HIDDEN, HIDDEN)))
        spec.append((f"{prefix}.block_sparse_moe.gate.weight", (experts, HIDDEN)))
        for e in range(experts):
            expert = f"{prefix}.block_sparse_moe.experts.{e}"
            spec.append((f"{expert}.w1.weight", (EXPERT_HIDDEN, HIDDEN)))
            spec.append((f"{expert}.w2.weight", (HIDDEN, EXPERT_HIDDEN)))
            spec.append((f"{expert}.w3.weight", (EXPERT_HIDDEN, HIDDEN)))
        spec.append((f"{prefix}.input_layernorm.weight", (HIDDEN,)))
        spec.append((f"{prefix}.post_attention_layernorm.weight", (HIDDEN,)))
    return spec


def tiny_spec(count: int) -> Spec:
    """``count`` tensors of 8 x 8, named as the MoE model's are (blocks of as many tensors)."""
    blocks = -(-count // BLOCK_TENSORS)
    names = [name for name, _ in moe_spec(blocks)][:count]
    return [(name, (8, 8)) for name in names]


def _build(
    folder: Path, stem: str, spec: Spec, seed: int, echo: Callable[[str], None]
) -> tuple[Path, Path]:
    pair = folder / f"{stem}-base.safetensors", folder / f"{stem}-cand.safetensors"
    size = expected_size(spec, np.dtype(np.float32))
    if not all(path.exists() and path.stat().st_size == size for path in pair):
        echo(f"writing {pair[0].name} and {pair[1].name} ({len(spec):,} tensors) ...")
        write_pair(pair, spec, Values(seed))
    return pair


def build_moe(folder: Path, echo: Callable[[str], None]) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return _build(folder, "moe-9552", moe_spec(), SEED + 16, echo)


def build_tiny(folder: Path, count: int, echo: Callable[[str], None]) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return _build(folder, f"tiny-{count}", tiny_spec(count), SEED + 17, echo)
