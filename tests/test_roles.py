"""roles.role_of's quick pre-check never changes a role the rules' patterns give."""

from __future__ import annotations

import itertools
import random

from diffai.roles import _RULES, role_of

#: Pieces of names: every rule's words, near misses, digits, empty segments, newlines.
_PIECES = (
    "optim", "optimizer", "optimizer_state_dict", "optimizer_states", "state", "0", "12",
    "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "step", "steps",
    "rng_state", "torch_rng_state", "cuda_rng", "random_state", "generator_state", "xrngx",
    "callbacks", "callback", "loops", "lr_schedulers", "scheduler_state_dict", "schedulers",
    "early_stopping", "trainer_state", "grad_scaler", "amp_scaler_state", "scaler_state_dict",
    "num_batches_tracked", "global_step", "iteration", "n_averaged", "num_updates",
    "running_mean", "running_var", "moving_mean", "moving_variance", "position_ids",
    "token_type_ids", "inv_freq", "masked_bias", "cos_cached", "sin_cached", "betas",
    "relative_position_index", "attn_mask", "_float_tensor", "alphas_cumprod",
    "alphas_cumprod_prev", "attn", "bias", "weight", "c_attn", "layers", "", "\n", "x\n",
    "step\n", "bias\n", "Running_mean", "stepx",
)  # fmt: skip


def _by_the_patterns(name: str) -> str:
    return next((role for role, pattern in _RULES if pattern.search(name)), "weight")


def test_every_short_name_gets_the_role_its_patterns_give() -> None:
    for size in (1, 2):
        for pieces in itertools.product(_PIECES, repeat=size):
            for joiner in (".", "", "_"):
                name = joiner.join(pieces)
                assert role_of(name) == _by_the_patterns(name), repr(name)


def test_random_longer_names_get_the_role_their_patterns_give() -> None:
    chooser = random.Random(16)
    for _ in range(50_000):
        name = ".".join(chooser.choice(_PIECES) for _ in range(chooser.randint(3, 7)))
        assert role_of(name) == _by_the_patterns(name), repr(name)
