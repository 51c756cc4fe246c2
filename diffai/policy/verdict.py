"""``evaluate``: a policy applied to a report document gives its gate sections and the verdict."""

from __future__ import annotations

from typing import Any, Literal

from diffai.policy import metrics, readiness, rules
from diffai.policy.adapter import adapter_checks
from diffai.policy.checks import Check, failed
from diffai.policy.model import Policy, RegressionPolicy

Verdict = Literal["pass", "warn", "fail"]
VERDICTS: dict[str, Verdict] = {"error": "fail", "warning": "warn", "none": "pass"}


def evaluate(
    policy: Policy,
    document: dict[str, Any],
    metrics_baseline: metrics.Metrics | None = None,
    metrics_candidate: metrics.Metrics | None = None,
) -> dict[str, Any]:
    """``regression_test``, ``deployment_readiness``, ``policy`` and ``verdict`` for the report.

    The metrics are the loaded files (``load_metrics``); which files to load,
    the policy's or the command line's, is the caller's choice. Raises
    ``PolicyError`` when a metric rule needs a file that was not given.
    """
    regression = regression_test(
        policy.regression_test, document, metrics_baseline, metrics_candidate
    )
    deployment = readiness.assess(policy.deployment_readiness, document, regression["checks"])
    result = verdict(regression["checks"] + deployment["checks"])
    return {
        "regression_test": regression,
        "deployment_readiness": deployment,
        "policy": {"source": policy.source, "result": result},
        "verdict": result,
    }


def regression_test(
    policy: RegressionPolicy,
    document: dict[str, Any],
    baseline: metrics.Metrics | None,
    candidate: metrics.Metrics | None,
) -> dict[str, Any]:
    scopes = rules.scopes(policy, document["tensors"])
    checks = rules.tensor_checks(scopes)
    checks += metrics.metric_checks(policy.metrics, baseline, candidate)
    if policy.functional is not None:  # it ran the models: their module only then
        from diffai.policy.output_checks import functional_checks

        checks += functional_checks(policy.functional, document.get("functional"))
    checks += adapter_checks(document)
    drop = metrics.worst_relative_drop(policy.metrics, baseline, candidate)
    drift = rules.drift_ratio(scopes) if drop is None else None
    return {
        "passed": not failed(checks, "error"),
        "degradation": drop if drop is not None else drift,
        # The two readings differ: a fraction of a metric, or a multiple of a drift limit.
        "degradation_basis": _basis(drop, drift),
        "severity": worst_severity(checks),
        "checks": checks,
    }


def _basis(drop: float | None, drift: float | None) -> str | None:
    if drop is not None:
        return "metric_relative_drop"
    return "tensor_drift_over_limit" if drift is not None else None


def worst_severity(checks: list[Check]) -> str:
    """``error`` or ``warning`` (the worst failed check), else ``none``."""
    return next((s for s in ("error", "warning") if failed(checks, s)), "none")


def verdict(checks: list[Check]) -> Verdict:
    """fail when an error check fails, warn when only warning checks fail, else pass."""
    return VERDICTS[worst_severity(checks)]
