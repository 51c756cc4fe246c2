"""Names and values from hostile files, shown verbatim and harmlessly in every output.

The PR comment (and the step summary, which is the same markdown) entity-encodes
names: tests/test_renderers.py checks that one name cannot escape its table
cell. Here the CLI writes all outputs for names that try to close the
comment's HTML, ping people, open code spans or issue GitHub workflow commands,
and for checkpoint values that try the same with newlines. Names with control
characters never get this far (tests/hostile/test_safetensors_hostile.py).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from diffai.renderers.markdown import code
from diffai.renderers.markdown import text as entity_encoded
from diffai.text import one_line
from tests.conftest import CliResult

HOSTILE_NAMES = [
    "</details><img src=x onerror=alert(1)>",
    "@octocat @github/security please merge",
    "`rm -rf /` and ``` fences",
    "::set-output name=verdict::pass",
    "::add-mask::ghs_0123456789",
    "::stop-commands::resume-token",
    "<!-- diffai-comment -->",
    "[click](https://example.com/phish) **bold** <b>b</b> | cell",
]
POLICY = "version: 1\nregression_test:\n  max_relative_change: 0.01\n"
FENCE = re.compile(r"^```.*?^```$", re.S | re.M)


@pytest.fixture
def outputs(
    run_cli: Callable[..., CliResult], write_safetensors: Callable[..., Path], tmp_path: Path
) -> tuple[CliResult, str, str]:
    """Text output, markdown and JUnit of two models whose every tensor has a hostile name."""
    base = {name: np.arange(4, dtype=np.float32) for name in HOSTILE_NAMES}
    cand = {name: values + 1 for name, values in base.items()}
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    markdown, junit = tmp_path / "comment.md", tmp_path / "junit.xml"
    result = run_cli(
        write_safetensors("a.safetensors", base),
        write_safetensors("b.safetensors", cand),
        "--policy", policy, "--markdown", markdown, "--junit", junit,
    )  # fmt: skip
    assert result.code == 1 and result.err == ""
    return result, markdown.read_text(), junit.read_text()


def test_text_output_shows_each_name_and_no_line_is_a_workflow_command(
    outputs: tuple[CliResult, str, str],
) -> None:
    """Verbatim, but for a leading ``::``: tests/hostile/test_log_hostile.py has every family."""
    lines = outputs[0].out.splitlines()
    assert [line for line in lines if line.lstrip().startswith("::")] == []
    for name in HOSTILE_NAMES:
        assert any(line.startswith(f"  ~ {one_line(name)}: ") for line in lines), name


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_markdown_shows_each_name_only_entity_encoded(
    outputs: tuple[CliResult, str, str], name: str
) -> None:
    markdown = outputs[1]
    outside_code = FENCE.sub("", markdown)
    assert name not in outside_code
    assert code(name) in markdown


def test_markdown_structure_survives_the_names(outputs: tuple[CliResult, str, str]) -> None:
    """Exactly the template's own HTML, code spans, mentions and workflow commands: none extra."""
    outside_code = FENCE.sub("", outputs[1])
    assert outside_code.count("<details>") == outside_code.count("</details>") == 2
    assert "<img" not in outside_code and "<!--" not in outside_code
    assert re.findall(r"@\w", outside_code) == []
    assert not any(line.startswith("::") for line in outputs[1].splitlines())
    table_rows = [line for line in outside_code.splitlines() if " | changed | " in line]
    assert len(table_rows) == len(HOSTILE_NAMES)
    assert {row.count("|") for row in table_rows} == {5}  # no name adds a cell


def test_junit_is_well_formed_and_holds_each_name(outputs: tuple[CliResult, str, str]) -> None:
    root = ET.fromstring(outputs[2])
    shown = " ".join(element.text or "" for element in root.iter()) + " ".join(
        value for element in root.iter() for value in element.attrib.values()
    )
    for name in HOSTILE_NAMES:
        assert name in shown, name


def test_checkpoint_values_cannot_break_a_line(
    run_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    """A string scalar reaches the training_progress line: its newlines are escaped, so it can
    neither issue a workflow command in a log nor close the comment's code block."""
    payload = "1\n::set-output name=verdict::pass\n```\n</details><img src=x onerror=alert(1)>"
    base, cand, markdown = tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "comment.md"
    torch.save({"w": torch.ones(2), "epoch": 1}, base)
    torch.save({"w": torch.ones(2), "epoch": payload}, cand)
    result = run_cli(base, cand, "--markdown", markdown)
    assert result.code == 1 and result.err == ""
    escaped = '"' + payload.replace("\n", "\\n") + '"'  # quoted: a string, not a number
    assert f"training_progress: epoch 1->{escaped}" in result.out.splitlines()
    assert not any(line.startswith("::") for line in result.out.splitlines())
    comment = markdown.read_text()
    assert f"- **training_progress**: {entity_encoded(f'epoch 1->{escaped}')}" in comment
    assert "<img" not in FENCE.sub("", comment)


#: Names that try to leave the HTML report's JSON block or its page's text.
HTML_HOSTILE_NAMES = [
    "</script><img src=x onerror=alert(1)>",
    "</SCRIPT ><script>alert(1)</script>",
    "<!--<script>",
    "model.layers.0.\u202etxt.exe\u202c.weight",
    "&lt;already&gt; escaped &amp;",
    "&lt;already&gt; escaped 🧨 &amp; then more",
]


def test_hostile_names_in_the_html_report_stay_data(
    run_cli: Callable[..., CliResult], write_safetensors: Callable[..., Path], tmp_path: Path
) -> None:
    """The page has exactly its two script blocks, the data block holds no ``<`` or ``&`` at
    all (``\\u`` escapes), and the JSON gives every name back exactly."""
    import json

    base = {name: np.arange(4, dtype=np.float32) for name in HTML_HOSTILE_NAMES}
    cand = {name: values + 1 for name, values in base.items()}
    page = tmp_path / "report.html"
    result = run_cli(
        write_safetensors("a.safetensors", base, {"note": "</script><b>x</b>\u2028"}),
        write_safetensors("b.safetensors", cand),
        "--html", page, "-q",
    )  # fmt: skip
    assert result.code == 1 and result.err == ""
    html = page.read_text()
    assert html.lower().count("<script") == 2 and html.lower().count("</script") == 2
    data = html.split('<script type="application/json" id="diffai-data">')[1].split("</script>")[0]
    assert not set(data) & {"<", ">", "&", "\u2028", "\u2029"}
    parsed = json.loads(data)
    coded = parsed["tensors"]["names"]
    names, previous = [], ""
    for shared, rest in zip(coded[::2], coded[1::2], strict=True):
        previous = previous.encode("utf-16-le")[: 2 * shared].decode("utf-16-le") + rest
        names.append(previous)
    assert sorted(names) == sorted(HTML_HOSTILE_NAMES)
    assert parsed["models"][0]["metadata"] == {"note": "</script><b>x</b>\u2028"}
    assert not re.search(r"\.(innerHTML|outerHTML|insertAdjacentHTML)\b|document\.write", html)
