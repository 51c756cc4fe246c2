"""Deployment readiness: the documented formula, risk, blockers, and the policy's budgets."""

from __future__ import annotations

import pytest

from diffai.policy import default_policy
from diffai.policy.readiness import risk_of
from tests.test_policy_rules import document, gate_with, policy_loader, tensor

F16_ERROR, BF16_ERROR = 2.08e-4, 1.66e-3  # measured on f32 weights cast to f16 / bf16


@pytest.fixture
def policy_file(tmp_path, monkeypatch):
    return policy_loader(tmp_path, monkeypatch)


@pytest.fixture
def gate(validate_report):
    return gate_with(validate_report)


def budget(policy_file, line: str):
    return policy_file(f"version: 1\ndeployment_readiness:\n  {line}\n")


def budget_check(result) -> dict:
    (check,) = result["deployment_readiness"]["checks"]
    return check


def test_a_clean_candidate_is_ready(gate) -> None:
    readiness = gate(default_policy(), document(tensor("w")))["deployment_readiness"]
    assert readiness == {
        "readiness": 1.0,
        "risk": "low",
        "blockers": [],
        "factors": [
            {"name": "anomaly_detection.severity", "penalty": 0.0, "reason": "severity none"},
            {"name": "architecture_comparison.migration", "penalty": 0.0,
             "reason": "migration easy"},
            {"name": "quantization_analysis.precision_loss", "penalty": 0.0,
             "reason": "precision_loss none"},
            {"name": "convergence_analysis.status", "penalty": 0.0, "reason": "status converging"},
        ],
        "checks": [],
    }  # fmt: skip


def test_readiness_is_the_product_of_the_penalties(gate) -> None:
    doc = document(
        tensor("w", "removed"),
        anomaly_detection={"severity": "high", "type": "exploding"},
        architecture_comparison={"migration": "moderate"},
        quantization_analysis={"precision_loss": "low"},
        convergence_analysis={"status": "unstable"},
    )
    result = gate(default_policy(), doc)["deployment_readiness"]
    assert [(f["name"], f["penalty"]) for f in result["factors"]] == [
        ("anomaly_detection.severity", 0.35),
        ("architecture_comparison.migration", 0.1),
        ("quantization_analysis.precision_loss", 0.02),
        ("convergence_analysis.status", 0.1),
        ("regression_test.allow_removed", 0.3),
    ]
    assert result["factors"][-1]["reason"] == "1 tensor was removed: w"
    assert result["readiness"] == pytest.approx(0.65 * 0.9 * 0.98 * 0.9 * 0.7)
    assert result["risk"] == "high"
    assert result["blockers"] == []


def test_a_failed_warning_costs_less_than_a_failed_error(policy_file, gate) -> None:
    policy = policy_file("""\
        version: 1
        regression_test:
          overrides: [{match: "head.*", severity: warning}]
    """)  # fmt: skip
    result = gate(policy, document(tensor("head.w", "removed")))
    assert result["deployment_readiness"]["readiness"] == pytest.approx(0.9)
    assert result["verdict"] == "warn"


@pytest.mark.parametrize(
    ("readiness", "risk"),
    [
        (1.0, "low"),
        (0.8, "low"),
        (0.7999, "medium"),
        (0.5, "medium"),
        (0.4999, "high"),
        (0, "high"),
    ],
)
def test_risk_bounds(readiness, risk) -> None:
    assert risk_of(readiness) == risk


def test_a_critical_anomaly_blocks_and_zeroes_readiness(gate) -> None:
    finding = {"tensor": "fc1.weight", "kind": "nan_gained", "severity": "critical",
               "detail": "12 NaN (baseline 0)"}  # fmt: skip
    doc = document(tensor("fc1.weight", nan=12), anomaly_detection={
        "type": "nan_gained", "severity": "critical", "affected_layers": ["fc1"],
        "findings": [finding],
    })  # fmt: skip
    result = gate(default_policy(), doc)["deployment_readiness"]
    assert result["readiness"] == 0.0
    assert result["risk"] == "high"
    assert result["blockers"] == [
        "critical anomaly in fc1.weight: nan_gained (12 NaN (baseline 0))"
    ]


@pytest.mark.parametrize(
    ("relative_error", "status", "message"),
    [
        pytest.param(F16_ERROR, "pass", "quantization error 0.000208, within the allowed 0.001",
                     id="f16"),
        pytest.param(BF16_ERROR, "fail", "quantization error 0.00166, above the allowed 0.001",
                     id="bf16"),
        pytest.param(1e-3, "pass", "quantization error 0.001, within the allowed 0.001",
                     id="at-the-limit"),
    ],
)  # fmt: skip
def test_the_quantization_budget(policy_file, gate, relative_error, status, message) -> None:
    policy = policy_file("""\
        version: 1
        regression_test:
          allow_dtype_change: true
        deployment_readiness:
          max_quantization_error: 1e-3
    """)  # fmt: skip
    quantized = {"detected": True, "compression": 0.5, "relative_error": relative_error}
    doc = document(tensor("w", "dtype_changed"), quantization_analysis=quantized)
    result = gate(policy, doc)
    check = budget_check(result)
    assert check == {
        "rule": "deployment_readiness.max_quantization_error", "severity": "error",
        "status": status, "message": message, "observed": relative_error, "threshold": 1e-3,
    }  # fmt: skip
    assert result["deployment_readiness"]["blockers"] == ([message] if status == "fail" else [])
    assert result["verdict"] == status


def test_the_quantization_budget_passes_without_retyped_tensors(policy_file, gate) -> None:
    check = budget_check(gate(budget(policy_file, "max_quantization_error: 0.01"), document()))
    assert (check["status"], check["observed"]) == ("pass", None)
    assert check["message"] == "no tensor changed dtype, so there is no quantization error"


@pytest.mark.parametrize(
    ("line", "analysis", "message"),
    [
        pytest.param("max_quantization_error: 0.01", "quantization_analysis",
                     "quantization error not measured (analysis not computed)", id="quantization"),
        pytest.param("require_no_anomalies: true", "anomaly_detection",
                     "anomalies not checked (anomaly detection not computed)", id="anomalies"),
    ],
)  # fmt: skip
def test_a_budget_over_an_analysis_not_computed_is_skipped(
    policy_file, gate, line, analysis, message
) -> None:
    doc = document(**{analysis: {"computed": False}})
    result = gate(budget(policy_file, line), doc)
    assert (budget_check(result)["status"], budget_check(result)["message"]) == ("skip", message)
    factor = next(
        f for f in result["deployment_readiness"]["factors"] if f["name"].startswith(analysis)
    )
    assert factor == {**factor, "penalty": 0.0, "reason": "not computed"}


@pytest.mark.parametrize(
    ("delta_mb", "status", "message"),
    [
        pytest.param(10.0, "pass", "size changed by +10.00 MB, within the allowed +10 MB",
                     id="limit"),
        pytest.param(12.5, "fail", "size changed by +12.50 MB, more than the allowed +10 MB",
                     id="over"),
        pytest.param(-3.0, "pass", "size changed by -3.00 MB, within the allowed +10 MB",
                     id="smaller"),
    ],
)  # fmt: skip
def test_the_size_budget(policy_file, gate, delta_mb, status, message) -> None:
    doc = document(memory_analysis={"delta_mb": delta_mb})
    check = budget_check(gate(budget(policy_file, "max_size_increase_mb: 10"), doc))
    assert (check["status"], check["message"], check["observed"]) == (status, message, delta_mb)


@pytest.mark.parametrize(
    ("parameters", "status", "message"),
    [
        pytest.param((1000, 1050), "pass",
                     "parameters 1,000 → 1,050 (+5.00%), within the allowed +5%",
                     id="at-the-limit"),
        pytest.param((1000, 1051), "fail",
                     "parameters 1,000 → 1,051 (+5.10%), more than the allowed +5%", id="over"),
        pytest.param((0, 10), "fail", "parameters 0 → 10 (from none), more than the allowed +5%",
                     id="from-none"),
    ],
)  # fmt: skip
def test_the_parameter_budget(policy_file, gate, parameters, status, message) -> None:
    doc = document(parameters=parameters)
    check = budget_check(gate(budget(policy_file, "max_parameter_increase: 0.05"), doc))
    assert (check["status"], check["message"]) == (status, message)


@pytest.mark.parametrize(
    ("severity", "status"), [("none", "pass"), ("low", "fail"), ("critical", "fail")]
)
def test_require_no_anomalies_means_none_at_all(policy_file, gate, severity, status) -> None:
    doc = document(anomaly_detection={"severity": severity, "type": "std_collapse",
                                      "affected_layers": ["fc1"]})  # fmt: skip
    result = gate(budget(policy_file, "require_no_anomalies: true"), doc)
    check = budget_check(result)
    assert (check["status"], check["observed"], check["threshold"]) == (status, severity, "none")
    assert result["verdict"] == ("pass" if status == "pass" else "fail")


def test_require_no_anomalies_false_checks_nothing(policy_file, gate) -> None:
    result = gate(budget(policy_file, "require_no_anomalies: false"), document())
    assert result["deployment_readiness"]["checks"] == []


def test_min_readiness_fails_a_candidate_that_only_warns(policy_file, gate) -> None:
    policy = policy_file("""\
        version: 1
        regression_test:
          max_relative_change: 0.05
          overrides: [{match: "head.*", severity: warning}]
        deployment_readiness:
          min_readiness: 0.95
    """)  # fmt: skip
    result = gate(policy, document(tensor("head.w", relative_l2=0.5)))
    check = budget_check(result)
    assert check["message"] == "readiness 0.9 is below the minimum 0.95"
    assert result["deployment_readiness"]["blockers"] == [check["message"]]
    assert result["regression_test"]["passed"] is True
    assert result["verdict"] == "fail"
