"""Tensor drift rules over hand-built report documents (builders reused by the other tests)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from diffai.policy import Policy, default_policy, evaluate, load_policy

Document = dict[str, Any]
REINIT = "encoder.layer.0.attention.self.query.weight"


def stats(*, nan: int = 0, inf: int = 0, shape: tuple[int, ...] = (4, 4), dtype: str = "f32"):
    elements = 1
    for size in shape:
        elements *= size
    return {
        "shape": list(shape), "dtype": dtype, "elements": elements, "bytes": 4 * elements,
        "mean": 0.0, "std": 1.0, "min": -1.0, "max": 1.0, "nan": nan, "inf": inf, "zeros": 0,
    }  # fmt: skip


def diff(relative_l2: float | None, cosine: float | None, max_abs: float, base_l2: float = 1.0):
    l2 = relative_l2 * base_l2 if relative_l2 is not None else 0.5
    return {
        "max_abs": max_abs, "mean_abs": max_abs / 2, "l2": l2, "relative_l2": relative_l2,
        "cosine": cosine, "changed": 1 if l2 else 0, "changed_fraction": 1 / 16 if l2 else 0.0,
        "baseline_l2": base_l2, "candidate_l2": 1.0,
    }  # fmt: skip


def tensor(
    name: str,
    status: str = "changed",
    *,
    relative_l2: float | None = 0.01,
    cosine: float | None = 0.9999,
    max_abs: float = 0.01,
    nan: int = 0,
    inf: int = 0,
    baseline_nan: int = 0,
    shape: tuple[int, ...] = (4, 4),
    dtype: str = "f32",
) -> Document:
    """One ``tensors`` entry of a report, shaped like the real ones for each status."""
    base = None if status == "added" else stats(nan=baseline_nan, shape=shape)
    cand_shape = (2, 4) if status == "shape_changed" else shape
    cand_dtype = "f16" if status == "dtype_changed" else dtype
    cand = (
        None if status == "removed" else stats(nan=nan, inf=inf, shape=cand_shape, dtype=cand_dtype)
    )
    paired = status in ("changed", "unchanged", "dtype_changed")
    zero_baseline = relative_l2 is None
    return {
        "name": name,
        "status": status,
        "baseline": base,
        "candidate": cand,
        "diff": diff(relative_l2, cosine, max_abs, 0.0 if zero_baseline else 1.0)
        if paired
        else None,
    }


def analyses(**overrides: dict[str, Any]) -> dict[str, Any]:
    """Analyses as the lead's modules report them, neutral unless overridden."""
    neutral = {
        "anomaly_detection": {"type": "none", "severity": "none", "affected_layers": [],
                              "action": "continue_training", "findings": []},
        "architecture_comparison": {"type1": "transformer", "type2": "transformer",
                                    "complexity": "low", "migration": "easy"},
        "convergence_analysis": {"status": "converging", "stability": 0.9},
        "gradient_analysis": {"flow_health": "healthy", "norm": 0.1},
        "memory_analysis": {"baseline_mb": 10.0, "candidate_mb": 10.0, "delta_mb": 0.0},
        "quantization_analysis": {"detected": False, "compression": None, "relative_error": None,
                                  "precision_loss": "none"},
    }  # fmt: skip
    for name, values in overrides.items():
        neutral[name] = {**neutral[name], **values}
    return neutral


def document(
    *tensors: Document, parameters: tuple[int, int] = (1000, 1000), **analysis_overrides: Any
) -> Document:
    """A whole report document (valid against the report schema) around ``tensors``."""
    statuses = ["unchanged", "changed", "added", "removed", "shape_changed", "dtype_changed"]
    artifact = {"path": "m.safetensors", "format": "safetensors", "bytes": 4000,
                "tensors": len(tensors), "parameters": parameters[0]}  # fmt: skip
    return {
        "schema_version": 1,
        "tool": {"name": "diffai", "version": "0"},
        "baseline": artifact,
        "candidate": {**artifact, "parameters": parameters[1]},
        "summary": {
            "tensors_compared": len(tensors),
            **{s: sum(t["status"] == s for t in tensors) for s in statuses},
            "parameters_baseline": parameters[0],
            "parameters_candidate": parameters[1],
        },
        "tensors": list(tensors),
        "analyses": analyses(**analysis_overrides),
        "regression_test": {"passed": True, "degradation": None, "severity": "none", "checks": []},
        "deployment_readiness": {"readiness": 1.0, "risk": "low", "blockers": []},
        "verdict": "pass",
    }


def policy_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Policy]:
    """Loads a policy from YAML text (dedented) as ``policy.yaml`` in a temporary folder."""
    monkeypatch.chdir(tmp_path)

    def load(text: str) -> Policy:
        Path("policy.yaml").write_text(textwrap.dedent(text))
        return load_policy("policy.yaml")

    return load


def gate_with(validate_report: Callable[[Document], None]) -> Callable[..., Document]:
    """``evaluate``, its result merged into the document and checked against the report schema."""

    def run(policy: Policy, doc: Document, *metrics: Any) -> Document:
        result = evaluate(policy, doc, *metrics)
        validate_report({**doc, **result})
        return result

    return run


@pytest.fixture
def policy_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Policy]:
    return policy_loader(tmp_path, monkeypatch)


@pytest.fixture
def gate(validate_report: Callable[[Document], None]) -> Callable[..., Document]:
    return gate_with(validate_report)


def checks_of(result: Document) -> dict[str, Document]:
    return {check["rule"]: check for check in result["regression_test"]["checks"]}


FIVE_PERCENT = """\
    version: 1
    regression_test:
      max_relative_change: 0.05
"""


def test_a_small_fine_tune_passes_a_five_percent_rule(policy_file, gate) -> None:
    doc = document(tensor("fc1.weight", relative_l2=0.012), tensor("fc1.bias", relative_l2=0.031))
    result = gate(policy_file(FIVE_PERCENT), doc)
    check = checks_of(result)["regression_test.max_relative_change"]
    assert check == {
        "rule": "regression_test.max_relative_change",
        "severity": "error",
        "status": "pass",
        "message": "all 2 tensors changed by at most 5% (largest: fc1.bias, 3.1%)",
        "observed": 0.031,
        "threshold": 0.05,
        "tensors": [],
    }
    assert result["verdict"] == "pass"
    assert result["regression_test"] == {
        "passed": True, "degradation": pytest.approx(0.62), "severity": "none",
        "degradation_basis": "tensor_drift_over_limit",
        "checks": result["regression_test"]["checks"],
    }  # fmt: skip
    assert result["policy"] == {"source": "policy.yaml", "result": "pass"}


def test_a_reinitialized_layer_fails_and_is_named(policy_file, gate) -> None:
    doc = document(tensor("fc1.weight", relative_l2=0.01), tensor(REINIT, relative_l2=1.402))
    result = gate(policy_file(FIVE_PERCENT), doc)
    check = checks_of(result)["regression_test.max_relative_change"]
    assert check["status"] == "fail"
    assert check["message"] == f"1 tensor changed by more than 5% (worst: {REINIT}, 140.2%)"
    assert check["tensors"] == [REINIT]
    assert check["observed"] == 1.402
    assert result["verdict"] == "fail"
    assert result["regression_test"]["passed"] is False
    assert result["regression_test"]["severity"] == "error"
    assert result["regression_test"]["degradation"] == pytest.approx(1.402 / 0.05)


def test_every_tensor_that_broke_a_rule_is_listed_worst_first(policy_file, gate) -> None:
    doc = document(
        tensor("a", relative_l2=0.06), tensor("b", relative_l2=0.5), tensor("c", relative_l2=0.01),
        tensor(REINIT, relative_l2=1.402),
    )  # fmt: skip
    check = checks_of(gate(policy_file(FIVE_PERCENT), doc))["regression_test.max_relative_change"]
    assert check["message"] == f"3 tensors changed by more than 5% (worst: {REINIT}, 140.2%)"
    assert check["tensors"] == [REINIT, "b", "a"]


def test_a_warning_override_turns_the_fail_into_warn(policy_file, gate) -> None:
    policy = policy_file("""\
        version: 1
        regression_test:
          max_relative_change: 0.05
          overrides:
            - match: "classifier.*"
              max_relative_change: 0.5
              severity: warning
    """)  # fmt: skip
    doc = document(
        tensor("encoder.weight", relative_l2=0.02), tensor("classifier.weight", relative_l2=0.8)
    )
    result = gate(policy, doc)
    checks = checks_of(result)
    assert checks["regression_test.max_relative_change"]["status"] == "pass"
    override = checks["regression_test.overrides[0].max_relative_change"]
    assert override["severity"] == "warning"
    assert override["status"] == "fail"
    assert override["message"] == (
        "1 tensor matching 'classifier.*' changed by more than 50% (worst: classifier.weight, 80%)"
    )
    assert result["verdict"] == "warn"
    assert result["policy"]["result"] == "warn"
    assert result["regression_test"]["passed"] is True
    assert result["regression_test"]["severity"] == "warning"


def test_the_first_matching_override_wins_and_inherits_the_rest(policy_file, gate) -> None:
    policy = policy_file("""\
        version: 1
        regression_test:
          max_relative_change: 0.05
          min_cosine_similarity: 0.99
          overrides:
            - match: "head.*"
              max_relative_change: 0.3
            - match: "head.bias"
              max_relative_change: 0.0
    """)  # fmt: skip
    doc = document(tensor("head.bias", relative_l2=0.2, cosine=0.95))
    checks = checks_of(gate(policy, doc))
    assert checks["regression_test.overrides[0].max_relative_change"]["status"] == "pass"
    inherited = checks["regression_test.overrides[0].min_cosine_similarity"]
    assert (inherited["status"], inherited["threshold"], inherited["tensors"]) == (
        "fail",
        0.99,
        ["head.bias"],
    )
    assert checks["regression_test.overrides[1]"]["status"] == "skip"
    assert checks["regression_test.overrides[1]"]["message"] == (
        "match 'head.bias' matches no checked tensor; its rules were not applied"
    )
    assert (
        checks["regression_test.max_relative_change"]["message"]
        == "no tensor has values to compare"
    )


def test_an_explicit_null_in_an_override_switches_a_rule_off(policy_file, gate) -> None:
    policy = policy_file("""\
        version: 1
        regression_test:
          max_relative_change: 0.05
          overrides:
            - match: "embeddings.*"
              max_relative_change: null
    """)  # fmt: skip
    result = gate(policy, document(tensor("embeddings.word", relative_l2=3.0)))
    assert "regression_test.overrides[0].max_relative_change" not in checks_of(result)
    assert result["verdict"] == "pass"


def test_batch_norm_counters_are_ignored_unless_ignore_is_emptied(policy_file, gate) -> None:
    counter = tensor("bn1.num_batches_tracked", relative_l2=2.0, dtype="i64")
    assert gate(policy_file(FIVE_PERCENT), document(counter))["verdict"] == "pass"
    emptied = policy_file(FIVE_PERCENT + "      ignore: []\n")
    assert gate(emptied, document(counter))["verdict"] == "fail"


def test_a_tensor_grown_from_all_zeros_is_infinitely_changed(policy_file, gate) -> None:
    policy = policy_file(FIVE_PERCENT + "      min_cosine_similarity: 0.9\n")
    result = gate(policy, document(tensor("fc2.bias", relative_l2=None, cosine=None)))
    checks = checks_of(result)
    relative = checks["regression_test.max_relative_change"]
    assert (
        relative["message"]
        == "1 tensor changed by more than 5% (worst: fc2.bias, changed from all zeros)"
    )
    assert relative["observed"] is None  # strict JSON has no Infinity; the message says it
    cosine = checks["regression_test.min_cosine_similarity"]
    assert (cosine["status"], cosine["observed"]) == ("fail", 0.0)
    assert result["regression_test"]["degradation"] is None


@pytest.mark.parametrize(
    ("key", "limit", "value", "status"),
    [
        pytest.param("min_cosine_similarity", 0.995, 0.995, "pass", id="cosine-at-the-limit"),
        pytest.param("min_cosine_similarity", 0.995, 0.99499, "fail", id="cosine-below"),
        pytest.param("max_relative_change", 0.05, 0.05, "pass", id="relative-at-the-limit"),
        pytest.param("max_relative_change", 0.05, 0.05001, "fail", id="relative-above"),
        pytest.param("max_abs_diff", 0.1, 0.1, "pass", id="abs-at-the-limit"),
        pytest.param("max_abs_diff", 0.1, 0.1001, "fail", id="abs-above"),
    ],
)
def test_numeric_thresholds_at_their_margins(policy_file, gate, key, limit, value, status) -> None:
    measured = {"min_cosine_similarity": "cosine", "max_relative_change": "relative_l2"}
    entry = tensor("w", **{measured.get(key, "max_abs"): value})
    result = gate(policy_file(f"version: 1\nregression_test:\n  {key}: {limit}\n"), document(entry))
    assert checks_of(result)[f"regression_test.{key}"]["status"] == status


def test_cosine_and_abs_messages(policy_file, gate) -> None:
    policy = policy_file("""\
        version: 1
        regression_test:
          min_cosine_similarity: 0.995
          max_abs_diff: 0.1
    """)  # fmt: skip
    doc = document(
        tensor("a", cosine=0.9612, max_abs=0.53), tensor("b", cosine=0.999, max_abs=0.01)
    )
    checks = checks_of(gate(policy, doc))
    assert checks["regression_test.min_cosine_similarity"]["message"] == (
        "1 tensor fell below cosine similarity 0.995 (worst: a, 0.9612)"
    )
    assert checks["regression_test.max_abs_diff"]["message"] == (
        "1 tensor changed by more than 0.1 in some element (worst: a, 0.53)"
    )


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_gained_nan_or_inf_fails_and_names_the_tensor(policy_file, gate, kind) -> None:
    label = {"nan": "NaN", "inf": "inf"}[kind]
    doc = document(tensor("fc1.weight"), tensor("fc2.weight", **{kind: 12}))
    result = gate(policy_file("version: 1\n"), doc)
    check = checks_of(result)[f"regression_test.fail_on_{kind}"]
    assert check["status"] == "fail"
    assert check["message"] == f"1 tensor gained {label} values: fc2.weight (+12 {label})"
    assert check["tensors"] == ["fc2.weight"]
    assert check["observed"] == 12
    assert result["verdict"] == "fail"


def test_nan_the_baseline_already_had_is_not_gained(policy_file, gate) -> None:
    doc = document(tensor("w", nan=3, baseline_nan=3), tensor("new", "added", nan=1))
    check = checks_of(gate(policy_file("version: 1\n"), doc))["regression_test.fail_on_nan"]
    assert check["tensors"] == ["new"]


def test_nan_can_be_allowed(policy_file, gate) -> None:
    result = gate(
        policy_file("version: 1\nregression_test:\n  fail_on_nan: false\n"),
        document(tensor("w", nan=4)),
    )
    check = checks_of(result)["regression_test.fail_on_nan"]
    assert check["status"] == "skip"
    assert (
        check["message"]
        == "not checked (fail_on_nan is false); 1 tensor gained NaN values: w (+4 NaN)"
    )
    assert result["verdict"] == "pass"


@pytest.mark.parametrize(
    ("status", "key", "message"),
    [
        pytest.param("removed", "allow_removed", "1 tensor was removed: head.weight", id="removed"),
        pytest.param(
            "shape_changed", "allow_shape_change",
            "1 tensor changed shape: head.weight [4, 4] → [2, 4]", id="reshaped",
        ),
        pytest.param(
            "dtype_changed", "allow_dtype_change", "1 tensor changed dtype: head.weight f32 → f16",
            id="retyped",
        ),
    ],
)  # fmt: skip
def test_structural_changes_fail_unless_allowed(policy_file, gate, status, key, message) -> None:
    doc = document(tensor("head.weight", status))
    refused = gate(policy_file("version: 1\n"), doc)
    check = checks_of(refused)[f"regression_test.{key}"]
    assert (check["status"], check["message"], check["tensors"]) == (
        "fail",
        message,
        ["head.weight"],
    )
    assert refused["verdict"] == "fail"
    allowed = gate(policy_file(f"version: 1\nregression_test:\n  {key}: true\n"), doc)
    assert checks_of(allowed)[f"regression_test.{key}"]["status"] == "skip"
    assert allowed["verdict"] == "pass"


def test_added_tensors_are_allowed_by_default_and_can_be_refused(policy_file, gate) -> None:
    doc = document(tensor("fc3.weight", "added"), tensor("fc3.bias", "added"))
    check = checks_of(gate(policy_file("version: 1\n"), doc))["regression_test.allow_added"]
    assert check["status"] == "skip"
    refused = gate(policy_file("version: 1\nregression_test:\n  allow_added: false\n"), doc)
    check = checks_of(refused)["regression_test.allow_added"]
    assert check["message"] == "2 tensors were added: fc3.weight, fc3.bias"
    assert check["observed"] == 2


def test_a_retyped_tensor_is_still_checked_by_the_numeric_rules(policy_file, gate) -> None:
    policy = policy_file(FIVE_PERCENT + "      allow_dtype_change: true\n")
    doc = document(tensor("w", "dtype_changed", relative_l2=0.2))
    assert checks_of(gate(policy, doc))["regression_test.max_relative_change"]["tensors"] == ["w"]


def test_long_lists_are_cut_in_the_message_but_complete_in_the_check(policy_file, gate) -> None:
    doc = document(*(tensor(f"t{i}", "removed") for i in range(7)))
    check = checks_of(gate(policy_file("version: 1\n"), doc))["regression_test.allow_removed"]
    assert check["message"] == "7 tensors were removed: t0, t1, t2, t3, t4 and 2 more"
    assert len(check["tensors"]) == 7


def test_the_default_policy_checks_only_the_switches(gate) -> None:
    doc = document(tensor("w", relative_l2=5.0), tensor("bn.num_batches_tracked", "removed"))
    result = gate(default_policy(), doc)
    assert [c["rule"] for c in result["regression_test"]["checks"]] == [
        "regression_test.fail_on_nan",
        "regression_test.fail_on_inf",
        "regression_test.fail_on_scrambled",
        "regression_test.allow_added",
        "regression_test.allow_removed",
        "regression_test.allow_shape_change",
        "regression_test.allow_dtype_change",
        "regression_test.allow_rename",
    ]
    assert result["verdict"] == "pass"
    assert result["policy"] == {"source": "default", "result": "pass"}
    assert result["regression_test"]["degradation"] is None
