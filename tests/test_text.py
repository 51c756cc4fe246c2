"""``diffai.text``: the one way untrusted text is shown on a line."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from diffai.text import INVISIBLE, MAX_SCALAR_CHARS, clipped, escaped, one_line, scalar_text


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("::set-output name=verdict::pass", "\\x3a:set-output name=verdict::pass"),
        ("  \u00a0\u3000::add-mask::x", "  \u00a0\u3000\\x3a:add-mask::x"),
        ("fc1\u202egnp.exe", "fc1\\u202egnp.exe"),
        ("\t::x", "\\t::x"),  # the tab is escaped, so the line no longer starts with "::"
        ("a::b", "a::b"),  # only a line's start is a command
        (":a", ":a"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("fc1.weight\u3164", "fc1.weight\\u3164"),  # a Hangul filler: blank, not Cf
        ("fc1\ufe0f.weight", "fc1\\ufe0f.weight"),  # a variation selector
        ("fc1\u034f.weight", "fc1\\u034f.weight"),  # the combining grapheme joiner
    ],
)
def test_one_line_defuses_a_leading_command_and_escapes_what_hides(raw: str, shown: str) -> None:
    assert one_line(raw) == shown


def test_escaped_leaves_a_leading_command_to_the_renderer_that_needs_no_defusing() -> None:
    assert escaped("::x\u200b") == "::x\\u200b"


def test_every_format_character_counts_as_invisible() -> None:
    """Unicode's category Cf is what renders as nothing or reorders text (Python's database)."""
    missed = [
        f"U+{code:04X}"
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)) == "Cf" and not INVISIBLE.fullmatch(chr(code))
    ]
    assert missed == []


def test_clipped_says_how_much_it_cut() -> None:
    assert clipped("x" * 1500, 1000) == "x" * 1000 + "... (500 more characters)"
    assert clipped("short", 1000) == "short"


SHORTENED = [
    pytest.param(list(range(10**6, 10**6 + 625)),
                 "[" + ", ".join(str(n) for n in range(10**6, 10**6 + 13)) + ", ... 612 more]",
                 id="random-getstate-like"),
    pytest.param("x" * 300, '"' + "x" * (MAX_SCALAR_CHARS - 1) + "... (182 more characters)",
                 id="long-string"),
    pytest.param([1.23456, [2, 3], None], "[1.235, [2, 3], null]", id="short-list-whole"),
]  # fmt: skip


@pytest.mark.parametrize(("value", "shown"), SHORTENED)
def test_a_long_scalar_is_shown_shortened_saying_how_much(value: object, shown: str) -> None:
    assert scalar_text(value) == shown
