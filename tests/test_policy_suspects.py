"""The switch rules run over the tensors ``_suspect`` admits, not over all of them: that is
only right while every offender of every rule is a suspect, which these tests hold it to."""

from __future__ import annotations

import itertools
from fnmatch import fnmatchcase
from functools import cache
from typing import Any

import pytest

from diffai.policy import default_policy
from diffai.policy.rules import (
    SWITCH_RULES,
    _globs_matcher,
    _suspect,
    _switch_check,
    scopes,
    tensor_checks,
)
from tests.test_policy_rules import tensor

STATUSES = ("unchanged", "changed", "added", "removed", "shape_changed", "dtype_changed", "renamed")
COSINES = (None, -1.0, 0.0, 0.4999, 0.5, 0.9999, 1.0)


@cache
def variants() -> list[dict[str, Any]]:
    """Tensors of every status, NaN/inf counts, cosine, role and size the rules look at."""
    found = []
    for status, nan, inf, baseline_nan, cosine, relative_l2, shape, role in itertools.product(
        STATUSES, (0, 2), (0, 1), (0, 1, 3), COSINES, (None, 0.0, 0.9),
        ((4, 4), (16, 16), (256,)), ("weight", "buffer", "optimizer_state"),
    ):  # fmt: skip
        record = tensor(
            f"t{len(found)}", status, relative_l2=relative_l2, cosine=cosine, nan=nan, inf=inf,
            baseline_nan=baseline_nan, shape=shape,
        )  # fmt: skip
        record["role"] = role
        if status == "renamed":
            record["rename"] = {"from": "old", "match": "exact", "confidence": 1.0}
        found.append(record)
    return found


@pytest.mark.parametrize("key", list(SWITCH_RULES))
def test_every_offender_of_a_switch_rule_is_a_suspect(key: str) -> None:
    offence = SWITCH_RULES[key].offence
    offenders = [t for t in variants() if offence(t)]
    assert offenders, "the variants must include offenders of every rule"
    assert [t["name"] for t in offenders if not _suspect(t)] == []


def test_a_quiet_tensor_is_no_suspect() -> None:
    """What most tensors of a fine-tune look like: the rules never need to look at them."""
    assert not _suspect(tensor("w", "changed", cosine=0.9999))
    assert not _suspect(tensor("w", "unchanged", relative_l2=0.0, cosine=1.0))


def test_the_switch_checks_over_the_suspects_are_those_over_every_tensor() -> None:
    tensors = variants()
    scope = scopes(default_policy().regression_test, tensors)[0]
    over_all = [_switch_check(scope, key, rule) for key, rule in SWITCH_RULES.items()]
    assert [c for c in tensor_checks([scope]) if c["rule"] in {c["rule"] for c in over_all}] == (
        over_all
    )


NAMES = ("a.num_batches_tracked", "num_batches_tracked", "x.num_batches_trackedx", "a\n.b", "a.b",
         "", "[x]", "w*", "encoder.layer.0.weight", "a?b", "ab", "a.bias")  # fmt: skip


GLOB_SETS = [(), ("*.num_batches_tracked",), ("*",), ("*[x]",), ("*.b", "a*"), ("",), ("*\\*",),
             ("a?b", "*.bias"), ("*w*",), ("[a]*",), ("*.weight", "*.bias", "enc*")]  # fmt: skip


@pytest.mark.parametrize(
    "globs",
    GLOB_SETS,
)
def test_ignore_globs_match_the_names_fnmatchcase_matches(globs: tuple[str, ...]) -> None:
    """Suffix globs go to ``str.endswith``, the others to one regex: the same names."""
    matches = _globs_matcher(globs)
    for name in NAMES:
        assert bool(matches(name)) == any(fnmatchcase(name, glob) for glob in globs), name
