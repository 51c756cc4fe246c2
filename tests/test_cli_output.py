"""What the command prints beyond the change lines: the verdict block, jsonl, order, scalars."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffai.renderers.outcome import verdict_lines
from tests.test_cli import from_summary

RNG = np.random.default_rng(3)
W = RNG.standard_normal((8, 4)).astype(np.float32)
B = RNG.standard_normal(8).astype(np.float32)

FAILING_POLICY = """\
version: 1
regression_test:
  max_relative_change: 0.05
  overrides:
    - match: "head.*"
      severity: warning
deployment_readiness:
  max_size_increase_mb: 0
"""


@pytest.fixture
def drifted(write_safetensors) -> tuple[Path, Path]:
    """fc.weight drifts 50% and head.weight is removed; fc.bias and head.bias are untouched."""
    base = write_safetensors(
        "base.safetensors", {"fc.weight": W, "fc.bias": B, "head.weight": W, "head.bias": B}
    )
    cand = write_safetensors(
        "cand.safetensors",
        {"fc.weight": W * 1.5, "fc.bias": B, "head.bias": B * 2, "extra": np.ones(300, np.float32)},
    )
    return base, cand


def verdict_block(text: str) -> list[str]:
    lines = from_summary(text)
    return [line for line in lines[1:] if not line.startswith(("  ~", "  +", "  -"))]


def test_a_failing_policy_says_why_in_the_log(run_cli, drifted, tmp_path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(FAILING_POLICY)
    result = run_cli(*drifted, "--policy", policy)
    assert result.code == 1
    assert verdict_block(result.out) == [
        "verdict: fail — 2 error checks failed, 2 warning checks failed",
        "  error regression_test.max_relative_change: 1 tensor changed by more than 5% "
        "(worst: fc.weight, 50%)",
        "  warning regression_test.overrides[0].max_relative_change: 1 tensor matching "
        "'head.*' changed by more than 5% (worst: head.bias, 100.0%)",
        "  warning regression_test.overrides[0].allow_removed: 1 tensor matching 'head.*' "
        "was removed: head.weight",
        # a budget of 0 is a budget, not "unset"
        "  error deployment_readiness.max_size_increase_mb: size changed by +1.05 KB, "
        "more than the allowed +0 MB",
    ]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(["--verdict"], "verdict: pass — 6 checks passed, 2 skipped", id="verdict"),
        pytest.param([], None, id="no-verdict-asked"),
        pytest.param(["--brief", "--verdict"], None, id="brief"),
    ],
)
def test_the_verdict_line_only_when_asked(run_cli, write_safetensors, argv, expected) -> None:
    base = write_safetensors("a.safetensors", {"w": W})
    cand = write_safetensors("b.safetensors", {"w": W * 1.01})
    result = run_cli(base, cand, *argv)
    verdicts = [line for line in result.out.splitlines() if line.startswith("verdict:")]
    assert verdicts == ([expected] if expected else [])


def test_a_check_shows_ten_tensors_and_counts_the_rest(run_cli, write_safetensors) -> None:
    names = [f"layers.{i}.weight" for i in range(13)]
    base = write_safetensors("a.safetensors", {name: W for name in names})
    cand = write_safetensors("b.safetensors", {names[0]: W})
    result = run_cli(base, cand, "--verdict")
    (line,) = [line for line in result.out.splitlines() if "allow_removed" in line]
    shown = ", ".join(names[1:11])
    assert line.endswith(f"; tensors: {shown} and 2 more (every one in --report)")


def test_a_check_line_stays_one_line_whatever_its_tensor_names() -> None:
    check = {"rule": "regression_test.fail_on_nan", "severity": "error", "status": "fail",
             "message": "1 tensor gained NaN (a\nb)", "tensors": ["a\n::error::x"]}  # fmt: skip
    document = {"verdict": "fail", "regression_test": {"checks": [check]},
                "deployment_readiness": {"checks": []}}  # fmt: skip
    assert verdict_lines(document)[1] == (
        "  error regression_test.fail_on_nan: 1 tensor gained NaN (a\\nb); tensors: a\\n::error::x"
    )


def test_identical_models_say_so_and_brief_stays_quiet(run_cli, write_safetensors) -> None:
    base = write_safetensors("a.safetensors", {"w": W})
    result = run_cli(base, base)
    assert from_summary(result.out)[1:] == ["identical: no compared tensor or scalar differs"]
    assert (result.code, run_cli(base, base, "--brief").out) == (0, "")
    changed = run_cli(base, write_safetensors("b.safetensors", {"w": W * 2}))
    assert not any(line.startswith("identical") for line in changed.out.splitlines())


def test_checkpoint_scalars_print_like_the_tensor_figures(run_cli, tmp_path) -> None:
    base, cand = tmp_path / "a.pt", tmp_path / "b.pt"
    common = {"w": torch.ones(2)}
    torch.save({**common, "epoch": 1, "loss": 0.14706043899059296, "tag": "run 1",
                "betas": [0.9, 0.999], "ema": True}, base)  # fmt: skip
    torch.save({**common, "epoch": 10, "loss": 0.12806765735149384, "tag": 'run "2"',
                "betas": [0.9, 0.99], "ema": False}, cand)  # fmt: skip
    result = run_cli(base, cand)
    assert from_summary(result.out)[1:] == [
        "  ~ epoch: 1->10",
        "  ~ loss: 0.1471->0.1281",
        '  ~ tag: "run 1"->"run \\"2\\""',
        "  ~ betas: [0.9, 0.999]->[0.9, 0.99]",
        "  ~ ema: true->false",
    ]
    assert "training_progress: epoch 1->10, loss 0.1471->0.1281 (-13%)" in result.out


def test_safetensors_names_come_in_natural_order(
    run_cli, write_safetensors, tmp_path, validate_report
) -> None:
    names = ["layers.10.weight", "layers.2.weight", "layers.1.weight", "embed.weight"]
    base = write_safetensors("a.safetensors", {name: W for name in names})
    cand = write_safetensors("b.safetensors", {name: W * 2 for name in names})
    report = tmp_path / "report.json"
    result = run_cli(base, cand, "--report", report)
    natural = ["embed.weight", "layers.1.weight", "layers.2.weight", "layers.10.weight"]
    assert [line.split(":")[0] for line in from_summary(result.out)[1:]] == [
        f"  ~ {name}" for name in natural
    ]
    document = json.loads(report.read_text())
    validate_report(document)
    assert [t["name"] for t in document["tensors"]] == natural
    assert [layer["name"] for layer in document["layers"]] == [n[:-7] for n in natural]


def test_a_state_dict_keeps_its_registration_order(run_cli, tmp_path) -> None:
    base, cand = tmp_path / "a.pt", tmp_path / "b.pt"
    order = ["layers.2.weight", "layers.10.weight", "layers.1.weight"]
    torch.save({name: torch.ones(2) for name in order}, base)
    torch.save({name: torch.full((2,), 2.0) for name in order}, cand)
    lines = from_summary(run_cli(base, cand).out)[1:]
    assert [line.split(":")[0] for line in lines] == [f"  ~ {name}" for name in order]


def test_jsonl_appends_runs_a_program_reads_line_by_line(run_cli, drifted, write_safetensors):
    base, cand = drifted
    same = write_safetensors("same.safetensors", {"fc.weight": W, "fc.bias": B,
                                                  "head.weight": W, "head.bias": B})  # fmt: skip
    out = "".join(run_cli(base, model, "-o", "jsonl", "--exit-zero").out for model in (cand, same))
    records = [json.loads(line) for line in out.splitlines()]
    runs = [[r for r in records if r["candidate"] == str(model)] for model in (cand, same)]
    assert len(runs[0]) + len(runs[1]) == len(records)
    assert all(r["baseline"] == str(base) and set(r) == {"baseline", "candidate", "kind", "data"}
               for r in records)  # fmt: skip
    assert (runs[1][0]["kind"], runs[1][-1]["kind"]) == ("summary", "verdict")
    assert runs[1][0]["data"]["identical"] is True
    assert runs[0][0]["data"]["identical"] is False
    verdict = runs[0][-1]["data"]
    assert (verdict["verdict"], verdict["policy"]) == ("fail", "default")
    assert [c["rule"] for c in verdict["failed_checks"]] == ["regression_test.allow_removed"]
    kinds = [r["kind"] for r in runs[0]]
    assert kinds.count("TensorStatsChanged") == 2 and "TensorRemoved" in kinds


@pytest.mark.parametrize("output", ["json", "jsonl", "yaml"])
def test_layer_impact_is_in_the_records_when_asked(run_cli, drifted, output) -> None:
    import yaml

    def layer_records(*flags: str) -> list:
        text = run_cli(*drifted, "-o", output, *flags).out
        loaded = [json.loads(line) for line in text.splitlines()] if output == "jsonl" else (
            yaml.safe_load(text))  # fmt: skip
        return [r for r in loaded if "layer_impact" in (r.get("kind"), *r)]

    (record,) = layer_records("--show-layer-impact")
    layers = record.get("data") or record["layer_impact"]
    assert [layer["name"] for layer in layers] == ["fc", "head", "(root)"]
    assert layers[0]["relative_l2"] == pytest.approx(0.5 * np.linalg.norm(W) / np.hypot(
        np.linalg.norm(W), np.linalg.norm(B)), rel=1e-6)  # fmt: skip
    assert layer_records() == []


def test_a_verdict_line_lists_a_tensor_whose_name_only_prefixes_a_named_one() -> None:
    from diffai.renderers.outcome import verdict_lines

    check = {"rule": "regression_test.max_relative_change", "severity": "error",
             "status": "fail", "message": "2 tensors changed (worst: fc.weight_orig, 50%)",
             "tensors": ["fc.weight_orig", "fc.weight"]}  # fmt: skip
    document = {"verdict": "fail", "regression_test": {"checks": [check]},
                "deployment_readiness": {"checks": []}}  # fmt: skip
    assert verdict_lines(document)[1].endswith("; tensors: fc.weight_orig, fc.weight")
