"""The diffai command end to end on real safetensors files: outputs, exit codes, the report."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import diffai

RNG = np.random.default_rng(42)
W1 = RNG.standard_normal((16, 8)).astype(np.float32)
B1 = RNG.standard_normal(16).astype(np.float32)
W2 = RNG.standard_normal((4, 16)).astype(np.float32)


def from_summary(text_output: str) -> list[str]:
    """The summary line and the change lines, after the analysis lines."""
    lines = text_output.splitlines()
    return lines[next(i for i, line in enumerate(lines) if line.startswith("summary:")) :]


def change_records(json_output: str) -> list[dict]:
    """The tensor and scalar records, after the analysis records."""
    return [r for r in json.loads(json_output) if next(iter(r)).startswith(("Tensor", "Scalar"))]


@pytest.fixture
def models(write_safetensors) -> tuple[Path, Path]:
    """A baseline and a candidate with one tensor of every status."""
    baseline = write_safetensors("base.safetensors", {
        "fc1.weight": W1, "fc1.bias": B1, "fc2.weight": W2, "fc2.bias": np.zeros(4, np.float32),
        "head.weight": W2, "emb.weight": W1,
    })  # fmt: skip
    candidate = write_safetensors("cand.safetensors", {
        "fc1.weight": W1 * 1.1,                 # changed
        "fc1.bias": B1,                         # unchanged
        "fc2.weight": W2.astype(np.float16),    # dtype_changed
        "head.weight": W2[:2],                  # shape_changed
        "emb.weight": W1,                       # unchanged
        "fc3.weight": np.ones((2, 4), np.float32),  # added; fc2.bias removed
    })  # fmt: skip
    return baseline, candidate


def test_text_output_lists_every_kind_of_change(run_cli, models) -> None:
    """In file order (safetensors headers are sorted by name), then the added tensors."""
    result = run_cli(*models)
    assert result.code == 1
    lines = from_summary(result.out)
    assert lines[0] == (
        "summary: compared=7, changed=1, added=1, removed=1, shape_changed=1, "
        "dtype_changed=1, unchanged=2, scalars_changed=0"
    )
    mean, std = float(W1.astype(np.float64).mean()), float(W1.astype(np.float64).std())
    assert lines[1] == (
        f"  ~ fc1.weight: mean={mean:.4g}->{mean * 1.1:.4g}, std={std:.4g}->{std * 1.1:.4g}, "
        "rel_l2=0.1, cos=1"
    )
    assert lines[2] == "  - fc2.bias: shape=[4], dtype=f32"
    assert lines[3].startswith("  ~ fc2.weight: dtype=f32->f16, rel_l2=")
    assert lines[4].startswith("  ~ head.weight: shape=[4, 16]->[2, 16], mean=")
    assert lines[5] == "  + fc3.weight: shape=[2, 4], dtype=f32"
    assert len(lines) == 6
    assert result.err == ""


def test_identical_models_exit_zero(run_cli, models) -> None:
    result = run_cli(models[0], models[0])
    assert result.code == 0
    assert from_summary(result.out)[0].startswith("summary: compared=6, changed=0")


def test_json_records_carry_both_sides_and_the_difference(run_cli, models) -> None:
    result = run_cli(*models, "-o", "json")
    records = change_records(result.out)
    kinds = [next(iter(record)) for record in records]
    assert kinds == [
        "TensorStatsChanged", "TensorRemoved", "TensorDtypeChanged",
        "TensorShapeChanged", "TensorAdded",
    ]  # fmt: skip
    name, base, cand, diff = records[0]["TensorStatsChanged"]
    assert name == "fc1.weight"
    assert base["shape"] == [16, 8] and base["dtype"] == "f32"
    assert cand["mean"] == pytest.approx(float(W1.astype(np.float64).mean()) * 1.1, rel=1e-6)
    assert diff["relative_l2"] == pytest.approx(0.1, rel=1e-6)
    assert records[1]["TensorRemoved"][1]["shape"] == [4]


def test_yaml_output_matches_the_json_records(run_cli, models) -> None:
    as_yaml = yaml.safe_load(run_cli(*models, "-o", "yaml").out)
    as_json = json.loads(run_cli(*models, "-o", "json").out)
    assert as_yaml == as_json


def test_report_validates_and_holds_the_true_numbers(run_cli, models, tmp_path, validate_report):
    report_path = tmp_path / "out" / "report.json"
    report_path.parent.mkdir()
    assert run_cli(*models, "--report", report_path, "-q").code == 1
    document = json.loads(report_path.read_text())
    validate_report(document)
    assert document["summary"]["parameters_baseline"] == 16 * 8 + 16 + 4 * 16 + 4 + 4 * 16 + 16 * 8
    by_name = {t["name"]: t for t in document["tensors"]}
    assert by_name["fc1.bias"]["status"] == "unchanged"
    assert by_name["fc1.bias"]["diff"]["changed"] == 0
    assert by_name["head.weight"]["diff"] is None
    assert by_name["fc2.weight"]["diff"]["relative_l2"] < 1e-3
    assert document["baseline"]["format"] == "safetensors"
    assert [p.name for p in report_path.parent.iterdir()] == ["report.json"]


def test_report_is_not_written_when_the_run_fails(run_cli, models, tmp_path) -> None:
    report_path = tmp_path / "report.json"
    result = run_cli(models[0], tmp_path / "missing.safetensors", "--report", report_path)
    assert result.code == 2
    assert not report_path.exists()
    assert (
        result.err
        == f"diffai: error: {tmp_path / 'missing.safetensors'}: no such file or directory\n"
    )


def test_sort_by_change_magnitude_puts_structural_then_largest_first(run_cli, models) -> None:
    lines = from_summary(run_cli(*models, "--sort-by-change-magnitude").out)[1:]
    names = [line.split(":")[0][4:] for line in lines]
    assert names[:3] == ["fc2.bias", "head.weight", "fc3.weight"]
    assert names[3:] == ["fc1.weight", "fc2.weight"]


def test_show_layer_impact_aggregates_by_module(run_cli, models) -> None:
    out = run_cli(*models, "--show-layer-impact").out
    layers = out.split("layer_impact:\n")[1].splitlines()
    assert layers[0].startswith("  fc1: rel_l2=")
    norm_w, norm_b = np.linalg.norm(W1.astype(np.float64)), np.linalg.norm(B1.astype(np.float64))
    expected = 0.1 * norm_w / np.hypot(norm_w, norm_b)
    assert layers[0] == f"  fc1: rel_l2={expected:.4g}, changed=1/2 tensors, params=144"


def test_include_and_exclude_select_names(run_cli, models) -> None:
    out = run_cli(*models, "--include", "fc*", "--exclude", "*.bias", "-o", "json").out
    names = [record[next(iter(record))][0] for record in change_records(out)]
    assert names == ["fc1.weight", "fc2.weight", "fc3.weight"]


def test_epsilon_ignores_differences_below_it(run_cli, write_safetensors) -> None:
    base = write_safetensors("a.safetensors", {"w": np.zeros(4, np.float32)})
    cand = write_safetensors("b.safetensors", {"w": np.full(4, 1e-7, np.float32)})
    assert run_cli(base, cand).code == 1
    assert run_cli(base, cand, "--epsilon", "1e-6").code == 0


@pytest.mark.parametrize(
    ("flags", "code", "out"),
    [
        pytest.param(["-q"], 1, "", id="quiet"),
        pytest.param(["--brief"], 1, "Models {0} and {1} differ\n", id="brief"),
        pytest.param(["--exit-zero", "-q"], 0, "", id="exit-zero"),
    ],
)
def test_quiet_brief_and_exit_zero(run_cli, models, flags, code, out) -> None:
    result = run_cli(*models, *flags)
    assert (result.code, result.out) == (code, out.format(*models))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["--epsilon", "-1"], "epsilon must be a non-negative number", id="negative-epsilon"
        ),
        pytest.param(
            ["--epsilon", "nan"], "epsilon must be a non-negative number", id="nan-epsilon"
        ),
        pytest.param(["--workers", "0"], "workers must be at least 1", id="zero-workers"),
    ],
)
def test_bad_option_values_exit_2_with_a_message(run_cli, models, argv, message) -> None:
    result = run_cli(*models, *argv)
    assert result.code == 2
    assert message in result.err


def test_usage_errors_exit_2(run_cli, models) -> None:
    with pytest.raises(SystemExit) as caught:
        run_cli(models[0])
    assert caught.value.code == 2
    with pytest.raises(SystemExit) as caught:
        run_cli(*models, "-o", "xml")
    assert caught.value.code == 2


def test_version_and_help(run_cli, capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        run_cli("--version")
    assert caught.value.code == 0
    assert capsys.readouterr().out == f"diffai {diffai.__version__}\n"
    with pytest.raises(SystemExit):
        run_cli("--help")
    help_text = capsys.readouterr().out
    assert "examples:" in help_text and "exit status: 0 identical" in help_text


def test_unrecognized_file_names_the_file_and_the_fix(run_cli, models, tmp_path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    result = run_cli(models[0], junk)
    assert result.code == 2
    assert result.err.startswith(
        f"diffai: error: {junk}: unrecognized model format; force one with --format"
    )


def test_forced_format_that_does_not_fit_is_a_clear_error(run_cli, models) -> None:
    result = run_cli(*models, "--format", "numpy")
    assert result.code == 2
    assert str(models[0]) in result.err and "Traceback" not in result.err


def test_library_api_returns_a_report(models, validate_report) -> None:
    report = diffai.compare(*models, exclude=["head.*"])
    assert not report.identical
    assert report.document["summary"]["tensors_compared"] == 6
    validate_report(report.document)


def test_python_dash_m_runs_the_same_command(models) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "diffai", *map(str, models), "--brief"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert done.stdout == f"Models {models[0]} and {models[1]} differ\n"


def test_the_command_exits_without_teardown_yet_loses_no_output(
    models, run_cli, tmp_path, validate_report
) -> None:
    """``console`` leaves by ``os._exit``: stdout, stderr and the report must all be out."""
    import subprocess
    import sys

    report = tmp_path / "report.json"
    argv = [*map(str, models), "--report", str(report)]
    done = subprocess.run([sys.executable, "-m", "diffai", *argv], capture_output=True, text=True)
    in_process = run_cli(*models)
    assert (done.returncode, done.stdout) == (in_process.code, in_process.out) == (1, done.stdout)
    assert done.stdout.endswith("\n") and len(done.stdout) > 200
    validate_report(json.loads(report.read_text()))
    missing = subprocess.run(
        [sys.executable, "-m", "diffai", str(tmp_path / "gone.pt"), str(models[0])],
        capture_output=True, text=True,
    )  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr.startswith("diffai: error: ") and "gone.pt" in missing.stderr


def test_the_command_runs_no_collection_over_what_it_built(models, tmp_path) -> None:
    """Re-enabling the cyclic collector at the end made its next pass walk every object of
    the run (0.8 s at 100,000 tensors) just before exit: ``console`` leaves it off, while
    ``main``, whose caller goes on, turns it back on."""
    import subprocess
    import sys

    probe = tmp_path / "probe.py"
    probe.write_text(
        "import gc, os, sys\n"
        "seen = []\n"
        "gc.callbacks.append(lambda phase, info: seen.append(phase))\n"
        "leave, stop = os._exit, gc.disable\n"
        "gc.disable = lambda: (seen.clear(), stop())  # counted from the run's start\n"
        "def counted(code):\n"
        "    print(len(seen), gc.isenabled(), code, file=sys.stderr); leave(code)\n"
        "os._exit = counted\n"
        "from diffai.cli import console, main\n"
        "if sys.argv[1] == 'main':\n"
        "    code = main(sys.argv[2:])\n"
        "    print(gc.isenabled(), code, file=sys.stderr)\n"
        "else:\n"
        "    sys.argv[1:2] = []\n"
        "    console()\n"
    )
    argv = [sys.executable, str(probe)]
    args = [*map(str, models), "-q"]
    left = subprocess.run([*argv, "console", *args], capture_output=True, text=True)
    assert left.stderr.split() == ["0", "False", "1"]
    returned = subprocess.run([*argv, "main", *args], capture_output=True, text=True)
    assert returned.stderr.split() == ["True", "1"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal_for_long_runs(models) -> None:
    from diffai.command import PROGRESS_MIN_BYTES, _progress_bar

    def never() -> int:  # a log shows no bar, so the run's size is not worked out for one
        raise AssertionError("the total was asked for a stream that is not a terminal")

    assert _progress_bar(never, io.StringIO(), forced=False).__enter__() is None
    assert _progress_bar(lambda: PROGRESS_MIN_BYTES - 1, _Terminal(), False).__enter__() is None
    terminal = _Terminal()
    with _progress_bar(lambda: PROGRESS_MIN_BYTES, terminal, forced=False) as on_bytes:
        assert on_bytes is not None
        on_bytes(PROGRESS_MIN_BYTES)
    assert "comparing" in terminal.getvalue()


def test_forced_progress_reports_on_stderr(run_cli, models) -> None:
    result = run_cli(*models, "--progress", "-q")
    assert result.code == 1
    assert "comparing" in result.err


def test_analysis_lines_come_first_in_the_seed_order(run_cli, models) -> None:
    lines = run_cli(*models).out.splitlines()
    keys = [line.split(":")[0] for line in lines[:6]]
    assert keys == [
        "anomaly_detection", "architecture_comparison", "convergence_analysis",
        "gradient_analysis", "memory_analysis", "quantization_analysis",
    ]  # fmt: skip
    assert lines[0] == 'anomaly_detection: type=none, severity=none, action="continue_training"'
    assert lines[5].startswith("quantization_analysis: compression=0.50, speedup=")


def test_analysis_flags_choose_what_stdout_shows(run_cli, models) -> None:
    lines = run_cli(*models, "--quantization-analysis", "--memory-analysis").out.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == [
        "memory_analysis", "quantization_analysis", "summary",
    ]  # fmt: skip
    records = json.loads(run_cli(*models, "-o", "json", "--anomaly-detection").out)
    assert next(iter(records[0])) == "anomaly_detection"
    assert next(iter(records[1])) == "TensorStatsChanged"


def test_format_names_match_the_reader_registry() -> None:
    from diffai.cli import FORMAT_NAMES
    from diffai.formats import READERS

    assert sorted(FORMAT_NAMES) == sorted(READERS)


def test_help_and_version_import_no_numpy() -> None:
    """Start-up: the parser needs none of the engine, so --help stays as quick as python."""
    import subprocess
    import sys

    heavy = "('numpy', 'jinja2', 'jsonschema', 'requests', 'torch')"
    probe = f"import sys, diffai.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout == "[]\n"


def test_a_run_without_policy_or_bar_imports_only_what_it_uses(
    models: tuple[Path, Path], tmp_path: Path, validate_report
) -> None:
    """YAML, tqdm, Jinja and the rest cost 60 ms of start-up; a plain run needs none of them."""
    import subprocess
    import sys

    heavy = "('yaml', 'tqdm', 'jinja2', 'jsonschema', 'requests', 'scipy', 'torch')"
    argv = [*map(str, models), "--report", str(tmp_path / "report.json"), "-q"]
    probe = (
        f"import sys; from diffai.cli import main; code = main({argv!r}); "
        f"print(code, sorted(m for m in {heavy} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout == "1 []\n"
    validate_report(json.loads((tmp_path / "report.json").read_text()))


def test_a_complex_tensor_against_a_real_one_has_no_difference(
    run_cli, tmp_path: Path, validate_report
) -> None:
    """2n components against n: each side is measured alone, no element-wise metric."""
    weights = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.savez(tmp_path / "base.npz", w=weights.astype(np.complex64))
    np.savez(tmp_path / "cand.npz", w=weights)
    report = tmp_path / "report.json"
    result = run_cli(tmp_path / "base.npz", tmp_path / "cand.npz", "--report", report)
    assert result.code == 1 and "  ~ w: dtype=c64->f32\n" in result.out
    document = json.loads(report.read_text())
    validate_report(document)
    [tensor] = document["tensors"]
    assert (tensor["status"], tensor["diff"]) == ("dtype_changed", None)
    assert tensor["baseline"]["mean"] == pytest.approx(2.5 / 2)  # real and imaginary parts
    assert tensor["candidate"]["mean"] == pytest.approx(2.5)


def test_zero_baselines_say_what_they_are_measured_against_and_sort_by_it(
    run_cli, write_safetensors
) -> None:
    """A zero bias cast to f16 did not move; one trained to non-zero did: both used to read n/a
    and sort to the top."""
    weight = np.random.default_rng(5).standard_normal((8, 8)).astype(np.float32)
    zeros = np.zeros(8, np.float32)
    trained = np.full(8, 0.01, np.float32)
    base = write_safetensors("b.safetensors", {
        "a.weight": weight, "a.bias": zeros, "b.weight": weight, "b.bias": zeros,
    })  # fmt: skip
    cand = write_safetensors("c.safetensors", {
        "a.weight": weight * 1.5, "a.bias": zeros.astype(np.float16),
        "b.weight": weight, "b.bias": trained,
    })  # fmt: skip
    lines = from_summary(run_cli(base, cand, "--sort-by-change-magnitude").out)[1:]
    rms = float(np.sqrt(np.mean(np.concatenate([weight.ravel(), zeros]).astype(np.float64) ** 2)))
    mean, std = float(weight.astype(np.float64).mean()), float(weight.astype(np.float64).std())
    assert lines == [
        f"  ~ a.weight: mean={mean:.4g}->{mean * 1.5:.4g}, std={std:.4g}->{std * 1.5:.4g}, "
        "rel_l2=0.5, cos=1",
        f"  ~ b.bias: mean=0->0.01, std=0->0, rel_l2=n/a, rel_change={0.01 / rms:.4g} (of module), "
        "cos=n/a",
        "  ~ a.bias: dtype=f32->f16, rel_l2=n/a, rel_change=0 (of module), cos=n/a",
    ]
