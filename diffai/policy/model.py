"""The policy as frozen dataclasses, built from a document that already passed the schema.

Every default lives here, once: an empty policy file (``version: 1``) and no
file at all give the same ``Policy`` (:func:`default_policy`). Overrides are
merged with the top level when the policy is built, so each override carries
the complete rule set its tensors are checked against.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from diffai.policy.functional import FunctionalPolicy, OutputRules

Severity = Literal["error", "warning"]

#: Batch-norm step counters change with every training step and mean nothing for drift.
DEFAULT_IGNORE = ("*.num_batches_tracked",)
#: The roles (diffai.roles) the drift rules judge: what training learns.
DEFAULT_ROLES = ("weight",)


@dataclass(frozen=True, kw_only=True)
class TensorRules:
    """The rules one tensor is checked against; a ``None`` threshold is not checked."""

    max_relative_change: float | None = None
    min_cosine_similarity: float | None = None
    max_abs_diff: float | None = None
    fail_on_nan: bool = True
    fail_on_inf: bool = True
    fail_on_scrambled: bool = True
    allow_added: bool = True
    allow_removed: bool = False
    allow_shape_change: bool = False
    allow_dtype_change: bool = False
    allow_rename: bool = True
    severity: Severity = "error"


@dataclass(frozen=True, kw_only=True)
class Override:
    """Rules for tensors (or, in ``functional``, outputs) matching ``match``: the top level
    with this override's keys on top."""

    match: str
    rules: TensorRules | OutputRules


@dataclass(frozen=True, kw_only=True)
class MetricRule:
    """Limits on one metric; ``threshold`` is a floor (a ceiling when lower is better)."""

    metric: str
    greater_is_better: bool = True
    threshold: float | None = None
    max_degradation: float | None = None
    max_relative_degradation: float | None = None
    severity: Severity = "error"


@dataclass(frozen=True, kw_only=True)
class MetricsPolicy:
    """The metrics files the policy names (resolved against its folder) and the rules."""

    baseline: Path | None = None
    candidate: Path | None = None
    rules: tuple[MetricRule, ...] = ()


@dataclass(frozen=True, kw_only=True)
class RegressionPolicy:
    rules: TensorRules = field(default_factory=TensorRules)
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    roles: tuple[str, ...] = DEFAULT_ROLES
    overrides: tuple[Override, ...] = ()
    metrics: MetricsPolicy = field(default_factory=MetricsPolicy)
    #: Present only when the policy asks to run the models (``diffai.functional``).
    functional: FunctionalPolicy | None = None


@dataclass(frozen=True, kw_only=True)
class DeploymentBudgets:
    """Budgets the candidate must meet to ship; ``None`` (or ``False``) is not checked."""

    min_readiness: float | None = None
    max_size_increase_mb: float | None = None
    max_parameter_increase: float | None = None
    max_quantization_error: float | None = None
    require_no_anomalies: bool = False


@dataclass(frozen=True, kw_only=True)
class Policy:
    """A whole policy; ``source`` is the file path as given, or ``"default"``."""

    source: str = "default"
    regression_test: RegressionPolicy = field(default_factory=RegressionPolicy)
    deployment_readiness: DeploymentBudgets = field(default_factory=DeploymentBudgets)


def default_policy() -> Policy:
    """The policy used without a file: safe switches, no thresholds, no budgets."""
    return Policy()


def policy_metric_files(policy: Policy) -> tuple[Path | None, Path | None]:
    """The (baseline, candidate) metrics files the policy names; the command line may override."""
    metrics = policy.regression_test.metrics
    return metrics.baseline, metrics.candidate


def build_policy(document: dict[str, Any], source: str) -> Policy:
    """A ``Policy`` from a parsed policy file that passed the schema.

    Relative paths in it resolve against the file's folder, as other tools'
    configs do, so the same policy works from any working directory.
    """
    return Policy(
        source=source,
        regression_test=_regression(document.get("regression_test") or {}, Path(source).parent),
        deployment_readiness=DeploymentBudgets(**(document.get("deployment_readiness") or {})),
    )


def _regression(section: dict[str, Any], folder: Path) -> RegressionPolicy:
    top = _with_keys(TensorRules(), section)
    return RegressionPolicy(
        rules=top,
        ignore=tuple(section.get("ignore", DEFAULT_IGNORE)),
        roles=tuple(section.get("roles", DEFAULT_ROLES)),
        overrides=tuple(
            Override(match=item["match"], rules=_with_keys(top, item))
            for item in section.get("overrides", ())
        ),
        metrics=_metrics(section.get("metrics") or {}, folder),
        functional=_functional(section, folder),
    )


def _functional(section: dict[str, Any], folder: Path) -> FunctionalPolicy | None:
    """The ``functional`` section; its module only for a policy that has one (its dataclasses
    and the output checks were 8 of the 124 ms, at load 3, a plain run spent importing diffai)."""
    if "functional" not in section:
        return None
    from diffai.policy.functional import build_functional

    return build_functional(section["functional"] or {}, folder)


def _with_keys(rules: TensorRules, section: dict[str, Any]) -> TensorRules:
    """``rules`` with the tensor-rule keys ``section`` sets (an explicit null turns a rule off)."""
    names = {f.name for f in dataclasses.fields(TensorRules)}
    return dataclasses.replace(rules, **{k: v for k, v in section.items() if k in names})


def _metrics(section: dict[str, Any], folder: Path) -> MetricsPolicy:
    return MetricsPolicy(
        baseline=_optional_path(section.get("baseline"), folder),
        candidate=_optional_path(section.get("candidate"), folder),
        rules=tuple(MetricRule(**rule) for rule in section.get("rules", ())),
    )


def _optional_path(value: str | None, folder: Path) -> Path | None:
    """``folder / value``; an absolute ``value`` stays as it is (``Path`` joining keeps it)."""
    return None if value is None else folder / value
