"""The check record every rule produces (``$defs/check`` in the report schema), and its wording."""

from __future__ import annotations

import math
from typing import Any, Literal

Status = Literal["pass", "fail", "skip"]
Check = dict[str, Any]

#: Relative slack when comparing with a limit, so a value written exactly at the limit
#: passes although binary floating point cannot represent it (0.90 − 0.89 > 0.01).
TOLERANCE = 1e-9


def make_check(
    rule: str,
    severity: str,
    status: Status,
    message: str,
    observed: Any,
    threshold: Any,
    **extra: Any,
) -> Check:
    return {
        "rule": rule,
        "severity": severity,
        "status": status,
        "message": message,
        "observed": json_number(observed),
        "threshold": threshold,
        **extra,
    }


def outcome(ok: bool) -> Status:
    return "pass" if ok else "fail"


def at_most(value: float, limit: float) -> bool:
    """``value <= limit``, counting a value equal to the limit within rounding as equal."""
    return value <= limit or math.isclose(value, limit, rel_tol=TOLERANCE, abs_tol=1e-12)


def json_number(value: Any) -> Any:
    """Strict JSON has no Infinity: an unbounded observation becomes null; the message says why."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def failed(checks: list[Check], severity: str | None = None) -> list[Check]:
    return [c for c in checks if c["status"] == "fail" and severity in (None, c["severity"])]


def percent(fraction: float) -> str:
    """A measured fraction as a percentage: ``140.2%``, ``2.01%``, ``0.0021%``."""
    value = fraction * 100
    return f"{value:.1f}%" if abs(value) >= 100 else f"{value:.3g}%"


def limit_percent(fraction: float) -> str:
    """A configured fraction as written: 0.05 -> ``5%``."""
    return f"{fraction * 100:g}%"


def tensors_text(count: int) -> str:
    return f"{count} tensor" if count == 1 else f"{count} tensors"
