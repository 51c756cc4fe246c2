"""The merge-verification gate: a merged model whose merge did not take effect fails.

Always on when ``diffai BASE MERGED --adapter DIR`` verified a merge (the report's
``adapter.merge``): a module that is ``not_merged``, ``mismatch`` or ``missing`` fails
``regression_test.adapter_merge`` (error); one whose update is below the merged
dtype's rounding fails ``regression_test.adapter_merge_verifiable`` (warning).
"""

from __future__ import annotations

from typing import Any

from diffai.policy.checks import Check, make_check, outcome, tensors_text

#: What the named tensors do, for one tensor and for several, then what follows.
Problem = tuple[str, str, str]
NOT_MERGED: Problem = ("does not hold", "do not hold", " BASE + ΔW")


def adapter_checks(document: dict[str, Any]) -> list[Check]:
    merge = document.get("adapter", {}).get("merge")
    if merge is None:
        return []
    failed, unverifiable = merge["failed"], merge["unverifiable"]
    checks = [_check("adapter_merge", "error", failed, NOT_MERGED, merge)]
    if unverifiable:
        reason: Problem = ("has", "have", " an update below the merged dtype's rounding")
        checks.append(_check("adapter_merge_verifiable", "warning", unverifiable, reason, merge))
    return checks


def _check(
    rule: str, severity: str, names: list[str], problem: Problem, merge: dict[str, Any]
) -> Check:
    message = (
        f"{tensors_text(len(names))} of the merged model {problem[len(names) != 1]}"
        f"{problem[2]}: {', '.join(names)}"
        if names
        else _all_passed(merge)
    )
    return make_check(f"regression_test.{rule}", severity, outcome(not names), message,
                      len(names), 0, tensors=names)  # fmt: skip


def _all_passed(merge: dict[str, Any]) -> str:
    """No module failed; "all merged" only when every one shows it (an update below the
    rounding passes this check unproven, and the warning names it)."""
    checked, merged = merge["checked"], merge["merged"]
    if merged == checked:
        return f"all {checked} adapter tensors are merged"
    return (
        f"{merged} of {checked} adapter tensors are merged, {checked - merged} unverifiable "
        "(an update below the merged dtype's rounding)"
    )
