"""Evaluation-metric rules: the candidate's metrics against a floor and against the baseline's.

Decisions a reviewer can rely on:
- a metric in neither file is a misspelt name, not a result: ``PolicyError``,
  naming both files and the nearest key they have;
- a metric missing from one file (an evaluation that crashed; with only the
  candidate's file given, a crash cannot be told from a typo), or not a finite
  number there, fails its checks with a message naming the file and the key: a
  gate never passes on data it could not read;
- ``max_relative_degradation`` with a baseline of exactly 0 cannot form a
  fraction; any worsening then fails, and no worsening passes;
- a rule that needs a file nobody named (neither the policy nor the command
  line) is a configuration error, ``PolicyError``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from diffai.errors import PolicyError
from diffai.policy.checks import (
    Check,
    Status,
    at_most,
    limit_percent,
    make_check,
    outcome,
    percent,
)
from diffai.policy.model import MetricRule, MetricsPolicy

Metrics = Mapping[str, Any]
#: What ``lookup`` returns for a key the file does not have (``None`` is a value: null).
MISSING = object()


class MetricsFile(dict[str, Any]):
    """Metric values read from a file; ``source`` (the path as given) names it in messages."""

    def __init__(self, values: Mapping[str, Any], *, source: str) -> None:
        super().__init__(values)
        self.source = source


class _Unusable(Exception):
    """A metric value a rule cannot use; its checks fail with this message."""


def lookup(values: Metrics, key: str) -> Any:
    """``values[key]``, where dots reach into nested mappings; a literal dotted key wins."""
    if key in values:
        return values[key]
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        inner = values.get(".".join(parts[:cut]))
        if isinstance(inner, Mapping):
            found = lookup(inner, ".".join(parts[cut:]))
            if found is not MISSING:
                return found
    return MISSING


def metric_checks(
    policy: MetricsPolicy, baseline: Metrics | None, candidate: Metrics | None
) -> list[Check]:
    """One check per limit a rule sets, in the order of the policy file."""
    require_known_metrics(policy, baseline, candidate)
    checks = []
    for index, rule in enumerate(policy.rules):
        for limit_name, judge in LIMIT_CHECKS.items():
            limit = getattr(rule, limit_name)
            if limit is not None:
                _require_files(rule, index, limit_name, baseline, candidate)
                status, observed, text = _judged(judge, rule, limit, baseline, candidate)
                name = f"regression_test.metrics.rules[{index}].{limit_name}"
                check = make_check(name, rule.severity, status, text, observed, limit)
                checks.append({**check, "metric": rule.metric})
    return checks


def require_known_metrics(
    policy: MetricsPolicy, baseline: Metrics | None, candidate: Metrics | None
) -> None:
    """Raise ``PolicyError`` for a rule whose metric is in neither metrics file."""
    if baseline is None or candidate is None:
        return
    for index, rule in enumerate(policy.rules):
        if lookup(baseline, rule.metric) is MISSING and lookup(candidate, rule.metric) is MISSING:
            raise PolicyError(_unknown_metric(index, rule.metric, baseline, candidate))


def _unknown_metric(index: int, metric: str, baseline: Metrics, candidate: Metrics) -> str:
    import difflib  # here: only a misspelt metric needs it

    names = [
        _file_label(values, side)
        for values, side in ((baseline, "baseline"), (candidate, "candidate"))
    ]
    keys = sorted(set(dotted_keys(baseline)) | set(dotted_keys(candidate)))
    nearest = difflib.get_close_matches(metric, keys, n=1)
    hint = f"did you mean {nearest[0]}?" if nearest else f"they have {', '.join(keys[:10])}"
    return (
        f"regression_test.metrics.rules[{index}].metric: {metric!r} is in neither "
        f"{names[0]} nor {names[1]}; {hint}"
    )


def dotted_keys(values: Metrics, prefix: str = "") -> list[str]:
    """Every key a rule can name, nested mappings joined with dots (``eval.accuracy``)."""
    keys = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        keys += dotted_keys(value, f"{name}.") if isinstance(value, Mapping) else [name]
    return keys


def worst_relative_drop(
    policy: MetricsPolicy, baseline: Metrics | None, candidate: Metrics | None
) -> float | None:
    """The largest worsening / |baseline| over the rules' metrics (negative: all improved)."""
    drops = []
    for rule in policy.rules:
        try:
            before = _number(baseline, rule.metric, "baseline")
            after = _number(candidate, rule.metric, "candidate")
        except _Unusable:
            continue
        if before != 0:
            drops.append(_worsening(rule, before, after) / abs(before))
    return max(drops, default=None)


def _require_files(
    rule: MetricRule,
    index: int,
    limit_name: str,
    baseline: Metrics | None,
    candidate: Metrics | None,
) -> None:
    """A limit that needs a file nobody named (policy or command line) is a configuration error."""
    needed = {"candidate": candidate}
    if limit_name != "threshold":
        needed["baseline"] = baseline
    for side, values in needed.items():
        if values is None:
            raise PolicyError(
                f"regression_test.metrics.rules[{index}] ({rule.metric}) needs the {side}'s "
                f"metrics: set regression_test.metrics.{side} or pass --metrics-{side}"
            )


def _number(values: Metrics | None, key: str, side: str) -> float:
    where = _file_label(values, side)
    found = MISSING if values is None else lookup(values, key)
    if found is MISSING:
        raise _Unusable(f"{key} is missing from {where}")
    if isinstance(found, bool) or not isinstance(found, (int, float)):
        from diffai.policy.schema import shown  # here: a default policy needs no schema

        raise _Unusable(f"{key} in {where} is {shown(found)}, not a number")
    if not math.isfinite(found):
        raise _Unusable(f"{key} in {where} is {found}, not a finite number")
    return float(found)


def _file_label(values: Metrics | None, side: str) -> str:
    source = getattr(values, "source", None)
    return f"the {side} metrics ({source})" if source else f"the {side} metrics"


def _worsening(rule: MetricRule, before: float, after: float) -> float:
    """How much worse the candidate is, in the metric's units (negative: it improved)."""
    return before - after if rule.greater_is_better else after - before


Outcome = tuple[Status, float | None, str]
Judge = Callable[[MetricRule, float, Metrics | None, Metrics | None], Outcome]


def _judged(
    judge: Judge, rule: MetricRule, limit: float, base: Metrics | None, cand: Metrics | None
) -> Outcome:
    try:
        return judge(rule, limit, base, cand)
    except _Unusable as exc:
        return "fail", None, f"{exc}; the rule cannot pass without it"


def _threshold(
    rule: MetricRule, limit: float, _: Metrics | None, candidate: Metrics | None
) -> Outcome:
    after = _number(candidate, rule.metric, "candidate")
    if rule.greater_is_better:
        ok, bound, side = at_most(limit, after), "floor", "below"
    else:
        ok, bound, side = at_most(after, limit), "ceiling", "above"
    verdict = f"within the {bound}" if ok else f"{side} the {bound}"
    return outcome(ok), after, f"{rule.metric} = {after:g}, {verdict} {limit:g}"


def _change(rule: MetricRule, before: float, after: float) -> str:
    return f"{rule.metric} {before:g} → {after:g}"


def _degradation(
    rule: MetricRule, limit: float, base: Metrics | None, cand: Metrics | None
) -> Outcome:
    before = _number(base, rule.metric, "baseline")
    after = _number(cand, rule.metric, "candidate")
    worse = _worsening(rule, before, after)
    if worse <= 0:
        return "pass", worse, f"{_change(rule, before, after)}: no worse than the baseline"
    ok = at_most(worse, limit)
    verdict = "within" if ok else "more than"
    text = f"{_change(rule, before, after)}: worse by {worse:g}, {verdict} the allowed {limit:g}"
    return outcome(ok), worse, text


def _relative(
    rule: MetricRule, limit: float, base: Metrics | None, cand: Metrics | None
) -> Outcome:
    before = _number(base, rule.metric, "baseline")
    after = _number(cand, rule.metric, "candidate")
    worse = _worsening(rule, before, after)
    change = _change(rule, before, after)
    if worse <= 0:
        improvement = worse / abs(before) if before else 0.0
        return "pass", improvement, f"{change}: no worse than the baseline"
    if before == 0:
        return "fail", None, f"{change}: worse than a baseline of 0, which no relative limit allows"
    fraction = worse / abs(before)
    ok = at_most(fraction, limit)
    verdict = "within" if ok else "more than"
    text = f"{change}: worse by {percent(fraction)}, {verdict} the allowed {limit_percent(limit)}"
    return outcome(ok), fraction, text


LIMIT_CHECKS: dict[str, Judge] = {
    "threshold": _threshold,
    "max_degradation": _degradation,
    "max_relative_degradation": _relative,
}
