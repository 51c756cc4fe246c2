"""The runner's side of a step: workflow commands on stdout, ``$GITHUB_OUTPUT``, the step summary.

Tensor names come from untrusted files, and the runner executes any stdout
line that starts with ``::`` as a workflow command (``::add-mask::``,
``::stop-commands::`` …). So nothing here writes untrusted text at the start
of a line: every line begins with a fixed prefix, and every untrusted part is
escaped the way the runner decodes it (``%``, CR and LF in messages, and also
``:`` and ``,`` in properties), with the remaining control characters and the
invisible ones (bidirectional overrides, zero-width spaces) spelled out by
``diffai.text.escaped``, as every other output spells them. A name can then
only ever be the *data* of our own command, and reads as what it is.

Outputs use the multi-line ``name<<DELIMITER`` form with a random delimiter,
so a value can never end early and smuggle in another output.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from diffai.ci.config import COMMENT_POLICIES
from diffai.ci.github import COMMENT_LIMIT
from diffai.errors import ReportError, UsageError
from diffai.text import escaped

_DATA_ESCAPES = {"%": "%25", "\r": "%0D", "\n": "%0A"}
_PROPERTY_ESCAPES = {**_DATA_ESCAPES, ":": "%3A", ",": "%2C"}
_OUTPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def escape_data(text: str) -> str:
    """A workflow command's message: the runner turns ``%0A`` back into a new line, inside it."""
    return _escape(text, _DATA_ESCAPES)


def escape_property(text: str) -> str:
    """A workflow command's property value (``title=…``), where ``:`` and ``,`` are syntax."""
    return _escape(text, _PROPERTY_ESCAPES)


def _escape(text: str, table: dict[str, str]) -> str:
    return escaped("".join(table.get(ch, ch) for ch in text))


def workflow_command(name: str, message: str, **properties: str) -> str:
    """``::name key=value,…::message``, every part escaped."""
    props = ",".join(f"{key}={escape_property(value)}" for key, value in properties.items())
    return f"::{name}{' ' + props if props else ''}::{escape_data(message)}"


def output_block(name: str, value: str) -> str:
    """One ``$GITHUB_OUTPUT`` entry in the heredoc form, with a delimiter the value cannot hold."""
    if not _OUTPUT_NAME.fullmatch(name):
        raise ValueError(f"not an output name: {name!r}")
    delimiter = f"ghadelimiter_{uuid.uuid4()}"
    while delimiter in value:  # astronomically unlikely; never trust luck with a parser
        delimiter = f"ghadelimiter_{uuid.uuid4()}"
    return f"{name}<<{delimiter}\n{value}\n{delimiter}\n"


@dataclass
class Runner:
    """Where a step talks to the runner; the paths are None outside GitHub Actions."""

    stream: TextIO
    output_path: Path | None = None
    summary_path: Path | None = None

    def error(self, message: str, title: str | None = None) -> None:
        self._command("error", message, title)

    def warning(self, message: str, title: str | None = None) -> None:
        self._command("warning", message, title)

    def log(self, message: str) -> None:
        """A plain log line: fixed prefix first, so no untrusted text ever starts a line."""
        self.stream.write(f"diffai: {escape_data(message)}\n")
        self.stream.flush()

    def _command(self, name: str, message: str, title: str | None) -> None:
        properties = {"title": title} if title else {}
        self.stream.write(workflow_command(name, message, **properties) + "\n")
        self.stream.flush()

    def set_outputs(self, outputs: Mapping[str, str]) -> None:
        if self.output_path is not None:
            blocks = "".join(output_block(name, value) for name, value in outputs.items())
            _append(self.output_path, blocks, "GITHUB_OUTPUT")

    def append_summary(self, markdown: str) -> None:
        if self.summary_path is not None:
            _append(self.summary_path, markdown.rstrip("\n") + "\n\n", "GITHUB_STEP_SUMMARY")


def _append(path: Path, text: str, what: str) -> None:
    try:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise ReportError(f"{what} ({path}): cannot write: {exc.strerror or exc}") from exc


def load_event(path: Path | None) -> dict[str, Any]:
    """The webhook payload of the run (``$GITHUB_EVENT_PATH``); empty outside GitHub Actions."""
    if path is None or not path.exists():
        return {}
    try:
        event = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"GITHUB_EVENT_PATH ({path}): not a readable event: {exc}") from exc
    if not isinstance(event, dict):
        raise UsageError(f"GITHUB_EVENT_PATH ({path}): the event is not a JSON object")
    return event


# --- The hand-off between the two fork-safe runs -------------------------------------------
#
# ``analyze`` runs on a fork's code with a read-only token; ``publish`` runs later with a
# write token on what analyze uploaded. Everything publish reads is therefore untrusted:
# each file is bounded in size before it is parsed, and pr.json is checked field by field.

PR_RECORD = "pr.json"
PR_RECORD_VERSION = 1
VERDICTS = ("pass", "warn", "fail")
_SHA = re.compile(r"[0-9a-f]{40}")
_LIMITS = {PR_RECORD: 64 * 1024, "comment.md": 4 * COMMENT_LIMIT, "report.json": 1 << 30}


@dataclass(frozen=True, kw_only=True)
class Handoff:
    """What ``analyze`` left in the report directory, validated: pr.json's facts, the files."""

    number: int | None
    head_sha: str
    comment: str
    verdict: str
    changed: bool
    body: str = ""
    document: dict[str, Any] = field(default_factory=dict)


def pr_record(handoff: Handoff, marker: str) -> str:
    """pr.json: where to post, under which marker, and what the comment rule decides on.

    ``comment`` is the analyze step's rule: publish decides as gate would have.
    """
    record = {
        "version": PR_RECORD_VERSION,
        "number": handoff.number,
        "head_sha": handoff.head_sha,
        "marker": marker,
        "comment": handoff.comment,
        "verdict": handoff.verdict,
        "changed": handoff.changed,
    }
    return json.dumps(record, indent=2) + "\n"


_PR_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "version": (
        lambda v: type(v) is int and v == PR_RECORD_VERSION,
        f"must be {PR_RECORD_VERSION}",
    ),
    "number": (
        lambda v: v is None or (type(v) is int and 0 < v < 2**31),
        "must be a positive integer or null",
    ),
    "head_sha": (lambda v: isinstance(v, str) and bool(_SHA.fullmatch(v)), "must be 40 hex digits"),
    "marker": (lambda v: isinstance(v, str), "must be a string"),
    "comment": (lambda v: v in COMMENT_POLICIES, f"must be one of {', '.join(COMMENT_POLICIES)}"),
    "verdict": (lambda v: v in VERDICTS, f"must be one of {', '.join(VERDICTS)}"),
    "changed": (lambda v: type(v) is bool, "must be true or false"),
}


def read_handoff(folder: Path, marker: str) -> Handoff:
    """The report directory ``analyze`` wrote; ``UsageError`` naming every problem found."""
    record = _json_object(folder, PR_RECORD)
    problems = [f"{key} {why}" for key, (ok, why) in _PR_FIELDS.items() if not ok(record.get(key))]
    if not problems and record["marker"] != marker:
        problems.append(f"marker {record['marker']!r} is not this step's {marker!r} (comment-tag)")
    if problems:
        raise UsageError(f"{folder / PR_RECORD}: " + "; ".join(problems))
    body = _read_bounded(folder, "comment.md")
    if len(body) > COMMENT_LIMIT or marker not in body:
        raise UsageError(f"{folder / 'comment.md'}: not a diffai comment (marker, size)")
    document = _json_object(folder, "report.json")
    if not _is_report(document):
        raise UsageError(f"{folder / 'report.json'}: not a diffai report")
    facts = {key: record[key] for key in ("number", "head_sha", "comment", "verdict", "changed")}
    return Handoff(**facts, body=body, document=document)


def _is_report(document: dict[str, Any]) -> bool:
    tool = document.get("tool")
    named = isinstance(tool, dict) and tool.get("name") == "diffai"
    return named and document.get("schema_version") == 1 and document.get("verdict") in VERDICTS


def _json_object(folder: Path, name: str) -> dict[str, Any]:
    try:
        value = json.loads(_read_bounded(folder, name))
    except ValueError as exc:
        raise UsageError(f"{folder / name}: not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise UsageError(f"{folder / name}: expected a JSON object")
    return value


def _read_bounded(folder: Path, name: str) -> str:
    """A hand-off file, refused unread when it is larger than such a file ever is."""
    path, limit = folder / name, _LIMITS[name]
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise UsageError(f"{path}: larger than {limit:,} bytes")
        return data.decode("utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"{path}: missing; download the analyze run's artifact into report-dir first"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from exc
