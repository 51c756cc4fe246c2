"""Every output format against every family of hostile names and values: nothing reaches a log raw.

The GitHub runner executes any stdout line that starts with ``::`` once it has
trimmed the line's leading whitespace, and a reviewer reads names that an
invisible character (a bidirectional override, a zero-width space) can make
look like others. So, for each family and each output:

- no line, stripped of leading whitespace, starts with ``::`` (lines split
  wherever Python splits them, a superset of the runner's CR and LF);
- no format character (Unicode category Cf) appears raw, nor as an HTML or
  XML character reference, nor any control character but the line break;
- JSON, YAML and jsonl still hold every name exactly: they quote, never change.

Names a reader accepts come in safetensors files. Control characters, which
every reader refuses in names, arrive through a crafted ``diffai merge`` shard
report; string values with any character through a checkpoint's scalars.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.numpy import save_file

from diffai.cli import main

#: Names the readers accept: workflow commands behind every kind of leading whitespace the
#: runner trims, invisible characters, and a long name a YAML emitter would fold at a space.
READABLE_NAMES = {
    "set-output": "::set-output name=verdict::pass.weight",
    "add-mask-spaces": "   ::add-mask::ghs_0123456789.weight",
    "stop-commands-nbsp": "\u00a0::stop-commands::resume-token.weight",
    "error-ideographic-space": "\u3000::error file=app.py,line=1::pwned.weight",
    "bidi-override": "fc1\u202egnp.exe\u202c.weight",
    "bidi-isolate": "\u2067head\u2069.weight",
    "zero-width-space": "fc1\u200b.weight",
    "right-to-left-mark": "fc1\u200f.bias",
    "byte-order-mark": "\ufeff::warning::pwned.weight",
    "tag-characters": "fc1\U000e0041\U000e0042.weight",
    "long-folded": " ".join(["::set-output name=verdict::pass"] * 30) + ".weight",
}
#: Names only a crafted shard report can carry: every reader refuses control characters.
CONTROL_NAMES = {
    "tab": "\t::set-output name=verdict::pass.weight",
    "carriage-return": "fc1\r::add-mask::ghs_0123456789.weight",
    "newline": "fc1\n::stop-commands::resume-token.weight",
    "newline-spaces": "fc1\n  ::stop-commands::resume-token.weight",
    "nul": "fc1\x00.weight",
    "ansi-erase-line": "fc1\x1b[2K\x1b[1A::set-output name=verdict::pass.weight",
    "next-line": "fc1\x85::error::pwned.weight",
    "line-separator": "fc1\u2028::debug::pwned.weight",
}
#: String values of a checkpoint scalar: what ``ScalarChanged`` records and text lines show.
SCALAR_VALUES = {**CONTROL_NAMES, "bidi-override": "run\u202e1.0\u202c", "zero-width": "1\u200b"}
POLICY = "version: 1\nregression_test:\n  max_relative_change: 0.01\n"
OUTPUTS = ("text", "json", "yaml", "jsonl", "markdown", "junit", "report")
#: Scalars appear in these only (the comment and JUnit show analyses and checks, not scalars).
SCALAR_OUTPUTS = ("text", "json", "yaml", "jsonl", "report")
#: How text output shows a family's layer: invisible characters escaped, a command defused.
TEXT_SHOWS = {
    "set-output": "\\x3a:set-output name=verdict::pass",
    "add-mask-spaces": "   \\x3a:add-mask::ghs_0123456789",
    "stop-commands-nbsp": "\u00a0\\x3a:stop-commands::resume-token",
    "bidi-override": "fc1\\u202egnp.exe\\u202c",
    "zero-width-space": "fc1\\u200b",
    "tag-characters": "fc1\\U000e0041\\U000e0042",
}
#: The outputs that must carry each value unchanged, and how to read them back.
PARSERS: dict[str, Callable[[str], Any]] = {
    "json": json.loads,
    "yaml": yaml.safe_load,
    "jsonl": lambda text: [json.loads(line) for line in text.splitlines()],
    "report": json.loads,
}


def run(*argv: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in argv])
    return code, out.getvalue(), err.getvalue()


def every_output(folder: Path, *inputs: str | Path) -> dict[str, str]:
    """Each of the seven outputs of ``diffai INPUTS``, with a verdict, layers and sorting."""
    (folder / "policy.yaml").write_text(POLICY)
    files = {"markdown": folder / "comment.md", "junit": folder / "junit.xml",
             "report": folder / "report.json"}  # fmt: skip
    shown = ["--policy", folder / "policy.yaml", "--show-layer-impact",
             "--sort-by-change-magnitude"]  # fmt: skip
    outputs = {}
    for output in ("text", "json", "yaml", "jsonl"):
        written = [arg for kind, path in files.items() for arg in (f"--{kind}", path)]
        code, out, err = run(*inputs, *shown, "-o", output, *written)
        assert code == 1 and err == "", (code, err)
        outputs[output] = out
    return {**outputs, **{kind: path.read_text() for kind, path in files.items()}}


def two_models(folder: Path, name: str) -> tuple[Path, Path]:
    """A tensor called ``name`` that changes, beside one that does not."""
    base = {name: np.arange(4, dtype=np.float32), "same": np.ones(2, dtype=np.float32)}
    save_file(base, folder / "a.safetensors")
    save_file({**base, name: base[name] + 1}, folder / "b.safetensors")
    return folder / "a.safetensors", folder / "b.safetensors"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], dict[str, str]]:
    """The seven outputs of a run whose one hostile string is ``family``'s, made on first use:
    one family per run, so each case fails for its own family only."""

    @cache
    def of(kind: str, family: str) -> dict[str, str]:
        folder = tmp_path_factory.mktemp(family)
        return every_output(folder, *CRAFTERS[kind](folder, family))

    return of


def readable_names(folder: Path, family: str) -> tuple[Path, ...]:
    return two_models(folder, READABLE_NAMES[family])


def control_names(folder: Path, family: str) -> tuple[str, Path]:
    """A shard report of a placeholder name, then renamed to one holding a control character."""
    models = two_models(folder, "placeholder.weight")
    part = folder / "part-1.json"
    assert run(*models, "--shard", "1/1", "--report", part)[0] == 1
    layer = CONTROL_NAMES[family].removesuffix(".weight")
    renamed = part.read_text().replace('"placeholder', '"' + json.dumps(layer)[1:-1])
    part.write_text(renamed)
    return "merge", part


def scalar_values(folder: Path, family: str) -> tuple[Path, Path]:
    torch.save({"w": torch.ones(2), "note": "plain"}, folder / "a.pt")
    torch.save({"w": torch.ones(2) * 2, "note": SCALAR_VALUES[family]}, folder / "b.pt")
    return folder / "a.pt", folder / "b.pt"


CRAFTERS: dict[str, Callable[[Path, str], tuple[str | Path, ...]]] = {
    "readable": readable_names,
    "control": control_names,
    "scalar": scalar_values,
}


def command_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lstrip().startswith("::")]


def hidden_characters(text: str) -> list[str]:
    """Format characters, and controls but the line break, raw or as character references
    (decoded here as written: ``html.unescape`` would drop a ``&#27;``)."""
    shown = _REFERENCE.sub(lambda found: chr(int(found[1])), text)
    return sorted({f"U+{ord(ch):04X}" for ch in shown if _hidden(ch)})


_REFERENCE = re.compile(r"&#([0-9]{1,7});")


def _hidden(ch: str) -> bool:
    return unicodedata.category(ch) == "Cf" or (unicodedata.category(ch) == "Cc" and ch != "\n")


def strings(value: Any) -> Iterator[str]:
    """Every string in a parsed output, keys included."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


def assert_shown_harmlessly(outputs: dict[str, str], output: str, value: str) -> None:
    text = outputs[output]
    assert command_lines(text) == [], command_lines(text)[:3]
    assert hidden_characters(text) == []
    if output == "junit":  # its attribute values and text, as a test-report action reads them
        elements = list(ET.fromstring(text).iter())
        texts = [e.text or "" for e in elements] + [v for e in elements for v in e.attrib.values()]
        assert hidden_characters(" ".join(texts)) == []
    if output in PARSERS:
        assert value in set(strings(PARSERS[output](text))), "the value must survive unchanged"


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("family", READABLE_NAMES)
def test_a_readable_hostile_name_is_shown_harmlessly(
    outputs: Callable[[str, str], dict[str, str]], output: str, family: str
) -> None:
    assert_shown_harmlessly(outputs("readable", family), output, READABLE_NAMES[family])


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("family", CONTROL_NAMES)
def test_a_control_character_in_a_shard_name_is_shown_harmlessly(
    outputs: Callable[[str, str], dict[str, str]], output: str, family: str
) -> None:
    assert_shown_harmlessly(outputs("control", family), output, CONTROL_NAMES[family])


@pytest.mark.parametrize("output", SCALAR_OUTPUTS)
@pytest.mark.parametrize("family", SCALAR_VALUES)
def test_a_hostile_scalar_value_is_shown_harmlessly(
    outputs: Callable[[str, str], dict[str, str]], output: str, family: str
) -> None:
    assert_shown_harmlessly(outputs("scalar", family), output, SCALAR_VALUES[family])


@pytest.mark.parametrize(("family", "shown"), TEXT_SHOWS.items())
def test_text_shows_the_name_escaped_on_its_tensor_and_layer_lines(
    outputs: Callable[[str, str], dict[str, str]], family: str, shown: str
) -> None:
    """The layer line starts with its name: that is where a command would begin."""
    lines = outputs("readable", family)["text"].splitlines()
    changed = "mean=1.5->2.5, std=1.118->1.118, rel_l2=0.5345, cos=0.9759"
    assert f"  ~ {shown}.weight: {changed}" in lines
    assert f"  {shown}: rel_l2=0.5345, changed=1/1 tensors, params=4" in lines
