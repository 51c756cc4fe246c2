"""Where a tensor sits in a block-stacked model: which block, and which component of it.

A decoder-only transformer repeats one block (``model.layers.17``) dozens of
times; a reviewer asks *how deep* a change went and *in what part* of the
block: attention, MLP, the mixture-of-experts' experts, the norms. This module
answers from the name alone, once, for every renderer (the PR comment's depth
profile, the HTML report's heatmap).

- **block**: the first all-digit segment of the dotted name (``layers.17`` -> 17), and
  the **stack** is what precedes it (``model.layers``); a name without one is outside
  the blocks (embeddings, the final norm, the head) and has no block.
- **component**: the first rule of ``_RULES`` that matches a segment. Norms come before
  attention (``post_attention_layernorm`` is a norm) and experts before MLP
  (``mlp.experts.3`` is an expert).

Not to be confused with ``diffai.roles``: a role says what a tensor is *for*
(weight, buffer, counter, optimizer state); a component says *where* it is.
"""

from __future__ import annotations

import re
from functools import cache
from typing import NamedTuple

COMPONENTS: tuple[str, ...] = (
    "embedding", "attention", "mlp", "experts", "norm", "head", "other",
)  # fmt: skip

#: The components that repeat inside a block, in the order the profile shows them.
BLOCK_COMPONENTS: tuple[str, ...] = ("attention", "mlp", "experts", "norm", "other")

#: How each component is named in outputs (a person reads "MLP", not "mlp").
COMPONENT_LABELS = {
    "embedding": "embeddings",
    "attention": "attention",
    "mlp": "MLP",
    "experts": "experts",
    "norm": "norms",
    "head": "head",
    "other": "other",
}

_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("experts", re.compile(r"expert|moe|router")),
    ("norm", re.compile(r"norm|^ln(_?\w+)?$|^ln\d")),
    ("attention", re.compile(r"attn|attention|^[qkvo]_proj$|^qkv|^(query|key|value)$")),
    ("mlp", re.compile(r"mlp|ffn|feed_?forward|^fc\d*$|^(gate|up|down)_proj$|^c_fc$|^w[123]$")),
    ("embedding", re.compile(r"embed|^wte$|^wpe$")),
    ("head", re.compile(r"^(lm_)?head$|classifier|^score$|^output$")),
)


class Placement(NamedTuple):
    """A named tuple, not a frozen dataclass: made once per tensor name, it was a fifth of
    placing 100,000 names."""

    stack: str | None  # "model.layers"; None outside the blocks
    block: int | None
    component: str


@cache
def placement(name: str) -> Placement:
    """The stack, block index and component of the tensor ``name``."""
    segments = name.split(".")
    component = component_of(segments[:-1] or segments)
    for digit, part in enumerate(segments):
        if part.isdigit():
            return Placement(".".join(segments[:digit]), int(part), component)
    return Placement(None, None, component)


def component_of(segments: list[str]) -> str:
    """The first rule that matches any module segment (the leaf, ``weight``, says nothing).

    That is the segment whose own first rule comes first, so each distinct segment is
    matched once: a mixture-of-experts model's 100,000 module names hold a few hundred
    segments, and matching every name's segments took 1.8 s of the PR comment.
    """
    first = min(map(_first_rule, segments))
    return _RULES[first][0] if first < len(_RULES) else "other"


@cache
def _first_rule(segment: str) -> int:
    """The index of the first rule that matches ``segment``, ``len(_RULES)`` when none does."""
    lowered = segment.lower()
    return next((i for i, (_, rule) in enumerate(_RULES) if rule.search(lowered)), len(_RULES))
