"""The policy gate: a YAML policy applied to a report gives checks, readiness and a verdict.

>>> policy = load_policy("policy.yaml")        # or default_policy()
>>> baseline_file, candidate_file = policy_metric_files(policy)
>>> baseline, candidate = load_metrics(baseline_file), load_metrics(candidate_file)
>>> result = evaluate(policy, report.document, baseline, candidate)
>>> result["verdict"]
'pass'

The format is documented in ``docs/policy.md`` and defined by the shipped
``policy.schema.json``. Every problem with a policy or metrics file is a
``PolicyError`` naming the file, the line and the key.
"""

from __future__ import annotations

from typing import Any

from diffai.policy.metrics import MetricsFile
from diffai.policy.model import (
    DeploymentBudgets,
    MetricRule,
    MetricsPolicy,
    Override,
    Policy,
    RegressionPolicy,
    TensorRules,
    default_policy,
    policy_metric_files,
)
from diffai.policy.verdict import evaluate


def __getattr__(name: str) -> Any:
    """``load_policy`` and ``load_metrics`` on first use: YAML's import is 15 ms that a run
    without a policy (the default policy needs no file) would otherwise pay; likewise
    ``policy_schema`` (its module's dataclass and functions: 1.5 ms)."""
    if name in ("load_metrics", "load_policy"):
        from diffai.policy import load

        return getattr(load, name)
    if name == "policy_schema":
        from diffai.policy.schema import policy_schema

        return policy_schema
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DeploymentBudgets",
    "MetricRule",
    "MetricsFile",
    "MetricsPolicy",
    "Override",
    "Policy",
    "RegressionPolicy",
    "TensorRules",
    "default_policy",
    "evaluate",
    "load_metrics",
    "load_policy",
    "policy_metric_files",
    "policy_schema",
]
