"""The policy gate on real safetensors files compared by ``diffai.compare``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

import diffai
from diffai.policy import evaluate, load_metrics, policy_metric_files
from tests.test_policy_rules import REINIT, policy_loader

FIVE_PERCENT = "version: 1\nregression_test:\n  max_relative_change: 0.05\n"
DENSE = "encoder.layer.0.output.dense.weight"


@pytest.fixture
def policy_file(tmp_path, monkeypatch):
    return policy_loader(tmp_path, monkeypatch)


@pytest.fixture
def weights() -> dict[str, np.ndarray]:
    """A small transformer-shaped state dict."""
    rng = np.random.default_rng(7)
    shapes = {
        "embeddings.word_embeddings.weight": (64, 32),
        REINIT: (32, 32),
        "encoder.layer.0.attention.self.query.bias": (32,),
        DENSE: (32, 32),
        "classifier.weight": (4, 32),
    }
    state = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    state["bn.num_batches_tracked"] = np.array(100, dtype=np.int64)
    return state


def fine_tuned(state: dict[str, np.ndarray], scale: float = 0.01) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(8)
    tuned = {
        k: v + scale * np.std(v) * rng.standard_normal(v.shape).astype(v.dtype)
        for k, v in state.items()
    }
    tuned["bn.num_batches_tracked"] = np.array(5000, dtype=np.int64)
    return tuned


def compared(
    write_safetensors, baseline: dict[str, Any], candidate: dict[str, Any]
) -> dict[str, Any]:
    base = write_safetensors("base.safetensors", baseline)
    cand = write_safetensors("cand.safetensors", candidate)
    return with_quantization_measured(diffai.compare(base, cand).document)


def with_quantization_measured(document: dict[str, Any]) -> dict[str, Any]:
    """Where the analysis is not in the report yet: its relative error from the tensors' diffs."""
    analysis = document["analyses"]["quantization_analysis"]
    if analysis.get("computed") is False:
        retyped = [t["diff"] for t in document["tensors"] if t["status"] == "dtype_changed"]
        change = math.sqrt(sum(d["l2"] ** 2 for d in retyped))
        size = math.sqrt(sum(d["baseline_l2"] ** 2 for d in retyped))
        analysis.update(detected=bool(retyped), relative_error=change / size if retyped else None)
        analysis.pop("computed")
    return document


def gated(validate_report, policy, document, *metrics) -> dict[str, Any]:
    result = evaluate(policy, document, *metrics)
    validate_report({**document, **result})
    return result


def failed_rules(result: dict[str, Any]) -> dict[str, list[str]]:
    checks = result["regression_test"]["checks"] + result["deployment_readiness"]["checks"]
    return {c["rule"]: c.get("tensors", []) for c in checks if c["status"] == "fail"}


def test_a_fine_tune_passes_and_a_reinitialized_layer_fails(
    policy_file, write_safetensors, validate_report, weights
) -> None:
    policy = policy_file(FIVE_PERCENT)
    tuned = fine_tuned(weights)
    passed = gated(validate_report, policy, compared(write_safetensors, weights, tuned))
    assert passed["verdict"] == "pass"
    tuned[REINIT] = np.random.default_rng(9).standard_normal((32, 32)).astype(np.float32)
    result = gated(validate_report, policy, compared(write_safetensors, weights, tuned))
    assert result["verdict"] == "fail"
    assert failed_rules(result) == {
        "regression_test.max_relative_change": [REINIT],
        "regression_test.fail_on_scrambled": [REINIT],
    }


def test_a_warning_override_on_the_head_warns(
    policy_file, write_safetensors, validate_report, weights
) -> None:
    policy = policy_file(
        FIVE_PERCENT + "  overrides: [{match: 'classifier.*', severity: warning}]\n"
    )
    tuned = fine_tuned(weights)
    tuned["classifier.weight"] = tuned["classifier.weight"] * 2
    result = gated(validate_report, policy, compared(write_safetensors, weights, tuned))
    assert failed_rules(result) == {
        "regression_test.overrides[0].max_relative_change": ["classifier.weight"]
    }
    assert result["verdict"] == "warn"


def test_nan_poisoning_fails_and_names_the_tensor(
    policy_file, write_safetensors, validate_report, weights
) -> None:
    poisoned = {**weights, DENSE: weights[DENSE].copy()}
    poisoned[DENSE][3, :5] = np.nan
    doc = compared(write_safetensors, weights, poisoned)
    result = gated(validate_report, policy_file("version: 1\n"), doc)
    assert failed_rules(result) == {"regression_test.fail_on_nan": [DENSE]}


def test_pruning_fails_unless_removal_is_allowed(
    policy_file, write_safetensors, validate_report, weights
) -> None:
    pruned = {k: v for k, v in weights.items() if k != "classifier.weight"}
    doc = compared(write_safetensors, weights, pruned)
    assert failed_rules(gated(validate_report, policy_file("version: 1\n"), doc)) == {
        "regression_test.allow_removed": ["classifier.weight"]
    }
    allowed = policy_file("version: 1\nregression_test:\n  allow_removed: true\n")
    assert gated(validate_report, allowed, doc)["verdict"] == "pass"


@pytest.mark.parametrize(("dtype", "verdict"), [(np.float16, "pass"), (ml_dtypes.bfloat16, "fail")])
def test_f16_meets_a_1e_3_quantization_budget_and_bf16_does_not(
    policy_file, write_safetensors, validate_report, weights, dtype, verdict
) -> None:
    policy = policy_file("""\
        version: 1
        regression_test:
          allow_dtype_change: true
        deployment_readiness:
          max_quantization_error: 1e-3
    """)  # fmt: skip
    cast = {k: v.astype(dtype) if v.dtype == np.float32 else v for k, v in weights.items()}
    result = gated(validate_report, policy, compared(write_safetensors, weights, cast))
    assert result["verdict"] == verdict
    failures = {"deployment_readiness.max_quantization_error": []} if verdict == "fail" else {}
    assert failed_rules(result) == failures


def test_metrics_files_gate_the_candidate(
    policy_file, write_safetensors, validate_report, weights
) -> None:
    Path("base.json").write_text('{"eval": {"accuracy": 0.91, "loss": 0.30}}')
    Path("cand.yaml").write_text("eval:\n  accuracy: 0.89\n  loss: 0.31\n")
    policy = policy_file("""\
        version: 1
        regression_test:
          metrics:
            baseline: base.json
            candidate: cand.yaml
            rules:
              - {metric: eval.accuracy, max_degradation: 0.01}
              - {metric: eval.loss, greater_is_better: false, max_relative_degradation: 0.05}
    """)  # fmt: skip
    files = [load_metrics(path) for path in policy_metric_files(policy)]
    result = gated(validate_report, policy, compared(write_safetensors, weights, weights), *files)
    assert failed_rules(result) == {"regression_test.metrics.rules[0].max_degradation": []}
    # the worst relative drop: loss, 0.30 -> 0.31
    assert result["regression_test"]["degradation"] == pytest.approx(0.01 / 0.30)
