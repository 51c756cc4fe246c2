"""The report file's bytes: one line of strict ASCII JSON, whichever encoder wrote it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from diffai import jsontext
from diffai.report import write_atomically


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(
            {"name": "w", "values": [1.5, None, 3, True], "nested": {"a": []}}, id="plain"
        ),
        pytest.param({"name": "layer.\u202e.weight", "note": "caf\u00e9"}, id="not ASCII"),
        pytest.param({"step": 2**70}, id="an integer orjson cannot hold"),
    ],
)
def test_the_line_is_ascii_json_of_the_document_and_a_newline(document: dict[str, Any]) -> None:
    line = jsontext.encode_line(document)
    assert line.isascii() and line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == document


def test_bytes_are_written_as_they_are_and_text_as_utf8(tmp_path: Path) -> None:
    assert write_atomically(tmp_path / "report.json", b'{"a": 1}\n')
    assert (tmp_path / "report.json").read_bytes() == b'{"a": 1}\n'
    assert write_atomically(tmp_path / "comment.md", "caf\u00e9\n")
    assert (tmp_path / "comment.md").read_bytes() == "caf\u00e9\n".encode()
