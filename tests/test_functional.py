"""The functional comparison end to end: real and exported ONNX models run through the CLI."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from diffai.formats.isolated import ChildLimits, run_child
from diffai.functional import runner
from diffai.renderers.markdown import code
from tests.conftest import CliResult
from tests.functional_models import (
    VOCAB,
    cnn,
    encoder,
    export_cnn,
    export_encoder,
    f16_copy,
    fine_tuned,
    scrambled,
)
from tests.real_models import REAL
from tests.test_action_runner import PR, make_runner, make_workspace

SILERO = REAL / "silero_vad_16k_op15.onnx"
GATE = """version: 1
regression_test:
  functional:
    max_relative_l2: 0.05
    min_top1_agreement: 0.95
    max_kl_divergence: 0.01
"""


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("functional")
    files = {
        "cnn": export_cnn(cnn(), folder / "cnn.onnx"),
        "cnn_tuned": export_cnn(fine_tuned(cnn()), folder / "cnn_tuned.onnx"),
        "cnn_scrambled": export_cnn(
            scrambled(cnn(), lambda m: m.classifier), folder / "cnn_scrambled.onnx"
        ),
        "cnn_gray": export_cnn(cnn(channels=1), folder / "cnn_gray.onnx", channels=1),
        "encoder": export_encoder(encoder(), folder / "encoder.onnx"),
        "encoder_tuned": export_encoder(fine_tuned(encoder()), folder / "encoder_tuned.onnx"),
    }
    files["cnn_f16"] = f16_copy(files["cnn"], folder / "cnn_f16.onnx")
    files["silero_f16"] = f16_copy(SILERO, folder / "silero_f16.onnx")
    return files


@pytest.fixture
def gate(tmp_path: Path) -> Callable[..., Path]:
    def write(text: str = GATE) -> Path:
        path = tmp_path / "policy.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def judged(
    run_cli: Callable[..., CliResult], tmp_path: Path, validate_report: Callable[..., None]
) -> Callable[..., tuple[CliResult, dict[str, Any]]]:
    """The CLI with a policy and every output file; the report, checked against the schema."""

    def run(baseline: Path, candidate: Path, policy: Path, *extra: str) -> tuple[CliResult, Any]:
        files = {kind: tmp_path / f"out.{kind}" for kind in ("json", "md", "xml", "html")}
        result = run_cli(
            baseline, candidate, "--policy", policy, "--report", files["json"],
            "--markdown", files["md"], "--junit", files["xml"], "--html", files["html"], *extra,
        )  # fmt: skip
        assert "Traceback" not in result.err, result.err
        document = json.loads(files["json"].read_text()) if files["json"].exists() else None
        if document is not None:
            validate_report(document)
            document["_files"] = {kind: path.read_text() for kind, path in files.items()}
        return result, document

    return run


def _output(document: dict[str, Any], name: str = "logits") -> dict[str, Any]:
    return next(o for o in document["functional"]["outputs"] if o["name"] == name)


def _check(document: dict[str, Any], rule: str) -> dict[str, Any]:
    return next(c for c in document["regression_test"]["checks"] if c["rule"] == rule)


def test_identical_models_have_zero_drift(models, gate, judged) -> None:
    result, document = judged(models["cnn"], models["cnn"], gate())
    section, logits = document["functional"], _output(document)
    assert result.code == 0 and document["verdict"] == "pass"
    assert section["status"] == "compared" and section["probes"] == 256 and section["seed"] == 0
    assert len(section["inputs_sha256"]) == 64
    assert section["inputs"][0] | {"shape": [1, 3, 16, 16], "fill": "normal", "batch_axis": 0}
    assert logits["max_abs"] == logits["mean_abs"] == logits["relative_l2"] == 0.0
    assert logits["mismatch_fraction"] == 0.0 and logits["kl_divergence"] == 0.0
    assert logits["top1_agreement"] == 1.0 and logits["classes"] == 10
    assert logits["elements"] == 256 * 10
    assert "  ~ logits: rel_l2=0, cos=1, max_abs=0, mismatch=0%, top1=100%, kl=0" in result.out


def test_a_fine_tuned_copy_moves_within_tolerance_and_passes(models, gate, judged) -> None:
    result, document = judged(models["cnn"], models["cnn_tuned"], gate())
    logits = _output(document)
    assert result.code == 0 and document["verdict"] == "pass"
    assert 0 < logits["relative_l2"] < 0.01 and logits["top1_agreement"] > 0.95
    assert logits["mismatch_fraction"] > 0.5  # 1e-5 tolerances see every small move
    assert _check(document, "regression_test.functional.min_top1_agreement")["status"] == "pass"


def test_one_scrambled_layer_collapses_top1_and_fails_naming_the_output(
    models, gate, judged
) -> None:
    result, document = judged(models["cnn"], models["cnn_scrambled"], gate())
    check = _check(document, "regression_test.functional.min_top1_agreement")
    assert result.code == 1 and document["verdict"] == "fail"
    assert _output(document)["top1_agreement"] < 0.2
    assert check["status"] == "fail" and check["outputs"] == ["logits"]
    assert check["message"].startswith("1 of 1 outputs agree on the top-1 class in under 95%")
    assert "error regression_test.functional.min_top1_agreement: 1 of 1 outputs" in result.out
    files = document["_files"]
    assert "output: logits" in files["xml"]
    assert "### How the outputs moved" in files["md"] and "<code>logits</code>" in files["md"]
    assert "regression_test.functional.min_top1_agreement" in files["html"]


def test_an_f16_copy_shows_its_measured_drift(models, gate, judged) -> None:
    _, document = judged(models["cnn"], models["cnn_f16"], gate())
    logits = _output(document)
    assert 1e-6 < logits["relative_l2"] < 1e-3 and logits["cosine"] > 0.99999
    assert document["summary"]["dtype_changed"] == 6  # the weights' side of the same change


def test_silero_against_its_f16_copy_drifts_measurably_little(models, gate, judged) -> None:
    """Real audio model: audio-shaped probes, a zero recurrent state, sr a fixed setting."""
    policy = gate("version: 1\nregression_test:\n  functional:\n    max_relative_l2: 0.01\n")
    flags = ("--probe-shape", "input=1x576", "--probe-value", "sr=16000")
    _, document = judged(SILERO, models["silero_f16"], policy, *flags)
    section = document["functional"]
    fills = {i["name"]: (i["fill"], i["batch_axis"], i["shape"]) for i in section["inputs"]}
    assert fills == {
        "input": ("normal", 0, [1, 576]), "state": ("zeros", 1, [2, 1, 128]),
        "sr": ("value", None, []),
    }  # fmt: skip
    for name in ("output", "stateN"):
        drift = _output(document, name)
        assert 1e-6 < drift["relative_l2"] < 1e-2 and drift["cosine"] > 0.9999, drift
        assert "top1_agreement" not in drift  # one probability, and a state: no classes
    assert _check(document, "regression_test.functional.max_relative_l2")["status"] == "pass"


def test_a_changed_input_signature_is_one_clear_line(models, gate, judged) -> None:
    result, document = judged(models["cnn"], models["cnn_gray"], gate())
    lines = [line for line in result.out.splitlines() if line.startswith("functional:")]
    assert lines == [
        "functional: not compared: the candidate's inputs differ from the baseline's (image "
        "f32[batchx3x16x16] is now image f32[batchx1x16x16]), so the same probes cannot run both"
    ]
    assert _check(document, "regression_test.functional")["status"] == "fail"
    assert result.code == 1


def test_token_ids_stay_within_the_embedding_tables_rows(models, gate, judged) -> None:
    """No vocabulary given: the graph's Gather on the embedding table declares it."""
    policy = gate(GATE + "    inputs:\n      ids: {shape: [1, 8]}\n")
    result, document = judged(models["encoder"], models["encoder_tuned"], policy)
    ids = document["functional"]["inputs"][0]
    logits = _output(document)
    assert ids | {"fill": "token_ids", "vocab": VOCAB, "dtype": "i64"} == ids
    assert logits["classes"] == VOCAB and logits["shape"] == [32, 8, VOCAB]
    assert logits["top1_agreement"] > 0.95 and result.code == 0


def test_a_state_dict_has_no_functional_run_said_in_one_line(gate, judged, tmp_path) -> None:
    model = REAL / "silero_vad_16k.safetensors"
    result, document = judged(model, model, gate())
    assert document["functional"] == {
        "status": "not_run",
        "reason": "the baseline is safetensors and the candidate is safetensors, which holds "
        "no graph to run; only ONNX models run",
    }
    assert next(line for line in result.out.splitlines() if "functional" in line).startswith(
        "functional: not run: the baseline is safetensors"
    )
    assert _check(document, "regression_test.functional")["status"] == "skip"


def test_the_same_seed_gives_the_same_probes_and_another_seed_others(models, gate, judged) -> None:
    hashes = []
    for seed in (0, 0, 7):
        policy = gate(f"version: 1\nregression_test:\n  functional:\n    seed: {seed}\n")
        hashes.append(
            judged(models["cnn"], models["cnn"], policy)[1]["functional"]["inputs_sha256"]
        )
    assert hashes[0] == hashes[1] != hashes[2]


def test_probes_from_an_npz_file(models, gate, judged, tmp_path) -> None:
    np.savez(tmp_path / "probes.npz", image=np.ones((20, 3, 16, 16), np.float32))
    policy = gate("version: 1\nregression_test:\n  functional:\n    probe_inputs: probes.npz\n")
    _, document = judged(models["cnn"], models["cnn_tuned"], policy)
    section = document["functional"]
    assert section["probes"] == 20 and section["source"].endswith("probes.npz")
    assert _output(document)["elements"] == 200


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        pytest.param(
            (), "input 'sr' is a scalar, a setting rather than data; give its value with "
            "--probe-value sr=VALUE or regression_test.functional.inputs", id="setting",
        ),
        pytest.param(
            ("--probe-value", "sr=16000", "--probe-shape", "input=1xa"),
            "--probe-shape wants NAME=VALUE, such as input=1x3x224x224; got 'input=1xa'",
            id="bad-shape",
        ),
        pytest.param(
            ("--probe-value", "sr=16000", "--probe-shape", "input=1x3x4"),
            "probe shape 1x3x4 does not fit input input f32[batchxsequence]", id="wrong-rank",
        ),
        pytest.param(
            ("--probe-value", "rate=16000"),
            "probe input 'rate' is not an input of the model (it has input, state, sr)",
            id="unknown-input",
        ),
    ],
)  # fmt: skip
def test_probes_the_signature_cannot_give_are_one_line(gate, run_cli, flags, problem) -> None:
    result = run_cli(SILERO, SILERO, "--policy", gate(), *flags)
    assert result.code == 2 and result.err == f"diffai: error: {problem}\n"


def test_without_onnxruntime_it_names_the_extra(models, gate, run_cli, hide_module) -> None:
    hide_module("onnxruntime")
    result = run_cli(models["cnn"], models["cnn"], "--policy", gate())
    assert result.code == 2
    assert result.err.endswith("needs onnxruntime; install it with: pip install 'diffai[run]'\n")


def _graph_model(path: Path, nodes: list[onnx.NodeProto], *initializers: onnx.TensorProto) -> Path:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(initializers),
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_candidate_that_fails_to_run_fails_the_gate(gate, judged, tmp_path) -> None:
    baseline = _graph_model(tmp_path / "b.onnx", [helper.make_node("Relu", ["x"], ["y"])])
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [3])
    broken = _graph_model(
        tmp_path / "c.onnx", [helper.make_node("Reshape", ["x", "shape"], ["y"])], shape
    )
    result, document = judged(baseline, broken, gate())
    check = _check(document, "regression_test.functional")
    assert result.code == 1 and document["functional"]["status"] == "candidate_failed"
    assert check["status"] == "fail"
    assert check["message"].startswith(
        "the candidate did not run: ONNX Runtime failed on probe run 0: [ONNXRuntimeError] : 1 "
        ": FAIL : Non-zero status code returned while running Reshape node."
    )


def test_nan_outputs_fail_and_overrides_set_severity(gate, judged, tmp_path) -> None:
    baseline = _graph_model(tmp_path / "b.onnx", [helper.make_node("Abs", ["x"], ["y"])])
    nan = _graph_model(tmp_path / "c.onnx", [helper.make_node("Log", ["x"], ["y"])])
    _, document = judged(baseline, nan, gate())
    assert _check(document, "regression_test.functional.fail_on_nonfinite")["outputs"] == ["y"]
    assert document["verdict"] == "fail"
    warning = GATE + "    overrides:\n      - {match: 'y', severity: warning}\n"
    _, document = judged(baseline, nan, gate(warning))
    assert document["verdict"] == "warn"
    rule = "regression_test.functional.overrides[0].fail_on_nonfinite"
    assert _check(document, rule)["severity"] == "warning"


FILTERED = """
import socket, subprocess, sys
from diffai.functional.sandbox import deny_network_and_programs
deny_network_and_programs()
for attempt in (socket.socket, lambda: subprocess.run(["true"])):
    try:
        attempt()
        print("allowed")
    except PermissionError:
        print("denied")
"""


def test_a_filtered_child_can_open_no_socket_and_start_no_program() -> None:
    done = subprocess.run([sys.executable, "-c", FILTERED], capture_output=True, text=True)
    assert done.stdout.split() == ["denied", "denied"], done.stderr


ENV_DUMP = (
    "import json, os, sys; "
    "open(sys.argv[2], 'w').write(json.dumps(dict(os.environ)))"
)


def test_the_child_gets_no_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner's own child launch, with a child that writes down its environment."""
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    seen = tmp_path / "env.json"
    limits = ChildLimits(1 << 30, 20, 1 << 20)
    run_child(tmp_path, "the test child", limits, [str(seen)], ENV_DUMP, runner.CHILD_ENV)
    assert json.loads(seen.read_text()) == {"LC_ALL": "C", "OMP_NUM_THREADS": "1"}


def test_the_action_gates_a_classifier_pr_on_top1_and_comments_outputs_beside_weights(
    models: dict[str, Path], tmp_path: Path, github_api: Any
) -> None:
    """As a new user would: the Action, a policy with a functional section, a PR whose
    candidate scrambled the classifier; the comment shows outputs and weights together."""
    workspace = make_workspace(tmp_path)
    (workspace / "models").mkdir()
    for name in ("cnn", "cnn_scrambled"):
        shutil.copy(models[name], workspace / "models" / f"{name}.onnx")
    policy = "version: 1\nregression_test:\n  functional:\n    min_top1_agreement: 0.99\n"
    (workspace / "gate.yaml").write_text(policy, encoding="utf-8")
    step = make_runner(workspace, github_api, tmp_path).run(
        baseline="models/cnn.onnx", candidate="models/cnn_scrambled.onnx", policy="gate.yaml"
    )
    [comment] = github_api.comments_on(PR)
    assert step.code == 1, step.stderr
    outputs = comment.body.index("### How the outputs moved")
    weights = comment.body.index("### Most-changed layers")
    assert outputs < weights and "256 probes in 8 runs (seed 0" in comment.body
    assert code("regression_test.functional.min_top1_agreement") in comment.body


def test_a_child_answering_fewer_runs_than_were_written_fails_the_gate(
    models, gate, judged, monkeypatch
) -> None:
    """A candidate child that ran the graph is untrusted: an answer of 0 runs compares nothing."""
    import diffai.functional as functional

    honest = functional.run_model

    def lying(path, reader, *args):
        answered = honest(path, reader, *args)
        return dataclasses.replace(answered, runs=0) if reader == "candidate" else answered

    monkeypatch.setattr(functional, "run_model", lying)
    result, document = judged(models["cnn"], models["cnn"], gate())
    assert document["functional"]["status"] == "candidate_failed" and result.code == 1
    assert "the candidate's run answered 0 probe runs of 8" in document["functional"]["reason"]
