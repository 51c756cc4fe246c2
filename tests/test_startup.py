"""Start-up: a run imports the modules its inputs and outputs call for, and no others."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

#: What a plain safetensors comparison has no use for: the other readers, the PEFT update
#: machinery, the functional runner, remote sources, and renderers of outputs not asked for.
NOT_FOR_A_PLAIN_RUN = (
    "diffai.formats.pytorch", "diffai.formats.pytorch.torchscript", "diffai.formats.numpy",
    "diffai.formats.matlab", "diffai.formats.keras", "diffai.formats.onnx", "diffai.formats.gguf",
    "diffai.formats.tflite", "diffai.formats.remote", "diffai.sources.http",
    "diffai.adapters.merge", "diffai.adapters.models", "diffai.adapters.section",
    "diffai.functional", "diffai.merge", "diffai.series", "diffai.renderers.markdown",
    "diffai.renderers.html_report", "diffai.renderers.junit", "diffai.renderers.series",
    "numpy.random",
)  # fmt: skip


def imported_by_run(argv: list[str]) -> tuple[int, set[str]]:
    """The exit status of ``diffai ARGV`` run in a fresh process, and the modules it imported."""
    probe = (
        "import sys, json; from diffai.cli import main; code = main(sys.argv[1:]); "
        "print(json.dumps([code, sorted(sys.modules)]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *argv], capture_output=True, text=True, check=True
    )
    code, modules = json.loads(done.stdout.splitlines()[-1])
    return code, set(modules)


@pytest.fixture
def pair(write_safetensors: Callable[..., Path]) -> list[str]:
    weights = np.arange(12, dtype=np.float32).reshape(3, 4)
    baseline = write_safetensors("base.safetensors", {"fc.weight": weights, "fc.bias": weights[0]})
    candidate = write_safetensors("cand.safetensors", {"fc.weight": weights * 1.1})
    return [str(baseline), str(candidate)]


def test_a_plain_run_imports_no_other_reader_nor_unrequested_renderer(
    pair: list[str], tmp_path: Path
) -> None:
    code, modules = imported_by_run([*pair, "--report", str(tmp_path / "report.json"), "-q"])
    assert code == 1
    assert sorted(modules.intersection(NOT_FOR_A_PLAIN_RUN)) == []
    assert "diffai.formats.safetensors" in modules


def test_each_output_asked_for_imports_its_renderer(pair: list[str], tmp_path: Path) -> None:
    outputs = {"--markdown": "markdown", "--junit": "junit", "--html": "html_report"}
    argv = [*pair, "-q"]
    for flag, name in outputs.items():
        argv += [flag, str(tmp_path / name)]
    code, modules = imported_by_run(argv)
    assert code == 1
    assert {f"diffai.renderers.{name}" for name in outputs.values()} <= modules
    assert all((tmp_path / name).read_text(encoding="utf-8") for name in outputs.values())


def test_every_registered_reader_names_its_own_format() -> None:
    """The registry maps names to modules it imports on demand: each must be that format's."""
    from diffai.formats import READERS, import_reader

    assert {name: import_reader(name).FORMAT for name in READERS} == {n: n for n in READERS}


#: What a ``-q`` run that writes only the JSON report has no use for besides those above:
#: stdout's renderers and the policy's functional (model-running) part.
NOT_FOR_A_QUIET_RUN = (
    "diffai.renderers.text", "diffai.renderers.records", "diffai.renderers.outcome",
    "diffai.policy.functional", "diffai.policy.output_checks",
)  # fmt: skip


def test_a_quiet_run_imports_no_stdout_renderer_nor_the_functional_policy(
    pair: list[str], tmp_path: Path
) -> None:
    code, modules = imported_by_run([*pair, "--report", str(tmp_path / "report.json"), "-q"])
    assert code == 1
    assert sorted(modules.intersection(NOT_FOR_A_QUIET_RUN)) == []


@pytest.mark.parametrize(
    ("argv", "renderer", "other"),
    [
        pytest.param([], "diffai.renderers.text", "diffai.renderers.records", id="text"),
        pytest.param(
            ["-o", "json"], "diffai.renderers.records", "diffai.renderers.text", id="json"
        ),
    ],
)
def test_stdout_imports_the_renderer_it_prints_with(
    pair: list[str], argv: list[str], renderer: str, other: str
) -> None:
    code, modules = imported_by_run([*pair, *argv])
    assert code == 1
    assert renderer in modules
    assert other not in modules  # and only that one
