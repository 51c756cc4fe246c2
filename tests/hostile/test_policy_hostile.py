"""Hostile policy and metrics files through the CLI.

A policy can come from the pull request's own tree, so it is as untrusted as
the models. tests/test_policy_load.py checks the loader's messages for alias
bombs, cycles, deep nesting, python tags and non-mapping documents; here they
go through ``diffai`` (the bombs in a bounded child), with files built to be
huge or endless, numbers Python cannot hold, and metrics that are not numbers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CliResult
from tests.hostile.conftest import Refusal, assert_refused, run_bounded
from tests.test_policy_load import alias_bomb

METRIC_RULE = """version: 1
regression_test:
  metrics:
    rules:
      - metric: accuracy
        threshold: 0.5
"""


@pytest.fixture
def judged(
    run_cli: Callable[..., CliResult], tmp_path: Path, baseline: Path
) -> Callable[..., Refusal]:
    """``diffai BASELINE BASELINE --report ... <flags>``, in this process."""

    def run(hostile: Path, *flags: str | Path) -> Refusal:
        report = tmp_path / "report.json"
        result = run_cli(baseline, baseline, "--report", report, *flags)
        return Refusal(hostile, result.code, result.err, report.exists())

    return run


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("- version: 1\n", "expected a mapping of policy keys at the top level, got a "
                     "list", id="list"),
        pytest.param("just words\n", "got 'just words'", id="scalar"),
        pytest.param("!!binary aGVsbG8=\n", "got b'hello'", id="binary"),
        pytest.param("# nothing\n", "the policy file is empty", id="comment-only"),
        pytest.param("version: 1\nx: " + "9" * 5000 + "\n",
                     "invalid YAML value: Exceeds the limit (4300 digits)", id="5000-digits"),
        pytest.param("version: 1\nsince: 2024-13-01\n", "month must be in 1..12", id="13th-month"),
        pytest.param("version: 1\nx: " + "[" * 600 + "]" * 600 + "\n", "nested too deeply",
                     id="600-deep"),
        pytest.param("version: 1\nx: " + "a" * (64 << 10) + "\n", "over 65,536 bytes, too big for "
                     "a policy file", id="64KiB"),
        pytest.param(b"version: 1\n\xff\n", "not a text file (not UTF-8)", id="not-utf8"),
        pytest.param("version: 1\nregression_test:\n  max_relative_change: 1e400\n",
                     ":3: regression_test.max_relative_change: expected a finite number, got inf",
                     id="1e400-is-infinity"),
        pytest.param("version: 1\ndeployment_readiness:\n  max_size_increase_mb: -1e999\n",
                     ":3: deployment_readiness.max_size_increase_mb: expected a finite number, "
                     "got -inf", id="minus-1e999"),
        pytest.param("version: 1\nregression_test:\n  max_abs_diff: .inf\n",
                     "max_abs_diff: expected a finite number, got inf", id="yaml-inf"),
    ],
)  # fmt: skip
def test_a_hostile_policy_is_refused(
    judged: Callable[..., Refusal], tmp_path: Path, text: str | bytes, problem: str
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert_refused(judged(policy, "--policy", policy), problem)


def test_a_python_tag_never_runs(judged: Callable[..., Refusal], tmp_path: Path, sentinel: Path):
    policy = write(
        tmp_path / "policy.yaml",
        f"version: 1\nx: !!python/object/apply:os.system ['touch {sentinel}']\n",
    )
    problem = "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object"
    assert_refused(judged(policy, "--policy", policy), problem)
    assert not sentinel.exists()


def as_policy(baseline: Path, hostile: Path) -> list[str]:
    return [str(baseline), str(baseline), "--policy", str(hostile)]


def test_bombs_and_endless_policies_cost_bounded_memory_and_time(tmp_path: Path) -> None:
    """Each would exhaust memory if read naively, or block for ever: refused in a bounded child."""
    billion_laughs = write(tmp_path / "laughs.yaml", alias_bomb(9))
    cycle = write(tmp_path / "cycle.yaml", "version: 1\nregression_test: &r\n  x: *r\n")
    endless = tmp_path / "endless.yaml"
    endless.symlink_to("/dev/zero")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    expected = {
        billion_laughs: "YAML aliases expand the file beyond 100,000 values",
        cycle: "YAML aliases expand the file beyond 100,000 values",
        endless: "not a regular file (a FIFO or a device?)",
        fifo: "not a regular file (a FIFO or a device?)",
    }
    for refusal in run_bounded(list(expected), as_policy):
        assert_refused(refusal, expected[refusal.hostile])


# --- metrics -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        pytest.param("m.json", "[0.9]", "expected a mapping of metric names to values, got a list",
                     id="json-list"),
        pytest.param("m.yaml", "0.9\n", "expected a mapping of metric names to values, got 0.9",
                     id="yaml-scalar"),
        pytest.param("m.json", '{"accuracy": ' + "9" * 5000 + "}",
                     "invalid JSON value: Exceeds the limit (4300 digits)", id="5000-digits"),
        pytest.param("m.json", "[" * 100_000 + "]" * 100_000, "nested too deeply",
                     id="100k-deep"),
        pytest.param("m.json", '{"a": "' + "x" * (16 << 20) + '"}',
                     "over 16,777,216 bytes, too big for a metrics file", id="16MiB"),
        pytest.param("m.json", '{"accuracy": 0.1, "loss": 2, "accuracy": 0.9}',
                     "m.json: duplicate key 'accuracy' in the metrics file", id="json-repeated"),
        pytest.param("m.json", '{"eval": {"accuracy": 0.1, "accuracy": 0.9}}',
                     "duplicate key 'accuracy' in the metrics file", id="json-nested-repeated"),
        pytest.param("m.yaml", "accuracy: 0.1\nloss: 2\naccuracy: 0.9\n",
                     "m.yaml:3: accuracy: duplicate key (first at line 1)", id="yaml-repeated"),
        pytest.param("m.yaml", "eval:\n  accuracy: 0.1\n  accuracy: 0.9\n",
                     "m.yaml:3: eval.accuracy: duplicate key (first at line 2)",
                     id="yaml-nested-repeated"),
    ],
)  # fmt: skip
def test_hostile_metrics_are_refused(
    judged: Callable[..., Refusal], tmp_path: Path, name: str, text: str, problem: str
) -> None:
    policy = write(tmp_path / "policy.yaml", METRIC_RULE)
    metrics = write(tmp_path / name, text)
    refusal = judged(metrics, "--policy", policy, "--metrics-candidate", metrics)
    assert_refused(refusal, problem)


@pytest.mark.parametrize(
    ("name", "text", "shown"),
    [
        pytest.param("m.json", '{"accuracy": NaN}', "nan", id="json-NaN"),
        pytest.param("m.json", '{"accuracy": -Infinity}', "-inf", id="json-Infinity"),
        pytest.param("m.yaml", "accuracy: .nan\n", "nan", id="yaml-nan"),
        pytest.param("m.yaml", "accuracy: .inf\n", "inf", id="yaml-inf"),
    ],
)
def test_a_metric_that_is_not_a_finite_number_fails_its_rule(
    run_cli: Callable[..., CliResult], tmp_path: Path, baseline: Path, name: str, text: str,
    shown: str,
) -> None:  # fmt: skip
    """Not trouble (exit 2) but a failed gate (exit 1): a diverged run's metrics are NaN, and a
    gate never passes on a number it cannot compare. The report stays strict JSON."""
    policy = write(tmp_path / "policy.yaml", METRIC_RULE)
    metrics = write(tmp_path / name, text)
    report = tmp_path / "report.json"
    result = run_cli(baseline, baseline, "--policy", policy, "--metrics-candidate", metrics,
                     "--report", report)  # fmt: skip
    assert (result.code, result.err) == (1, "")
    document = json.loads(report.read_text(), parse_constant=_refuse_constant)
    check = next(c for c in document["regression_test"]["checks"] if c.get("metric") == "accuracy")
    assert check["status"] == "fail" and check["observed"] is None
    assert (
        f"accuracy in the candidate metrics ({metrics}) is {shown}, not a finite number"
        in (check["message"])
    )


def _refuse_constant(token: str) -> None:
    raise AssertionError(f"the report holds {token}, which strict JSON has not")
