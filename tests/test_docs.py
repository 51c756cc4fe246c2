"""The README's Quick start is what CI runs and what a new user types; keep them honest."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from diffai.cli import main

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    section = (
        ROOT.joinpath("README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    )
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_quick_start_has_exactly_two_commands() -> None:
    assert len(quick_start_commands()) == 2


def test_ci_runs_the_readme_test_command() -> None:
    ci_lines = ROOT.joinpath(".ci/run").read_text().splitlines()
    assert quick_start_commands()[1] in ci_lines


def test_the_readme_example_command_exits_zero(monkeypatch, capsys) -> None:
    diffai_part = quick_start_commands()[0].split("&&", 1)[1]
    argv = shlex.split(diffai_part)
    assert argv[0] == "diffai"
    monkeypatch.chdir(ROOT)
    assert main(argv[1:]) == 0
    assert "+ fc2.scale: shape=[10], dtype=f32" in capsys.readouterr().out


def test_the_readme_example_command_exits_zero_from_another_folder(
    monkeypatch, tmp_path, capsys
) -> None:
    """The policy's metrics files resolve against its folder, not the working directory."""
    argv = shlex.split(quick_start_commands()[0].split("&&", 1)[1])[1:]
    absolute = [str(ROOT / arg) if (ROOT / arg).is_file() else arg for arg in argv]
    assert absolute != argv
    monkeypatch.chdir(tmp_path)
    assert main(absolute) == 0
    assert "verdict: warn — 1 warning check failed" in capsys.readouterr().out.splitlines()


def test_the_readme_shows_the_current_example_comment(monkeypatch, tmp_path) -> None:
    """The rendered example in the README is exactly what the Quick start command produces."""
    monkeypatch.chdir(ROOT)
    comment = tmp_path / "comment.md"
    argv = shlex.split(quick_start_commands()[0].split("&&", 1)[1])[1:]
    assert main([*argv, "--markdown", str(comment), "-q"]) == 0
    readme = ROOT.joinpath("README.md").read_text()
    shown = readme.split("<!-- example-comment:start -->\n")[1].split(
        "<!-- example-comment:end -->"
    )[0]
    assert shown == comment.read_text(), "paste the new comment between the README's markers"


def test_the_readme_library_example_runs_as_written(
    monkeypatch, tmp_path, capsys, validate_report
) -> None:
    section = ROOT.joinpath("README.md").read_text().split("\n## Library\n", 1)[1]
    (example,) = re.findall(r"```python\n(.+?)\n```", section.split("\n## ", 1)[0], re.S)
    monkeypatch.chdir(tmp_path)
    weights = {"fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5}
    save_file(weights, "base.safetensors")
    save_file({"fc.weight": weights["fc.weight"] * 2}, "tuned.safetensors")
    Path("policy.yaml").write_text("version: 1\n")
    exec(compile(example, "README.md", "exec"), {})
    assert capsys.readouterr().out == "fc.weight: shape=[2, 3], dtype=f32, max|x|=5\n"
    validate_report(json.loads(Path("report.json").read_text()))


def readme_top_example() -> tuple[list[str], str]:
    """The README's first block: ``$ diffai …`` and the output shown under it."""
    readme = ROOT.joinpath("README.md").read_text()
    block = re.search(r"```\n\$ (diffai .+?)\n(.*?)```", readme, re.S)
    return shlex.split(block.group(1))[1:], block.group(2)


def test_the_readme_opens_with_what_the_example_command_prints(monkeypatch, capsys) -> None:
    argv, shown = readme_top_example()
    monkeypatch.chdir(ROOT)
    assert main(argv) == 0
    assert capsys.readouterr().out == shown, "paste the command's output under it in the README"
