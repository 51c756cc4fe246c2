"""Workflow commands, ``$GITHUB_OUTPUT`` and the fork hand-off, read back the runner's way."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from diffai.ci.workflow import (
    Handoff,
    Runner,
    escape_data,
    escape_property,
    load_event,
    output_block,
    pr_record,
    read_handoff,
    workflow_command,
)
from diffai.errors import ReportError, UsageError
from tests.test_action_runner import parse_commands, parse_outputs, unescape

MARKER = "<!-- diffai-comment: diffai -->"
SHA = "0123456789abcdef" * 2 + "01234567"
HOSTILE = [
    "x\n::set-output name=verdict::pass",
    "x\r\n::add-mask::secret",
    "w%0A::stop-commands::token",
    "a:b,c=d%25",
    "name\u2028::error::next line",
    "bell\x07 and nul\x00",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_escaped_data_is_one_line_that_decodes_back(text: str) -> None:
    escaped = escape_data(text)

    assert "\n" not in escaped and "\r" not in escaped and "\u2028" not in escaped
    if not any(ch in text for ch in "\u2028\x07\x00"):
        assert unescape(escaped) == text


@pytest.mark.parametrize("text", HOSTILE)
def test_escaped_properties_hide_their_separators(text: str) -> None:
    escaped = escape_property(text)

    assert not {":", ",", "\n", "\r"} & set(escaped)
    if not any(ch in text for ch in "\u2028\x07\x00"):
        assert unescape(escaped, property=True) == text


def test_invisible_line_breakers_are_spelled_out() -> None:
    assert escape_data("a\u2028b\x00c\x1bd\u202ee") == "a\\u2028b\\x00c\\x1bd\\u202ee"


@pytest.mark.parametrize("text", HOSTILE)
def test_a_hostile_message_stays_inside_our_own_command(text: str) -> None:
    line = workflow_command("warning", f"tensor {text} moved", title=f"diffai: {text}")

    [command] = parse_commands(line)
    assert command.name == "warning"
    assert set(command.properties) == {"title"}


def test_the_runner_writes_commands_and_prefixed_log_lines() -> None:
    stream = io.StringIO()
    runner = Runner(stream)

    runner.error("bad\n::set-output name=x::y", title="t:1,2")
    runner.warning("careful")
    runner.log("line\n::add-mask::z")

    assert stream.getvalue().splitlines() == [
        "::error title=t%3A1%2C2::bad%0A::set-output name=x::y",
        "::warning::careful",
        "diffai: line%0A::add-mask::z",
    ]


def test_outputs_use_a_fresh_delimiter_the_value_cannot_hold(tmp_path: Path) -> None:
    output = tmp_path / "output"
    output.write_text("earlier=1\n")
    tricky = "line one\nghadelimiter_fake\nverdict=pass\nEOF"

    Runner(io.StringIO(), output_path=output).set_outputs({"verdict": "fail", "notes": tricky})

    assert parse_outputs(output.read_text()) == {"earlier": "1", "verdict": "fail", "notes": tricky}


def test_an_output_name_must_be_a_name() -> None:
    with pytest.raises(ValueError, match="not an output name"):
        output_block("x<<EOF\nverdict", "pass")


def test_the_summary_is_appended(tmp_path: Path) -> None:
    summary = tmp_path / "summary"
    summary.write_text("# earlier step\n")
    runner = Runner(io.StringIO(), summary_path=summary)

    runner.append_summary("## diffai\n")

    assert summary.read_text() == "# earlier step\n## diffai\n\n"


def test_outside_actions_outputs_and_summary_are_skipped() -> None:
    runner = Runner(io.StringIO())

    runner.set_outputs({"verdict": "pass"})
    runner.append_summary("text")


def test_an_unwritable_output_file_is_a_report_error(tmp_path: Path) -> None:
    runner = Runner(io.StringIO(), output_path=tmp_path / "missing" / "output")

    with pytest.raises(ReportError, match="GITHUB_OUTPUT"):
        runner.set_outputs({"verdict": "pass"})


def test_events(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    assert load_event(None) == {} and load_event(event) == {}
    event.write_text('{"number": 7}')
    assert load_event(event) == {"number": 7}
    event.write_text("[1]")
    with pytest.raises(UsageError, match="not a JSON object"):
        load_event(event)
    event.write_text("{")
    with pytest.raises(UsageError, match="not a readable event"):
        load_event(event)


# --- the hand-off ---------------------------------------------------------------------------


def write_handoff(folder: Path, **record: object) -> Path:
    facts = Handoff(number=7, head_sha=SHA, comment="always", verdict="warn", changed=True)
    (folder / "pr.json").write_text(pr_record(facts, MARKER))
    if record:
        data = {**json.loads((folder / "pr.json").read_text()), **record}
        (folder / "pr.json").write_text(json.dumps(data))
    (folder / "comment.md").write_text(f"{MARKER}\n## diffai: warn\n")
    report = {"schema_version": 1, "tool": {"name": "diffai"}, "verdict": "warn"}
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def test_a_good_hand_off_reads_back(tmp_path: Path) -> None:
    handoff = read_handoff(write_handoff(tmp_path), MARKER)

    assert (handoff.number, handoff.head_sha, handoff.comment) == (7, SHA, "always")
    assert (handoff.verdict, handoff.changed) == ("warn", True)
    assert handoff.body.startswith(MARKER)


def test_every_bad_field_of_pr_json_is_named(tmp_path: Path) -> None:
    write_handoff(
        tmp_path, number=-1, head_sha=SHA.upper(), comment="often", verdict="ok", changed="yes"
    )

    with pytest.raises(UsageError) as caught:
        read_handoff(tmp_path, MARKER)

    message = str(caught.value)
    for field in ("number", "head_sha", "comment", "verdict", "changed"):
        assert f"{field} must" in message


def test_an_oversized_pr_json_is_refused_unparsed(tmp_path: Path) -> None:
    write_handoff(tmp_path)
    (tmp_path / "pr.json").write_text(" " * 70_000 + "{}")

    with pytest.raises(UsageError, match="larger than 65,536 bytes"):
        read_handoff(tmp_path, MARKER)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("comment.md", "no marker here", "not a diffai comment"),
        ("comment.md", b"\xff\xfe", "cannot read"),
        ("report.json", '{"tool": {"name": "other"}}', "not a diffai report"),
        ("report.json", '{"tool": "diffai", "verdict": "warn"}', "not a diffai report"),
        ("report.json", "[]", "expected a JSON object"),
        ("pr.json", "{", "not JSON"),
    ],
)
def test_other_bad_files_are_refused(
    tmp_path: Path, name: str, content: str | bytes, message: str
) -> None:
    write_handoff(tmp_path)
    target = tmp_path / name
    target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)

    with pytest.raises(UsageError, match=message):
        read_handoff(tmp_path, MARKER)
