"""What a run concluded, for every renderer: identical or not, the checks, the verdict.

In the CI log: one line for the verdict, one per failed check with its tensors.

verdict: fail — 1 error check failed, 1 warning check failed
  error regression_test.allow_removed: 2 tensors were removed: fc2.bias, fc2.weight
  warning deployment_readiness.min_readiness: readiness 0.41 is below 0.8

The markdown comment shows the same failed checks; a log reader should not need
the comment or ``--report`` to learn why a gate failed. Each line goes through
``one_line``: messages and tensor names come from untrusted files.
"""

from __future__ import annotations

import re
from typing import Any

from diffai.text import one_line

#: Tensor names shown per check; the report's ``tensors`` list has every one.
SHOWN_TENSORS = 10


def all_checks(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The regression checks, then the deployment budgets, as the report orders them."""
    return document["regression_test"]["checks"] + document["deployment_readiness"].get(
        "checks", []
    )


def is_identical(summary: dict[str, int]) -> bool:
    """No compared tensor changed in any way and no scalar differs (the report's summary)."""
    unchanged = summary["unchanged"] == summary["tensors_compared"]
    return unchanged and not summary["scalars_changed"]


def failed_checks(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [check for check in all_checks(document) if check["status"] == "fail"]


def verdict_lines(document: dict[str, Any]) -> list[str]:
    checks, failed = all_checks(document), failed_checks(document)
    return [f"verdict: {document['verdict']} — {_tally(checks, failed)}"] + [
        one_line(_check_line(check)) for check in failed
    ]


def _tally(checks: list[dict[str, Any]], failed: list[dict[str, Any]]) -> str:
    """``2 error checks failed, 1 warning check failed``; without failures, what passed."""
    counts = [
        _count(sum(1 for c in failed if c["severity"] == severity), f"{severity} check", "failed")
        for severity in ("error", "warning")
    ]
    if any(counts):
        return ", ".join(count for count in counts if count)
    skipped = sum(1 for c in checks if c["status"] == "skip")
    passed = _count(len(checks) - skipped, "check", "passed") or "no check failed"
    return f"{passed}, {skipped} skipped" if skipped else passed


def _count(count: int, noun: str, verb: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'} {verb}" if count else ""


def _names(message: str, name: str) -> bool:
    """Whether ``message`` names ``name`` whole: ``fc.weight`` is not in ``fc.weight_orig``."""
    return re.search(rf"(?<![\w.]){re.escape(name)}(?![\w.])", message) is not None


def _check_line(check: dict[str, Any]) -> str:
    line = f"  {check['severity']} {check['rule']}: {check['message']}"
    kind = "outputs" if "outputs" in check else "tensors"  # a functional check names outputs
    tensors = check.get(kind, [])
    if all(_names(check["message"], name) for name in tensors):  # the message has them all
        return line
    shown = ", ".join(tensors[:SHOWN_TENSORS])
    hidden = len(tensors) - SHOWN_TENSORS
    more = f" and {hidden} more (every one in --report)" if hidden > 0 else ""
    return f"{line}; {kind}: {shown}{more}"
