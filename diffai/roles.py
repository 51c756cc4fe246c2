"""What a tensor is for, decided once from its name: every analysis and policy rule asks here.

A training checkpoint holds much besides the model's weights: BatchNorm's
running statistics, step counters, the RNG state, optimizer moments, scheduler
and callback state. Only weights are learned, so only their change tells how
training went; judging the rest as weights gives false alarms (a counter going
0 → 100 is not an exploding gradient, Adam's moments are not drift).

Roles, first rule that matches the dotted name (docs/statistics.md lists them):

- ``optimizer_state``: under a first segment starting ``optim``
  (``optimizer_state_dict``, ``optimizer_states.0``), an ``optimizer….state.``
  anywhere, a bare optimizer state dict's ``state.<n>.<exp_avg|…|step>``, or a
  leaf Adam/SGD writes (``exp_avg``, ``momentum_buffer`` …);
- ``rng_state``: a first segment naming a random generator's state (``rng_state``,
  ``torch_rng_state``, ``cuda_rng_state`` …);
- ``training_state``: under a first segment for the training loop's own state
  (``callbacks``, ``loops``, ``lr_schedulers``, ``scheduler_state_dict`` …);
- ``counter``: a leaf that counts steps (``num_batches_tracked``, ``global_step`` …);
- ``buffer``: a leaf a module keeps but does not learn (``running_mean``,
  ``running_var``, Keras's ``moving_mean`` and ``moving_variance``, ``position_ids``,
  ``inv_freq``, GPT-2's ``attn.bias`` mask …);
- ``weight``: everything else (parameters: weights, biases, embeddings, norms).

One role no name shows: ``constant``, a value a graph holds as a constant that is
not learned (an ONNX ``Constant`` node's shape, axes or epsilon). Only a reader
can tell, so it gives the tensor a role hint (``TensorRef.role_hint``), which
wins over the name; ``graph_constant_hint`` says which graph constants get it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal

from diffai import _columns

Role = Literal[
    "weight", "buffer", "counter", "rng_state", "optimizer_state", "training_state", "constant"
]
ROLES: tuple[Role, ...] = (
    "weight", "buffer", "counter", "rng_state", "optimizer_state", "training_state", "constant",
)  # fmt: skip

#: What ``load_state_dict`` takes: the tensors whose names and shapes a loader depends on.
MODEL_ROLES: frozenset[Role] = frozenset({"weight", "buffer", "counter"})

#: Checkpoint-level state lives under top-level keys (``optimizer_state_dict``, Lightning's
#: ``callbacks``); matching those segments deeper would take a model's own ``scaler`` or
#: ``state`` module for training state and exempt it from the structural checks.
#: Each rule's words are listed once, here: its pattern and the literal pre-check
#: (``_may_match_a_rule``) are both built from them.
_OPTIMIZER_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer")
_RNG_WORDS = ("rng", "random_state", "generator_state")
#: Every first segment ``training_state`` takes, spelled out (a regular language this small
#: is its list): Lightning's and trainers' loop, scheduler, scaler and callback state.
_TRAINING_SECTIONS = (
    "callback", "callbacks", "loops", "early_stopping", "trainer_state",
    "scheduler", "schedulers", "scheduler_state", "schedulers_state", "scheduler_state_dict",
    "schedulers_state_dict", "lr_scheduler", "lr_schedulers", "lr_scheduler_state",
    "lr_schedulers_state", "lr_scheduler_state_dict", "lr_schedulers_state_dict",
    "grad_scaler", "grad_scaler_state", "grad_scaler_state_dict",
    "amp_scaler", "amp_scaler_state", "amp_scaler_state_dict",
    "scaler_state", "scaler_state_dict",
)  # fmt: skip
_COUNTER_LEAVES = (
    "num_batches_tracked", "global_step", "step", "steps", "iteration", "n_averaged",
    "num_updates",
)  # fmt: skip
_BUFFER_LEAVES = (
    "running_mean", "running_var", "moving_mean", "moving_variance", "position_ids",
    "token_type_ids", "inv_freq", "masked_bias", "cos_cached", "sin_cached",
    "relative_position_index", "attn_mask", "_float_tensor", "alphas_cumprod",
    "alphas_cumprod_prev", "betas",
)  # fmt: skip
_GPT2_MASK = "attn.bias"  # GPT-2's causal mask, saved beside its attention weights


def _either(words: tuple[str, ...]) -> str:
    return "|".join(map(re.escape, words))


_OPTIMIZER = re.compile(
    r"^optim[^.]*\."  # optimizer_state_dict., optimizer_states.0., optim.
    r"|(^|\.)optimizer[^.]*\.state\."  # a trainer's optimizer.state.<n>...
    rf"|^state\.\d+\.({_either((*_OPTIMIZER_MOMENTS, 'step'))})$"  # a bare state dict's leaf
    rf"|(^|\.)({_either(_OPTIMIZER_MOMENTS)})$"
)
_RNG = re.compile(rf"^[^.]*({_either(_RNG_WORDS)})[^.]*(\.|$)")
_TRAINING = re.compile(rf"^({_either(_TRAINING_SECTIONS)})\.")
_COUNTER = re.compile(rf"(^|\.)({_either(_COUNTER_LEAVES)})$")
_BUFFER = re.compile(rf"(^|\.)({_either(_BUFFER_LEAVES)})$|(^|\.){re.escape(_GPT2_MASK)}$")

#: First match wins: ``optimizer_state_dict.state.0.step`` is optimizer state, not a counter.
_RULES: tuple[tuple[Role, re.Pattern[str]], ...] = (
    ("optimizer_state", _OPTIMIZER),
    ("rng_state", _RNG),
    ("training_state", _TRAINING),
    ("counter", _COUNTER),
    ("buffer", _BUFFER),
)


#: Value dtypes of learned tensors: a graph constant of another dtype indexes or shapes.
_FLOATING = frozenset({"f64", "f32", "f16", "bf16", "f8_e4m3", "f8_e5m2", "c64", "c128"})


#: What a name must hold for some rule to match (each rule's pattern needs one of these), so
#: most weights skip the patterns: the five searches cost 13 us a name (100,000 names: 1.3 s),
#: these checks 0.4 us. Leaves are the last segment, with the newline ``$`` also matches.
_RULE_LEAVES = frozenset(
    leaf + end
    for leaf in (*_OPTIMIZER_MOMENTS, *_COUNTER_LEAVES, *_BUFFER_LEAVES)
    for end in ("", "\n")
)
#: First segments: _TRAINING's, and _OPTIMIZER's bare state dict (``state.<n>.<leaf>``).
_RULE_HEADS = frozenset({"state", *_TRAINING_SECTIONS})
_RULE_ENDS = (_GPT2_MASK, _GPT2_MASK + "\n")
_LONGEST_LEAF = max(map(len, _RULE_LEAVES))
#: _RNG's words, which its pattern looks for in the first segment.
_RNG_WORD_IN = re.compile(_either(_RNG_WORDS)).search


def _may_match_a_rule(name: str) -> bool:
    """False only when no pattern of ``_RULES`` can match ``name`` (tests/test_roles.py)."""
    return (
        name.rpartition(".")[2] in _RULE_LEAVES
        or "optim" in name  # _OPTIMIZER's first two branches (may_match_rows' word)
        or name.endswith(_RULE_ENDS)
        or _head_may_match(name.partition(".")[0])
    )


@lru_cache(maxsize=4096)
def _head_may_match(head: str) -> bool:
    """Whether a rule may match a name of this first segment: asked once a segment (a
    model has a few), the search for _RNG's words cost 0.2 us a name."""
    return head in _RULE_HEADS or _RNG_WORD_IN(head) is not None


def role_of(name: str, hint: Role | None = None) -> Role:
    """The role of the tensor called ``name`` (dotted, as the report names it), unless its
    reader knows better (``hint``).

    Most names no rule may match, told in 0.6 us; the patterns run only on the others, kept
    once a name. A cache of every name asked cost 1.5 us a new name at 100,000 names (its
    key and entry) and grew for the whole process."""
    if hint is not None:
        return hint
    return _by_the_rules(name) if _may_match_a_rule(name) else "weight"


def roles_of(names: list[str], hints: list[Role | None]) -> list[Role]:
    """``role_of`` of each name and hint, the pre-check in one C pass over the names
    (``_columns.may_match_rows``): 0.1 against 0.6 us a name at 100,000 names."""
    roles: list[Role] = ["weight"] * len(names)
    may_match = _columns.may_match_rows(
        names, _RULE_LEAVES, _LONGEST_LEAF, "optim", _RULE_ENDS, _head_may_match
    )
    for row in may_match:
        roles[row] = _by_the_rules(names[row])
    if hints.count(None) == len(hints):
        return roles
    return [role if hint is None else hint for role, hint in zip(roles, hints, strict=True)]


@lru_cache(maxsize=65536)
def _by_the_rules(name: str) -> Role:
    return next((role for role, pattern in _RULES if pattern.search(name)), "weight")


def graph_constant_hint(dtype: str, elements: int) -> Role | None:
    """The role hint of a tensor a graph holds as a constant node (ONNX ``Constant``).

    A floating-point tensor of more than one element is a weight the exporter froze
    into the graph (a scripted export puts every weight there: silero-vad's ONNX
    file has no initializers), so its name decides as for any tensor and the gate
    judges it; integers, booleans and single numbers are the graph's own constants.
    """
    return None if dtype in _FLOATING and elements > 1 else "constant"
