"""``regression_test.functional`` checks: the report's ``functional`` section against the policy.

The section's status comes first: models that are not ONNX give one skipped
check saying so; a changed input signature, or a candidate ONNX Runtime could
not load or run, one failed check. Compared models get, per scope (the top
level, then each override, which owns the outputs it matches first), one check
per limit it sets, naming every output that broke it, and one for NaN/Inf.
An output the candidate lost, reshaped, or that is not a tensor fails
``regression_test.functional.outputs``.
"""

from __future__ import annotations

from typing import Any

from diffai.policy.checks import Check, limit_percent, make_check, outcome, percent
from diffai.policy.functional import FunctionalPolicy, OutputRules
from diffai.policy.rules import NumericRule

Output = dict[str, Any]
PREFIX = "regression_test.functional"


def _rule(measure: str, lower_is_worse: bool, shown: str, broke: str, kept: str) -> NumericRule:
    show = percent if shown == "percent" else (lambda value: f"{value:.4g}")
    show_limit = limit_percent if shown == "percent" else (lambda limit: f"{limit:g}")
    return NumericRule(
        measure=lambda output: output.get(measure), lower_is_worse=lower_is_worse, show=show,
        show_limit=show_limit, broke=broke, kept=kept,
        worst_word="lowest" if lower_is_worse else "largest",
    )  # fmt: skip


OUTPUT_RULES: dict[str, NumericRule] = {
    "max_relative_l2": _rule(
        "relative_l2", False, "percent", "moved by more than {limit} (relative L2)",
        "moved by at most {limit} (relative L2)",
    ),
    "min_cosine": _rule(
        "cosine", True, "number", "fell below cosine {limit}", "kept cosine {limit} or more"
    ),
    "max_abs_diff": _rule(
        "max_abs", False, "number", "moved by more than {limit} in some element",
        "moved by at most {limit} per element",
    ),
    "max_mismatch_fraction": _rule(
        "mismatch_fraction", False, "percent", "have over {limit} of elements beyond atol + "
        "rtol·|baseline|", "have at most {limit} of elements beyond atol + rtol·|baseline|",
    ),
    "min_top1_agreement": _rule(
        "top1_agreement", True, "percent", "agree on the top-1 class in under {limit} of rows",
        "agree on the top-1 class in {limit} of rows or more",
    ),
    "max_kl_divergence": _rule(
        "kl_divergence", False, "number", "have a mean KL divergence over {limit} nats",
        "have a mean KL divergence of at most {limit} nats",
    ),
}  # fmt: skip
#: Section statuses that are one check, and whether it fails.
STATUS_CHECKS = {"not_run": "skip", "inputs_changed": "fail", "candidate_failed": "fail"}


def functional_checks(
    policy: FunctionalPolicy | None, section: dict[str, Any] | None
) -> list[Check]:
    if policy is None or section is None:
        return []
    status = section["status"]
    if status in STATUS_CHECKS:
        return [
            make_check(
                PREFIX, policy.rules.severity, STATUS_CHECKS[status], section["reason"], None, None
            )
        ]
    checks = [_structure(policy, section["outputs"])]
    for prefix, rules, outputs in _scopes(policy, section["outputs"]):
        checks += [
            _numeric(prefix, rules, key, outputs)
            for key in OUTPUT_RULES
            if getattr(rules, key) is not None
        ]
        if rules.fail_on_nonfinite:
            checks.append(_nonfinite(prefix, rules, outputs))
    return checks


def _scopes(
    policy: FunctionalPolicy, outputs: list[Output]
) -> list[tuple[str, OutputRules, list[Output]]]:
    owned: dict[str, list[Output]] = {}
    for output in outputs:
        if output["status"] == "compared":
            owned.setdefault(policy.rules_for(output["name"])[0], []).append(output)
    scopes = [(PREFIX, policy.rules)]
    scopes += [(f"{PREFIX}.overrides[{i}]", o.rules) for i, o in enumerate(policy.overrides)]
    return [(prefix, rules, owned.get(prefix, [])) for prefix, rules in scopes]


def _structure(policy: FunctionalPolicy, outputs: list[Output]) -> Check:
    broken = [output for output in outputs if output["status"] != "compared"]
    texts = [f"{o['name']} {o['status'].replace('_', ' ')}" for o in broken]
    message = "; ".join(texts) if broken else f"all {len(outputs)} outputs of the baseline compared"
    names = [o["name"] for o in broken]
    return make_check(
        f"{PREFIX}.outputs",
        policy.rules.severity,
        outcome(not broken),
        message,
        len(broken),
        0,
        outputs=names,
    )


def _numeric(prefix: str, rules: OutputRules, key: str, outputs: list[Output]) -> Check:
    rule, limit = OUTPUT_RULES[key], getattr(rules, key)
    measured = [(o, v) for o in outputs if (v := rule.measure(o)) is not None]
    measured.sort(key=lambda item: item[1], reverse=not rule.lower_is_worse)
    broken = [o["name"] for o, value in measured if rule.breaks(value, limit)]
    worst = measured[0][1] if measured else None
    if not measured:
        text = "no output it applies to"
        return make_check(f"{prefix}.{key}", rules.severity, "skip", text, None, limit, outputs=[])
    name, value = measured[0][0]["name"], measured[0][1]
    what = (rule.broke if broken else rule.kept).format(limit=rule.show_limit(limit))
    count = f"{len(broken)} of {len(measured)}" if broken else f"all {len(measured)}"
    text = f"{count} outputs {what} ({rule.worst_word}: {name}, {rule.show(value)})"
    return make_check(
        f"{prefix}.{key}", rules.severity, outcome(not broken), text, worst, limit, outputs=broken
    )


def _nonfinite(prefix: str, rules: OutputRules, outputs: list[Output]) -> Check:
    gained = {o["name"]: _gained(o) for o in outputs if _gained(o) > 0}
    if gained:
        text = ", ".join(
            f"{name} gained {count:,} NaN/Inf values" for name, count in gained.items()
        )
    else:
        text = f"no NaN or Inf the baseline does not have, in {len(outputs)} outputs"
    worst = max(gained.values(), default=0)
    return make_check(
        f"{prefix}.fail_on_nonfinite",
        rules.severity,
        outcome(not gained),
        text,
        worst,
        0,
        outputs=list(gained),
    )


def _gained(output: Output) -> int:
    before = output["baseline_nan"] + output["baseline_inf"]
    return max(output["candidate_nan"] + output["candidate_inf"] - before, 0)
