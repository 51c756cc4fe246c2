"""Tensor drift rules: one check per rule per scope, naming every tensor that broke it.

A scope is the top level or one override. Each tensor not ignored belongs to
the first override whose ``match`` glob matches its name, else to the top
level; the checks of a scope carry its rule path
(``regression_test.overrides[0].max_relative_change``) and its severity.

Which tensors a rule judges depends on their role (``diffai.roles``): the drift
rules and ``fail_on_scrambled`` judge the policy's ``roles`` (weights by default),
the structural switches what a state-dict loader loads (weights, buffers,
counters), ``fail_on_nan``/``fail_on_inf`` every tensor.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from diffai.change import SCRAMBLED_COSINE, is_scrambled
from diffai.policy.checks import (
    Check,
    Status,
    at_most,
    limit_percent,
    make_check,
    outcome,
    percent,
    tensors_text,
)
from diffai.policy.model import RegressionPolicy, TensorRules
from diffai.roles import MODEL_ROLES

Tensor = dict[str, Any]
#: Names listed in a message; the check's ``tensors`` list has them all.
NAMES_IN_MESSAGE = 5


@dataclass(frozen=True)
class Scope:
    """A set of tensors checked against the same rules, under one rule path."""

    prefix: str
    match: str | None
    rules: TensorRules
    tensors: list[Tensor]
    drift_roles: frozenset[str] = frozenset({"weight"})

    def judged(self, judges: str) -> list[Tensor]:
        """The scope's tensors a rule of this kind judges: ``drift``, ``model`` or ``all``."""
        roles = {"drift": self.drift_roles, "model": MODEL_ROLES}.get(judges)
        return [t for t in self.tensors if roles is None or role(t) in roles]

    @property
    def label(self) -> str:
        return "" if self.match is None else f" matching '{self.match}'"

    def check(
        self, key: str, status: Status, message: str, observed: Any, limit: Any, **extra: Any
    ) -> Check:
        rule = f"{self.prefix}.{key}" if key else self.prefix
        return make_check(rule, self.rules.severity, status, message, observed, limit, **extra)


def scopes(policy: RegressionPolicy, tensors: Iterable[Tensor]) -> list[Scope]:
    """The top-level scope, then one per override, each with the tensors it governs."""
    roles = frozenset(policy.roles)
    top = Scope("regression_test", None, policy.rules, [], roles)
    overrides = [
        Scope(f"regression_test.overrides[{i}]", o.match, o.rules, [], roles)
        for i, o in enumerate(policy.overrides)
    ]
    ignored = _globs_matcher(policy.ignore)
    overriding = [(_globs_matcher((scope.match or "",)), scope) for scope in overrides]
    if not overriding:
        top.tensors.extend(_kept(list(tensors), ignored))
        return [top]
    for tensor in tensors:
        name = tensor["name"]
        if not ignored(name):
            owner = next((s for match, s in overriding if match(name)), top)
            owner.tensors.append(tensor)
    return [top, *overrides]


def _kept(tensors: list[Tensor], ignored: Callable[[str], object]) -> Iterable[Tensor]:
    """The tensors whose names are not ignored, iterated in C (no Python frame a tensor when
    ``ignored`` is C's too): at 100,000 tensors cProfile put the loop at a quarter of
    evaluate."""
    names = map(_NAME, tensors)
    return itertools.compress(tensors, map(operator.not_, map(ignored, names)))


_NAME = operator.itemgetter("name")


def _globs_matcher(globs: Iterable[str]) -> Callable[[str], object]:
    """Whether a name matches any of ``globs`` (as ``fnmatchcase`` says), tested once per
    tensor: at 100,000 tensors ``any(fnmatchcase(...))`` took 0.35 s (cProfile). A glob
    that is ``*`` and a literal (the default ``*.num_batches_tracked``) is a suffix, for
    ``str.endswith`` (0.1 µs a name here, the regex 0.3 µs); the rest one compiled regex."""
    globs = list(globs)
    suffixes = tuple(glob[1:] for glob in globs if _is_suffix(glob))
    patterns = [fnmatch.translate(glob) for glob in globs if not _is_suffix(glob)]
    if not patterns:
        return operator.methodcaller("endswith", suffixes)
    regex = re.compile("|".join(patterns)).match
    return lambda name: name.endswith(suffixes) or regex(name)


def _is_suffix(glob: str) -> bool:
    return glob.startswith("*") and _WILDCARD.search(glob, 1) is None


_WILDCARD = re.compile(r"[*?\[]")


def tensor_checks(all_scopes: list[Scope]) -> list[Check]:
    checks = []
    for scope in all_scopes:
        if scope.match is not None and not scope.tensors:
            checks.append(_unmatched(scope))
            continue
        numeric = [key for key in NUMERIC_RULES if getattr(scope.rules, key) is not None]
        checks += [_numeric_check(scope, key, NUMERIC_RULES[key]) for key in numeric]
        suspects = dataclasses.replace(scope, tensors=_suspects(scope.tensors))
        checks += [_switch_check(suspects, key, rule) for key, rule in SWITCH_RULES.items()]
    return checks


def drift_ratio(all_scopes: list[Scope]) -> float | None:
    """The worst ``relative_l2 / max_relative_change`` over tensors with a finite, positive pair."""
    ratios = [
        value / scope.rules.max_relative_change
        for scope in all_scopes
        if scope.rules.max_relative_change
        for tensor in scope.judged("drift")
        if (value := _relative_change(tensor)) is not None and math.isfinite(value)
    ]
    return max(ratios, default=None)


def _unmatched(scope: Scope) -> Check:
    text = f"match '{scope.match}' matches no checked tensor; its rules were not applied"
    return scope.check("", "skip", text, 0, None, tensors=[])


# --- numeric thresholds ------------------------------------------------------------------


def _diff(tensor: Tensor) -> dict[str, Any] | None:
    return tensor.get("diff")


def role(tensor: Tensor) -> str:
    return tensor.get("role", "weight")


def _own_basis(diff: dict[str, Any]) -> bool:
    """Whether the tensor's own baseline is the basis of its relative change (not negligible)."""
    return diff.get("relative_basis", "self") == "self"


def _moved(diff: dict[str, Any]) -> bool:
    return (diff.get("l2") or 0.0) > 0 and diff.get("changed", 0) > 0


def _relative_change(tensor: Tensor) -> float | None:
    """``relative_change`` (diffai.change); with nothing to measure against, a move is unbounded."""
    diff = _diff(tensor)
    if diff is None or diff.get("l2") is None:
        return None
    value = diff.get("relative_change", diff.get("relative_l2"))
    if value is not None:
        return value
    return math.inf if _moved(diff) else 0.0


def _cosine(tensor: Tensor) -> float | None:
    """Cosine similarity; a tensor that moved to all zeros has lost its direction: 0.

    A negligible or all-zero baseline has no direction worth keeping: such a tensor is
    judged by its relative change alone, so here it is not measured.
    """
    diff = _diff(tensor)
    if diff is None or diff.get("l2") is None or not _own_basis(diff):
        return None
    if diff.get("cosine") is not None:
        return diff["cosine"]
    return 0.0 if _moved(diff) else 1.0


def _max_abs(tensor: Tensor) -> float | None:
    diff = _diff(tensor)
    return None if diff is None else diff.get("max_abs")


def _relative_text(value: float) -> str:
    return percent(value) if math.isfinite(value) else "changed from all zeros"


_BASIS_NOTES = {"module": " of its module's scale", "model": " of the model's scale"}


def _relative_note(tensor: Tensor) -> str:
    """Where the relative change is not the tensor's own, say what it is measured against."""
    diff = _diff(tensor) or {}
    return _BASIS_NOTES.get(diff.get("relative_basis", "self"), "")


@dataclass(frozen=True)
class NumericRule:
    """How to measure a tensor against one threshold and say the outcome."""

    measure: Callable[[Tensor], float | None]
    lower_is_worse: bool
    show: Callable[[float], str]
    show_limit: Callable[[float], str]
    broke: str  # "{limit}" is replaced by the shown limit
    kept: str
    worst_word: str = "worst"
    note: Callable[[Tensor], str] = lambda tensor: ""  # after the worst value

    def breaks(self, value: float, limit: float) -> bool:
        return not (at_most(limit, value) if self.lower_is_worse else at_most(value, limit))


NUMERIC_RULES: dict[str, NumericRule] = {
    "max_relative_change": NumericRule(
        measure=_relative_change,
        lower_is_worse=False,
        show=_relative_text,
        show_limit=limit_percent,
        broke="changed by more than {limit}",
        kept="changed by at most {limit}",
        worst_word="largest",
        note=_relative_note,
    ),
    "min_cosine_similarity": NumericRule(
        measure=_cosine,
        lower_is_worse=True,
        show=lambda value: f"{value:.6g}",
        show_limit=lambda limit: f"{limit:g}",
        broke="fell below cosine similarity {limit}",
        kept="kept cosine similarity {limit} or more",
        worst_word="lowest",
    ),
    "max_abs_diff": NumericRule(
        measure=_max_abs,
        lower_is_worse=False,
        show=lambda value: f"{value:.4g}",
        show_limit=lambda limit: f"{limit:g}",
        broke="changed by more than {limit} in some element",
        kept="changed by at most {limit} per element",
        worst_word="largest",
    ),
}


def _numeric_check(scope: Scope, key: str, rule: NumericRule) -> Check:
    limit = getattr(scope.rules, key)
    judged = scope.judged("drift")
    measured = [(t, v) for t in judged if (v := rule.measure(t)) is not None]
    measured.sort(key=lambda item: item[1], reverse=not rule.lower_is_worse)
    broken = [t["name"] for t, value in measured if rule.breaks(value, limit)]
    message = _numeric_message(scope, rule, limit, measured, broken)
    worst = measured[0][1] if measured else None
    return scope.check(key, outcome(not broken), message, worst, limit, tensors=broken)


def _numeric_message(
    scope: Scope,
    rule: NumericRule,
    limit: float,
    measured: list[tuple[Tensor, float]],
    broken: list[str],
) -> str:
    if not measured:
        return f"no tensor{scope.label} has values to compare"
    tensor, value = measured[0]
    worst = f"{tensor['name']}, {rule.show(value)}{rule.note(tensor)}"
    if broken:
        what = rule.broke.format(limit=rule.show_limit(limit))
        return f"{tensors_text(len(broken))}{scope.label} {what} (worst: {worst})"
    what = rule.kept.format(limit=rule.show_limit(limit))
    return f"all {tensors_text(len(measured))}{scope.label} {what} ({rule.worst_word}: {worst})"


# --- switches ------------------------------------------------------------------------------


def _gained(kind: str) -> Callable[[Tensor], int]:
    """How many more NaN (or inf) values the candidate has than the baseline at this tensor."""

    def gained(tensor: Tensor) -> int:
        candidate, baseline = tensor.get("candidate"), tensor.get("baseline")
        if candidate is None:
            return 0
        return max(0, candidate[kind] - (baseline[kind] if baseline else 0))

    return gained


def _has_status(status: str) -> Callable[[Tensor], int]:
    return lambda tensor: int(tensor["status"] == status)


def _sides(field: str) -> Callable[[Tensor], str]:
    def show(tensor: Tensor) -> str:
        before, after = tensor["baseline"][field], tensor["candidate"][field]
        return f"{tensor['name']} {before} → {after}"

    return show


def _renamed(tensor: Tensor) -> str:
    rename = tensor["rename"]
    return f"{rename['from']} → {tensor['name']} ({rename['match']})"


@dataclass(frozen=True)
class SwitchRule:
    """A yes/no rule: which tensors offend it and how to name them."""

    offence: Callable[[Tensor], int]  # 0: fine; more: how badly (sorts the worst first)
    checked_when: bool  # the switch value that turns the check on
    verb: str  # after "1 tensor" / "no tensor"
    plural_verb: str
    detail: Callable[[Tensor], str]
    judges: str = "all"  # which tensors: "all", "model" (what a loader loads) or "drift"
    status: str | None = None  # the status it flags, for a rule that flags one


def _name(tensor: Tensor) -> str:
    return tensor["name"]


def _gained_detail(kind: str, label: str) -> Callable[[Tensor], str]:
    return lambda tensor: f"{tensor['name']} (+{_gained(kind)(tensor)} {label})"


def _gain_rule(kind: str, label: str) -> SwitchRule:
    verb = f"gained {label} values"
    return SwitchRule(_gained(kind), True, verb, verb, _gained_detail(kind, label))


def _status_rule(
    status: str, verb: str, plural_verb: str, detail: Callable[[Tensor], str]
) -> SwitchRule:
    return SwitchRule(
        _has_status(status), False, verb, plural_verb, detail, judges="model", status=status
    )


def _scrambled(tensor: Tensor) -> int:
    diff, side = _diff(tensor), tensor.get("baseline")
    if diff is None or side is None:
        return 0
    change = diff.get("relative_change", diff.get("relative_l2"))
    basis = diff.get("relative_basis", "self")
    return int(is_scrambled(side["shape"], diff.get("cosine"), change, basis))


def _scrambled_detail(tensor: Tensor) -> str:
    diff = tensor["diff"]
    cosine = "n/a" if diff["cosine"] is None else f"{diff['cosine']:.3g}"
    return f"{tensor['name']} (cosine {cosine}, changed {_relative_text(_relative_change(tensor))})"


_SCRAMBLE_RULE = SwitchRule(
    _scrambled,
    True,
    "was replaced or scrambled",
    "were replaced or scrambled",
    _scrambled_detail,
    judges="drift",
)


SWITCH_RULES: dict[str, SwitchRule] = {
    "fail_on_nan": _gain_rule("nan", "NaN"),
    "fail_on_inf": _gain_rule("inf", "inf"),
    "fail_on_scrambled": _SCRAMBLE_RULE,
    "allow_added": _status_rule("added", "was added", "were added", _name),
    "allow_removed": _status_rule("removed", "was removed", "were removed", _name),
    "allow_shape_change": _status_rule(
        "shape_changed", "changed shape", "changed shape", _sides("shape")
    ),
    "allow_dtype_change": _status_rule(
        "dtype_changed", "changed dtype", "changed dtype", _sides("dtype")
    ),
    "allow_rename": _status_rule("renamed", "was renamed", "were renamed", _renamed),
}


#: The statuses some switch rule flags; the others ("changed", "unchanged") none does.
_FLAGGED_STATUSES = frozenset(rule.status for rule in SWITCH_RULES.values() if rule.status)
_NO_COUNTS = {"nan": 0, "inf": 0}


def _suspects(tensors: list[Tensor]) -> list[Tensor]:
    """The tensors some switch rule could flag, in order: every offender of every rule in
    ``SWITCH_RULES`` is among them (tests/test_policy_suspects.py holds it to that).

    One pass with the cheapest tests, so the rules run over the few tensors left: at
    100,000 tensors one generator per rule over all of them took 1.0 s (cProfile).
    """
    return [t for t in tensors if _suspect(t)]


def _suspect(tensor: Tensor) -> bool:
    """A flagged status, NaN or inf gained, or a diff whose cosine is missing or below the
    scramble bound (``is_scrambled`` is false otherwise). A candidate without NaN or inf
    gained none: its baseline is not read (switch checks at 100,000 tensors, interleaved:
    1.16 -> 0.99 us a tensor, best of 7 at load 4)."""
    if tensor["status"] in _FLAGGED_STATUSES:
        return True
    candidate = tensor.get("candidate")
    if candidate is not None and (candidate["nan"] or candidate["inf"]):
        baseline = tensor.get("baseline") or _NO_COUNTS
        if candidate["nan"] > baseline["nan"] or candidate["inf"] > baseline["inf"]:
            return True
    diff = tensor.get("diff")
    if diff is None:
        return False
    cosine = diff.get("cosine")
    return cosine is None or cosine < SCRAMBLED_COSINE


def _switch_check(scope: Scope, key: str, rule: SwitchRule) -> Check:
    value = getattr(scope.rules, key)
    offenders = sorted(
        (t for t in scope.judged(rule.judges) if rule.offence(t)), key=rule.offence, reverse=True
    )
    checked = value == rule.checked_when
    status = "skip" if not checked else "fail" if offenders else "pass"
    message = _switch_message(scope, key, value, rule, offenders)
    worst = rule.offence(offenders[0]) if offenders else 0
    observed = worst if rule.checked_when else len(offenders)
    names = [t["name"] for t in offenders] if checked else []
    return scope.check(key, status, message, observed, value, tensors=names)


def _switch_message(
    scope: Scope, key: str, value: bool, rule: SwitchRule, offenders: list[Tensor]
) -> str:
    if offenders:
        details = [rule.detail(t) for t in offenders[:NAMES_IN_MESSAGE]]
        more = len(offenders) - len(details)
        listed = ", ".join(details) + (f" and {more} more" if more else "")
        verb = rule.verb if len(offenders) == 1 else rule.plural_verb
        found = f"{tensors_text(len(offenders))}{scope.label} {verb}: {listed}"
    else:
        found = f"no tensor{scope.label} {rule.verb}"
    if value != rule.checked_when:
        return f"not checked ({key} is {str(value).lower()}); {found}"
    return found
