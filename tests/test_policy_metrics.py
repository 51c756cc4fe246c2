"""Evaluation-metric rules: margins, lower-is-better, zero baselines, missing keys, metric files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diffai.errors import PolicyError
from diffai.policy import (
    MetricsFile,
    evaluate,
    load_metrics,
    load_policy,
    policy_metric_files,
)
from diffai.policy.metrics import MISSING, lookup
from tests.test_policy_rules import document, gate_with, policy_loader, tensor


@pytest.fixture
def policy_file(tmp_path, monkeypatch):
    return policy_loader(tmp_path, monkeypatch)


@pytest.fixture
def gate(validate_report):
    return gate_with(validate_report)


def rule_policy(policy_file, rule: str, **files: str):
    """A policy with one metric rule (a YAML flow mapping) and optional metrics files."""
    lines = [f"    {side}: {path}" for side, path in files.items()]
    return policy_file(
        "version: 1\nregression_test:\n  metrics:\n"
        + "".join(f"{line}\n" for line in lines)
        + f"    rules:\n      - {rule}\n"
    )


def only_check(result) -> dict:
    (check,) = [
        c
        for c in result["regression_test"]["checks"]
        if c["rule"].startswith("regression_test.metrics")
    ]
    return check


FLOOR = "{metric: accuracy, threshold: 0.8}"
CEILING = "{metric: loss, greater_is_better: false, threshold: 0.5}"
DROP = "{metric: accuracy, max_degradation: 0.01}"
LOSS_RISE = "{metric: loss, greater_is_better: false, max_degradation: 0.1}"
RELATIVE = "{metric: accuracy, max_relative_degradation: 0.02}"
ERRORS = "{metric: errors, greater_is_better: false, max_relative_degradation: 0.5}"


@pytest.mark.parametrize(
    ("rule", "baseline", "candidate", "status", "message"),
    [
        pytest.param(FLOOR, 0.9, 0.8, "pass", "accuracy = 0.8, within the floor 0.8",
                     id="floor-reached-exactly"),
        pytest.param(FLOOR, 0.9, 0.7999, "fail", "accuracy = 0.7999, below the floor 0.8",
                     id="floor-missed"),
        pytest.param(CEILING, 0.4, 0.5, "pass", "loss = 0.5, within the ceiling 0.5",
                     id="ceiling-reached-exactly"),
        pytest.param(CEILING, 0.4, 0.5001, "fail", "loss = 0.5001, above the ceiling 0.5",
                     id="ceiling-passed"),
        pytest.param(DROP, 0.90, 0.89, "pass",
                     "accuracy 0.9 → 0.89: worse by 0.01, within the allowed 0.01",
                     id="degradation-at-the-limit"),
        pytest.param(DROP, 0.90, 0.8899, "fail",
                     "accuracy 0.9 → 0.8899: worse by 0.0101, more than the allowed 0.01",
                     id="degradation-beyond"),
        pytest.param(DROP, 0.90, 0.95, "pass",
                     "accuracy 0.9 → 0.95: no worse than the baseline", id="improved"),
        pytest.param(LOSS_RISE, 1.0, 1.1, "pass",
                     "loss 1 → 1.1: worse by 0.1, within the allowed 0.1", id="loss-at-the-limit"),
        pytest.param(LOSS_RISE, 1.0, 1.1001, "fail",
                     "loss 1 → 1.1001: worse by 0.1001, more than the allowed 0.1",
                     id="loss-beyond"),
        pytest.param(LOSS_RISE, 1.0, 0.5, "pass", "loss 1 → 0.5: no worse than the baseline",
                     id="loss-fell"),
        pytest.param(RELATIVE, 0.9, 0.882, "pass",
                     "accuracy 0.9 → 0.882: worse by 2%, within the allowed 2%",
                     id="relative-at-the-limit"),
        pytest.param(RELATIVE, 0.9, 0.8819, "fail",
                     "accuracy 0.9 → 0.8819: worse by 2.01%, more than the allowed 2%",
                     id="relative-beyond"),
        pytest.param("{metric: margin, max_relative_degradation: 0.1}", -2.0, -2.2, "pass",
                     "margin -2 → -2.2: worse by 10%, within the allowed 10%",
                     id="relative-to-a-negative-baseline"),
        pytest.param(ERRORS, 0, 1, "fail",
                     "errors 0 → 1: worse than a baseline of 0, which no relative limit allows",
                     id="zero-baseline-worse"),
        pytest.param(ERRORS, 0, 0, "pass", "errors 0 → 0: no worse than the baseline",
                     id="zero-baseline-same"),
    ],
)  # fmt: skip
def test_metric_rules_at_their_margins(
    policy_file, gate, rule, baseline, candidate, status, message
) -> None:
    policy = rule_policy(policy_file, rule)
    metric = rule.split("metric: ")[1].split(",")[0]
    result = gate(policy, document(tensor("w")), {metric: baseline}, {metric: candidate})
    check = only_check(result)
    assert (check["status"], check["message"]) == (status, message)
    assert check["metric"] == metric
    assert result["verdict"] == ("pass" if status == "pass" else "fail")


def test_each_limit_of_a_rule_is_its_own_check(policy_file, gate) -> None:
    policy = rule_policy(
        policy_file,
        "{metric: accuracy, threshold: 0.8, max_degradation: 0.01, max_relative_degradation: 0.02, "
        "severity: warning}",
    )
    result = gate(policy, document(), {"accuracy": 0.9}, {"accuracy": 0.85})
    checks = result["regression_test"]["checks"]
    assert [(c["rule"], c["status"], c["threshold"]) for c in checks if "metric" in c] == [
        ("regression_test.metrics.rules[0].threshold", "pass", 0.8),
        ("regression_test.metrics.rules[0].max_degradation", "fail", 0.01),
        ("regression_test.metrics.rules[0].max_relative_degradation", "fail", 0.02),
    ]
    assert result["verdict"] == "warn"
    assert result["regression_test"]["degradation"] == pytest.approx(0.05 / 0.9)


def test_degradation_is_the_worst_relative_metric_drop(policy_file, gate) -> None:
    policy = policy_file("""\
        version: 1
        regression_test:
          max_relative_change: 0.05
          metrics:
            rules:
              - {metric: accuracy, threshold: 0.5}
              - {metric: loss, greater_is_better: false, threshold: 9}
    """)  # fmt: skip
    metrics = {"accuracy": 0.8, "loss": 2.0}, {"accuracy": 0.88, "loss": 2.5}
    result = gate(policy, document(tensor("w", relative_l2=1.0)), *metrics)
    assert result["regression_test"]["degradation"] == pytest.approx(0.25)
    improved = gate(
        policy, document(), {"accuracy": 0.8, "loss": 2.0}, {"accuracy": 0.88, "loss": 1.0}
    )
    assert improved["regression_test"]["degradation"] == pytest.approx(-0.1)


@pytest.mark.parametrize(
    ("candidate", "problem"),
    [
        pytest.param({"acc": 0.9}, "accuracy is missing from the candidate metrics (eval/c.json)",
                     id="missing"),
        pytest.param({"accuracy": "0.9"}, "is '0.9', not a number", id="text"),
        pytest.param({"accuracy": None}, "is null, not a number", id="null"),
        pytest.param({"accuracy": True}, "is true, not a number", id="bool"),
        pytest.param({"accuracy": float("nan")}, "is nan, not a finite number", id="nan"),
    ],
)  # fmt: skip
def test_an_unusable_metric_fails_its_check_naming_file_and_key(
    policy_file, gate, candidate, problem
) -> None:
    policy = rule_policy(policy_file, FLOOR)
    result = gate(policy, document(), None, MetricsFile(candidate, source="eval/c.json"))
    where = "accuracy in the candidate metrics (eval/c.json) "
    message = problem if problem.startswith("accuracy") else where + problem
    check = only_check(result)
    assert check["status"] == "fail"
    assert check["message"] == f"{message}; the rule cannot pass without it"
    assert result["verdict"] == "fail"


def test_a_missing_baseline_metric_names_the_baseline_file(policy_file, gate, tmp_path) -> None:
    Path("base.json").write_text(json.dumps({"eval": {}}))
    policy = rule_policy(policy_file, "{metric: eval.accuracy, max_degradation: 0.1}")
    result = gate(policy, document(), load_metrics("base.json"), {"eval": {"accuracy": 0.9}})
    assert only_check(result)["message"] == (
        "eval.accuracy is missing from the baseline metrics (base.json); "
        "the rule cannot pass without it"
    )


def test_a_rule_without_the_file_it_needs_is_a_policy_error(policy_file) -> None:
    policy = rule_policy(policy_file, "{metric: accuracy, max_degradation: 0.01}")
    with pytest.raises(PolicyError) as raised:
        evaluate(policy, document(), None, {"accuracy": 0.9})
    assert str(raised.value) == (
        "regression_test.metrics.rules[0] (accuracy) needs the baseline's metrics: "
        "set regression_test.metrics.baseline or pass --metrics-baseline"
    )


def test_a_threshold_needs_only_the_candidate(policy_file, gate) -> None:
    policy = rule_policy(policy_file, "{metric: accuracy, threshold: 0.8}")
    assert gate(policy, document(), None, {"accuracy": 0.81})["verdict"] == "pass"


@pytest.mark.parametrize(
    ("values", "key", "found"),
    [
        pytest.param({"eval": {"accuracy": 0.9}}, "eval.accuracy", 0.9, id="nested"),
        pytest.param({"eval.accuracy": 0.8, "eval": {"accuracy": 0.9}}, "eval.accuracy", 0.8,
                     id="literal-dotted-key-wins"),
        pytest.param({"results": {"mmlu.stem": {"acc": 0.5}}}, "results.mmlu.stem.acc", 0.5,
                     id="dotted-key-inside"),
        pytest.param({"a": {"b": 1}}, "a.c", MISSING, id="missing"),
        pytest.param({"a": 1}, "a.b", MISSING, id="not-a-mapping"),
        pytest.param({"a": None}, "a", None, id="null-is-a-value"),
    ],
)  # fmt: skip
def test_dotted_metric_keys(values, key, found) -> None:
    assert lookup(values, key) is found or lookup(values, key) == found


def test_metrics_files_are_json_or_yaml(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text('{"eval": {"accuracy": 0.91}}')
    (tmp_path / "m.yaml").write_text("eval:\n  accuracy: 0.91\n")
    for name in ("m.json", "m.yaml"):
        loaded = load_metrics(tmp_path / name)
        assert loaded == {"eval": {"accuracy": 0.91}}
        assert loaded.source == str(tmp_path / name)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        pytest.param("m.json", '{"accuracy": 0.9,}',
                     "m.json:1: invalid JSON: Expecting property name enclosed in double quotes",
                     id="bad-json"),
        pytest.param("m.yaml", "accuracy: [0.9\n", "m.yaml:2: invalid YAML: while parsing a flow "
                     "sequence, expected ',' or ']', but got '<stream end>'", id="bad-yaml"),
        pytest.param("m.json", "[0.9]",
                     "m.json: expected a mapping of metric names to values, got a list", id="list"),
        pytest.param("m.yaml", "", "m.yaml: the metrics file is empty", id="empty"),
    ],
)  # fmt: skip
def test_broken_metrics_files_are_policy_errors(tmp_path, monkeypatch, name, text, message) -> None:
    monkeypatch.chdir(tmp_path)
    Path(name).write_text(text)
    with pytest.raises(PolicyError) as raised:
        load_metrics(name)
    assert str(raised.value) == message


def test_a_missing_metrics_file_is_a_policy_error(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PolicyError, match=r"^eval/base\.json: no such metrics file$"):
        load_metrics("eval/base.json")


def test_metrics_files_resolve_against_the_policy_folder(tmp_path) -> None:
    """As other tools' configs do: the same policy works from any working directory."""
    folder = tmp_path / "conf"
    folder.mkdir()
    absolute = tmp_path / "abs.json"
    (folder / "policy.yaml").write_text(
        "version: 1\nregression_test:\n  metrics:\n    baseline: eval/b.json\n"
        f"    candidate: {absolute}\n    rules: [{{metric: a, threshold: 1}}]\n"
    )
    policy = load_policy(folder / "policy.yaml")
    assert policy_metric_files(policy) == (folder / "eval/b.json", absolute)


def test_a_policy_without_metrics_files_names_none(policy_file) -> None:
    assert policy_metric_files(rule_policy(policy_file, "{metric: a, threshold: 1}")) == (
        None,
        None,
    )


METRIC_POLICY = """\
version: 1
regression_test:
  metrics:
    baseline: eval/base.json
    candidate: eval/cand.json
    rules:
      - {metric: %s, max_degradation: 0.01}
"""


@pytest.fixture
def gated_run(run_cli, write_safetensors, tmp_path, monkeypatch):
    """The CLI run from another folder, with a policy and metrics files in ``conf/``."""
    (tmp_path / "conf" / "eval").mkdir(parents=True)
    (tmp_path / "conf/eval/base.json").write_text('{"eval": {"accuracy": 0.9, "loss": 0.3}}')
    (tmp_path / "conf/eval/cand.json").write_text('{"eval": {"loss": 0.3}}')
    model = write_safetensors("m.safetensors", {"w": np.ones(3, np.float32)})
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")

    def run(metric: str, *argv: str):
        (tmp_path / "conf/policy.yaml").write_text(METRIC_POLICY % metric)
        return run_cli(model, model, "--policy", "../conf/policy.yaml", *argv)

    return run


def test_a_metric_in_neither_file_is_a_policy_error_with_the_nearest_key(gated_run) -> None:
    result = gated_run("eval.acuracy")
    assert (result.code, result.out) == (2, "")
    assert result.err == (
        "diffai: error: regression_test.metrics.rules[0].metric: 'eval.acuracy' is in neither "
        "the baseline metrics (../conf/eval/base.json) nor the candidate metrics "
        "(../conf/eval/cand.json); did you mean eval.accuracy?\n"
    )


def test_a_metric_only_the_baseline_has_is_a_failed_check(gated_run) -> None:
    """The candidate's evaluation crashed before writing accuracy: the gate fails, exit 1."""
    result = gated_run("eval.accuracy")
    assert result.code == 1
    assert (
        "  error regression_test.metrics.rules[0].max_degradation: eval.accuracy is missing "
        "from the candidate metrics (../conf/eval/cand.json); the rule cannot pass without it"
    ) in result.out.splitlines()


def test_command_line_metrics_stay_relative_to_the_working_directory(gated_run) -> None:
    Path("cand.json").write_text('{"eval": {"accuracy": 0.895}}')
    result = gated_run("eval.accuracy", "--metrics-candidate", "cand.json")
    assert result.code == 0
    assert "verdict: pass — 7 checks passed, 2 skipped" in result.out.splitlines()
