"""Deployment readiness: one explainable score, a risk level, blockers, and the policy's budgets.

readiness = Π (1 − pᵢ) over the penalty factors below, each listed in the
result with its reason, so a reviewer sees why a score is what it is. The
budgets of ``deployment_readiness`` in the policy are error-severity checks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from diffai.policy.checks import (
    Check,
    Status,
    at_most,
    failed,
    limit_percent,
    make_check,
    outcome,
)
from diffai.policy.model import DeploymentBudgets

Document = dict[str, Any]

ANOMALY_PENALTY = {"none": 0.0, "low": 0.05, "medium": 0.15, "high": 0.35, "critical": 1.0}
MIGRATION_PENALTY = {"easy": 0.0, "moderate": 0.1, "hard": 0.3}
PRECISION_PENALTY = {"none": 0.0, "minimal": 0.0, "low": 0.02, "moderate": 0.1, "high": 0.3}
CONVERGENCE_PENALTY = {"diverging": 0.3, "disrupted": 0.3, "unstable": 0.1}
FAILED_CHECK_PENALTY = {"error": 0.3, "warning": 0.1}

#: (analysis, field, penalty by value); a value not in the table costs nothing.
ANALYSIS_FACTORS = (
    ("anomaly_detection", "severity", ANOMALY_PENALTY),
    ("architecture_comparison", "migration", MIGRATION_PENALTY),
    ("quantization_analysis", "precision_loss", PRECISION_PENALTY),
    ("convergence_analysis", "status", CONVERGENCE_PENALTY),
)

#: readiness at or above each bound, best first; below the last: high risk.
RISK_BOUNDS = ((0.8, "low"), (0.5, "medium"))


def assess(budgets: DeploymentBudgets, document: Document, regression: list[Check]) -> Document:
    """The ``deployment_readiness`` section: score, risk, blockers, factors and budget checks."""
    factors = _analysis_factors(document) + _check_factors(regression)
    readiness = round(math.prod(1.0 - f["penalty"] for f in factors), 6)
    checks = budget_checks(budgets, document, readiness)
    return {
        "readiness": readiness,
        "risk": risk_of(readiness),
        "blockers": [c["message"] for c in failed(checks, "error")] + _critical(document),
        "factors": factors,
        "checks": checks,
    }


def risk_of(readiness: float) -> str:
    return next((risk for bound, risk in RISK_BOUNDS if readiness >= bound), "high")


def _analysis(document: Document, name: str) -> dict[str, Any]:
    return document.get("analyses", {}).get(name) or {"computed": False}


def _computed(analysis: dict[str, Any]) -> bool:
    return analysis.get("computed", True) is not False


def _analysis_factors(document: Document) -> list[dict[str, Any]]:
    factors = []
    for name, field, table in ANALYSIS_FACTORS:
        analysis = _analysis(document, name)
        value = analysis.get(field) if _computed(analysis) else None
        reason = f"{field} {value}" if value is not None else "not computed"
        penalty = table.get(value, 0.0)
        factors.append({"name": f"{name}.{field}", "penalty": penalty, "reason": reason})
    return factors


def _check_factors(checks: list[Check]) -> list[dict[str, Any]]:
    return [
        {"name": c["rule"], "penalty": FAILED_CHECK_PENALTY[c["severity"]], "reason": c["message"]}
        for c in failed(checks)
    ]


def _critical(document: Document) -> list[str]:
    """Critical anomalies block a release whatever the budgets say."""
    anomaly = _analysis(document, "anomaly_detection")
    findings = [f for f in anomaly.get("findings", ()) if f.get("severity") == "critical"]
    if findings:
        return [f"critical anomaly in {f['tensor']}: {f['kind']} ({f['detail']})" for f in findings]
    if anomaly.get("severity") == "critical":
        layers = ", ".join(anomaly.get("affected_layers", ())) or "unknown tensors"
        return [f"critical anomaly: {anomaly.get('type')} in {layers}"]
    return []


# --- budgets -------------------------------------------------------------------------------

Outcome = tuple[Status, Any, str]


def budget_checks(budgets: DeploymentBudgets, document: Document, readiness: float) -> list[Check]:
    checks = []
    for key, judge in BUDGETS.items():
        limit = getattr(budgets, key)
        if limit is not None and limit is not False:  # a budget of 0 (no growth) is checked
            status, observed, message = judge(limit, document, readiness)
            shown_limit = "none" if key == "require_no_anomalies" else limit
            rule = f"deployment_readiness.{key}"
            checks.append(make_check(rule, "error", status, message, observed, shown_limit))
    return checks


def _min_readiness(limit: float, _: Document, readiness: float) -> Outcome:
    ok = at_most(limit, readiness)
    verdict = "meets" if ok else "is below"
    return outcome(ok), readiness, f"readiness {readiness:.3g} {verdict} the minimum {limit:g}"


def _size_increase(limit: float, document: Document, _: float) -> Outcome:
    delta = _analysis(document, "memory_analysis").get("delta_mb")
    if delta is None:
        return "skip", None, "size change not measured (memory analysis not computed)"
    ok = at_most(delta, limit)
    verdict = "within" if ok else "more than"
    text = f"size changed by {_megabytes(delta)}, {verdict} the allowed +{limit:g} MB"
    return outcome(ok), delta, text


def _megabytes(delta: float) -> str:
    return f"{delta:+,.2f} MB" if abs(delta) >= 0.01 or delta == 0 else f"{delta * 1024:+.3g} KB"


def _parameter_increase(limit: float, document: Document, _: float) -> Outcome:
    before = document["summary"]["parameters_baseline"]
    after = document["summary"]["parameters_candidate"]
    growth = (after - before) / before if before else (math.inf if after else 0.0)
    ok = at_most(growth, limit)
    shown = f"{growth:+.2%}" if math.isfinite(growth) else "from none"
    verdict = "within" if ok else "more than"
    allowed = limit_percent(limit)
    text = f"parameters {before:,} → {after:,} ({shown}), {verdict} the allowed +{allowed}"
    return outcome(ok), growth, text


def _quantization_error(limit: float, document: Document, _: float) -> Outcome:
    analysis = _analysis(document, "quantization_analysis")
    if not _computed(analysis):
        return "skip", None, "quantization error not measured (analysis not computed)"
    if not analysis.get("detected"):
        return "pass", None, "no tensor changed dtype, so there is no quantization error"
    error = analysis.get("relative_error")
    if error is None:
        return "fail", None, "the relative error of the re-typed tensors could not be measured"
    ok = at_most(error, limit)
    verdict = "within" if ok else "above"
    return outcome(ok), error, f"quantization error {error:.3g}, {verdict} the allowed {limit:g}"


def _no_anomalies(_: bool, document: Document, __: float) -> Outcome:
    anomaly = _analysis(document, "anomaly_detection")
    if not _computed(anomaly):
        return "skip", None, "anomalies not checked (anomaly detection not computed)"
    severity = anomaly.get("severity", "none")
    if severity == "none":
        return "pass", severity, "no anomalies found"
    layers = ", ".join(anomaly.get("affected_layers", ()))
    text = f"anomalies found ({anomaly.get('type')}, severity {severity}): {layers}"
    return "fail", severity, text


BUDGETS: dict[str, Callable[[Any, Document, float], Outcome]] = {
    "min_readiness": _min_readiness,
    "max_size_increase_mb": _size_increase,
    "max_parameter_increase": _parameter_increase,
    "max_quantization_error": _quantization_error,
    "require_no_anomalies": _no_anomalies,
}
