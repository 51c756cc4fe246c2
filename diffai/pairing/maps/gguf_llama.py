"""``gguf-llama``: a llama.cpp GGUF file's tensor names as Hugging Face Llama names.

llama.cpp's ``convert_hf_to_gguf.py`` renames ``model.layers.0.self_attn.q_proj.weight``
to ``blk.0.attn_q.weight`` and so on, and permutes the rows of Q and K for its
interleaved rotary layout (``LlamaModel.permute``, K with the key/value head count).
This map renames the GGUF side back and undoes the permutation with the head counts
in the file's own metadata (``llama.attention.head_count``, ``head_count_kv``), so
each tensor pairs with the one it was converted from and the element-wise diff is the
conversion's own error (quantization, f16 rounding).

The names are a table here, not ``gguf.TensorNameMap``: diffai reads plain GGUF
without the ``gguf`` package, and the package maps many source names to each GGUF
name (every architecture's) where this needs the one Llama name back. The table is
``gguf-py``'s ``MODEL_TENSOR`` names for ``MODEL_ARCH.LLAMA`` (constants.py) and their
Hugging Face Llama counterparts (tensor_mapping.py); a test checks it against both.
Only ``general.architecture = llama`` (Llama, Mistral, and what llama.cpp converts as
they are): other architectures are not permuted, or are named otherwise.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from diffai.model import Model

if TYPE_CHECKING:
    from diffai.pairing.maps.rules import NameMap, Side

NAME = "gguf-llama"
ARCHITECTURE = "llama"

#: GGUF name outside the blocks -> Hugging Face module.
OUTSIDE = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
#: GGUF name in block N (``blk.N.``) -> Hugging Face module in ``model.layers.N.``.
IN_BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
#: Which heads llama.cpp permuted each of these by (``RotaryPermutation.from_metadata``).
ROTARY = {"attn_q": "query", "attn_k": "key"}


def name_map(side: Side, model: Model, other: Model) -> NameMap:
    """The same rules for every Llama GGUF file; the head counts come from its metadata."""
    # Here, not at the top: a run whose inputs no built-in map fits never needs the rules
    # and transforms (their dataclasses and patterns: 8 ms of every run's start).
    from diffai.pairing.maps.rules import NameMap, Rule
    from diffai.pairing.maps.transforms import RotaryPermutation

    outside = [
        Rule(re.compile(rf"{re.escape(gguf)}\.(weight|bias)"), rf"{hf}.\1", None, f"{gguf}.*")
        for gguf, hf in OUTSIDE.items()
    ]
    blocks = [
        Rule(
            re.compile(rf"blk\.([0-9]+)\.{gguf}\.(weight|bias)"),
            rf"model.layers.\1.{hf}.\2",
            RotaryPermutation(from_metadata=ROTARY[gguf]) if gguf in ROTARY else None,
            f"blk.N.{gguf}.*",
        )
        for gguf, hf in IN_BLOCK.items()
    ]
    return NameMap(NAME, "builtin", side, tuple(outside + blocks))


def applies(model: Model, other: Model) -> str | None:
    """Why this map fits ``model`` (a Llama GGUF file) against ``other`` (Hugging Face names)."""
    if model.format != "gguf" or model.scalars.get("general.architecture") != ARCHITECTURE:
        return None
    if other.format == "gguf" or not any(n.startswith("model.layers.") for n in other.tensors):
        return None
    return (
        f"a GGUF file of general.architecture {ARCHITECTURE!r} against Hugging Face "
        "Llama names (model.layers.*)"
    )
