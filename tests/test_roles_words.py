"""roles.py's spelled-out word lists keep the patterns they replaced, and the pre-check
built from them never hides a match."""

from __future__ import annotations

import itertools
import re

from diffai.roles import _RULES, _TRAINING, _TRAINING_SECTIONS, role_of

#: training_state's pattern as it was written by hand before its sections were listed.
_TRAINING_BEFORE = re.compile(
    r"^(callbacks?|loops|lr_schedulers?|(lr_)?schedulers?(_state(_dict)?)?|"
    r"early_stopping|trainer_state|(grad_|amp_)scaler(_state(_dict)?)?|scaler_state(_dict)?)\."
)
_AROUND = ("", "x", "_", ".", "\n", ".x", "s", "_state", "_dict", "lr_", "0.")


def _near(section: str) -> list[str]:
    cut = [section[:i] for i in range(len(section))]
    return [*cut, *(a + section + b for a, b in itertools.product(_AROUND, repeat=2))]


def test_the_listed_sections_match_what_the_old_pattern_matched() -> None:
    for section in _TRAINING_SECTIONS:
        for name in _near(section) + [n + ".w" for n in _near(section)]:
            assert bool(_TRAINING.search(name)) == bool(_TRAINING_BEFORE.search(name)), name


def test_the_pre_check_never_hides_a_section() -> None:
    for section in _TRAINING_SECTIONS:
        for name in _near(section):
            by_patterns = next((r for r, p in _RULES if p.search(name)), "weight")
            assert role_of(name) == by_patterns, repr(name)
