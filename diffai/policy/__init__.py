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

from diffai.policy.load import load_metrics, load_policy
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
from diffai.policy.schema import policy_schema
from diffai.policy.verdict import evaluate

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
