"""The PR comment and the JUnit file: verdict first, hostile names inert, size bounded."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import diffai
from diffai.renderers.junit import render_junit
from diffai.renderers.markdown import COMMENT_LIMIT, render_markdown

POLICY = """version: 1
regression_test:
  max_relative_change: 0.05
  overrides:
    - match: "head.*"
      max_relative_change: 0.01
      severity: warning
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def weights(**changes: float) -> dict[str, np.ndarray]:
    base = {
        "body.weight": np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8),
        "head.weight": np.linspace(1, 2, 16, dtype=np.float32).reshape(2, 8),
    }
    return {
        name: value * (1 + changes.get(name.split(".")[0], 0.0)) for name, value in base.items()
    }


def compare(write_safetensors, policy: Path, cand: dict) -> dict:
    base_path = write_safetensors("base.safetensors", weights())
    cand_path = write_safetensors("cand.safetensors", cand)
    return diffai.compare(base_path, cand_path, policy=policy).document


@pytest.mark.parametrize(
    ("changes", "headline", "sentence"),
    [
        pytest.param({"body": 0.01}, "## ✅ diffai: pass", "Every check passed (", id="pass"),
        pytest.param(
            {"head": 0.02}, "## ⚠️ diffai: warn", "Only warnings: 1 warning check failed", id="warn"
        ),
        pytest.param({"body": 0.2}, "## ❌ diffai: fail", "1 error check failed", id="fail"),
    ],
)
def test_the_verdict_comes_first(write_safetensors, policy, changes, headline, sentence) -> None:
    document = compare(write_safetensors, policy, weights(**changes))
    lines = render_markdown(document, marker="<!-- diffai -->").splitlines()
    assert lines[:2] == ["<!-- diffai -->", headline]
    assert lines[3].startswith(sentence)


def test_failed_checks_name_every_tensor_and_layers_show_a_bar(write_safetensors, policy) -> None:
    document = compare(write_safetensors, policy, weights(body=0.2, head=0.02))
    text = render_markdown(document)
    failed = text.split("### Failed checks")[1].split("###")[0]
    rule = "<code>regression&#95;test.<wbr>max&#95;relative&#95;change</code>"
    assert f"- ❌ {rule} (error): observed 0.2, threshold 0.05<br>" in failed
    assert "worst: <code>body.<wbr>weight</code>" in failed
    assert "worst: <code>head.<wbr>weight</code>" in failed
    layers = text.split("### Most-changed layers")[1]
    assert "| <code>body</code> | 20% | `████████████` | 1/1 | 64 |" in layers
    assert "xychart-beta" in text and 'x-axis ["body", "head"]' in text
    assert "bar [20.0, 2.0]" in text


HOSTILE = "<img src=x onerror=alert(1)>|@admin **b** [l](http://x) `c` #1 :smile: \\"


def test_hostile_tensor_names_cannot_escape_their_cell(write_safetensors, policy) -> None:
    base = {HOSTILE: np.ones(4, np.float32)}
    cand = {HOSTILE: np.full(4, 2.0, np.float32)}
    document = diffai.compare(
        write_safetensors("a.safetensors", base),
        write_safetensors("b.safetensors", cand),
        policy=policy,
    ).document
    text = render_markdown(document)
    without_entities = re.sub(r"&#\d+;", "", text.replace("```", ""))
    for raw in ("<img", "@admin", "**b**", "](", "`c`", "#1", ":smile:", "\\"):
        assert raw not in without_entities, raw
    row = next(line for line in text.splitlines() if " | changed | " in line)
    assert row.count("|") == 5  # the name's pipe is an entity, not a cell border
    assert "&#124;&#64;admin" in row


def test_comment_stays_under_the_limit_for_5000_tensors(write_safetensors, policy) -> None:
    base = {f"blocks.{i}.mlp.fc.weight": np.full(4, 1.0, np.float32) for i in range(5000)}
    cand = {name: value * (1 + i % 7 / 10) for i, (name, value) in enumerate(base.items())}
    document = diffai.compare(
        write_safetensors("a.safetensors", base),
        write_safetensors("b.safetensors", cand),
        policy=policy,
    ).document
    text = render_markdown(document)
    assert len(text) <= COMMENT_LIMIT
    assert re.search(r"Left out to stay within GitHub's size limit: [\d,]+ tensors", text)
    assert " more\n" in text.split("### Failed checks")[1]  # 5 names, then a count
    assert text.count("\n| 0-78 | ") == 1  # 5,000 blocks in 64 rows of runs
    assert text.rstrip().endswith("</sub>")


def test_junit_has_one_testcase_per_check(write_safetensors, policy) -> None:
    document = compare(write_safetensors, policy, weights(body=0.2, head=0.02))
    root = ET.fromstring(render_junit(document))
    suite = root.find("testsuite")
    checks = document["regression_test"]["checks"] + document["deployment_readiness"]["checks"]
    cases = suite.findall("testcase")
    assert len(cases) == len(checks) == int(suite.get("tests"))
    failures = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failures] == ["max_relative_change"]
    assert suite.get("failures") == "1"
    assert failures[0].find("failure").get("message").startswith("1 tensor changed by more than 5%")
    assert "tensor: body.weight" in failures[0].find("failure").text
    warned = [c for c in cases if c.find("system-out") is not None]
    assert [c.get("classname") for c in warned] == ["diffai.regression_test.overrides[0]"]
    skipped = [c for c in cases if c.find("skipped") is not None]
    assert int(suite.get("skipped")) == len(skipped) > 0


def test_junit_matches_the_expected_document_exactly() -> None:
    check = {"rule": "regression_test.fail_on_nan", "severity": "error", "status": "fail",
             "message": "1 tensor gained NaN values: w\x01 (+2 NaN)", "observed": 2,
             "threshold": True, "tensors": ["w\x01"]}  # fmt: skip
    document = {"regression_test": {"checks": [check]}, "deployment_readiness": {"checks": []}}
    assert render_junit(document) == (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<testsuites name="diffai">\n'
        '  <testsuite name="diffai policy" tests="1" failures="1" errors="0" skipped="0">\n'
        '    <testcase classname="diffai.regression_test" name="fail_on_nan">\n'
        '      <failure message="1 tensor gained NaN values: w\\x01 (+2 NaN)"'
        ' type="regression_test.fail_on_nan">observed: 2\n'
        "threshold: True\n"
        "tensor: w\\x01</failure>\n"
        "    </testcase>\n"
        "  </testsuite>\n"
        "</testsuites>\n"
    )


def test_cli_writes_markdown_and_junit_and_exits_by_the_verdict(
    run_cli, write_safetensors, policy, tmp_path, validate_report
) -> None:
    base = write_safetensors("base.safetensors", weights())
    cand = write_safetensors("cand.safetensors", weights(body=0.2))
    out = {name: tmp_path / name for name in ("r.json", "c.md", "j.xml")}
    result = run_cli(base, cand, "--policy", policy, "--report", out["r.json"],
                     "--markdown", out["c.md"], "--junit", out["j.xml"])  # fmt: skip
    assert result.code == 1
    assert "regression_test: passed=false, degradation=4.00x_limit, severity=error" in result.out
    assert out["c.md"].read_text().startswith("## ❌ diffai: fail")
    ET.parse(out["j.xml"])
    import json

    validate_report(json.loads(out["r.json"].read_text()))
    assert (
        run_cli(
            base, write_safetensors("c2.safetensors", weights(head=0.02)), "--policy", policy
        ).code
        == 0
    )
    assert run_cli(base, base, "--verdict").code == 0


def test_a_bad_policy_exits_2_before_reading_models(run_cli, tmp_path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("version: 1\nregression_test:\n  max_relativ_change: 0.05\n")
    result = run_cli(tmp_path / "missing.pt", tmp_path / "missing.pt", "--policy", bad)
    assert result.code == 2
    assert result.err == (
        f"diffai: error: {bad}:3: regression_test.max_relativ_change: unknown key, "
        "did you mean max_relative_change?\n"
    )
