"""Untrusted text on one line: what every name, value and message shown to a person goes through.

Names and values come from model files; exception messages from libraries
that quote those files' bytes. Three things in them would mislead a reader:

- a newline would start a line of its own: a GitHub workflow command
  (``::set-output``) in a CI log, or the end of a code block in a pull-request
  comment;
- an invisible character (a bidirectional override such as U+202E, a
  zero-width space) makes a name read differently from what it is, so a
  reviewer approves one name and the gate judges another;
- a string that itself begins with ``::`` (after any whitespace: the runner
  strips it) is a workflow command wherever it starts a line.

``one_line`` escapes the first two visibly, the way Python writes them
(``\\n``, ``\\u202e``), and defuses the third by spelling its first colon
``\\x3a``. Renderers with their own syntax (markdown entities, XML) apply
their escaper on top; JSON and YAML keep values intact and quote instead.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

#: What ends a line early or cannot be encoded: the controls (C0, DEL, C1), the line and
#: paragraph separators, and lone surrogates.
UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
#: What shows as nothing or reorders what follows: every format character (Unicode's
#: category Cf, as of Unicode 14), among them the bidirectional overrides and isolates
#: (U+202A-U+202E, U+2066-U+2069), the zero-width characters and marks (U+200B-U+200F)
#: and the tag characters (U+E0020-U+E007F) that can spell hidden ASCII.
_INVISIBLE = (
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f]"
)
#: Blanks outside Cf that render as nothing (default-ignorable or empty glyphs): the Hangul
#: fillers, the combining grapheme joiner, Mongolian and Unicode variation selectors, the
#: Khmer inherent vowels and the braille blank. ``fc1.weight\u3164`` reads as ``fc1.weight``.
_BLANK = (
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180d\u180f\u2800\u3164\ufe00-\ufe0f"
    "\uffa0\U000e0100-\U000e01ef]"
)
#: ``INVISIBLE``, ``BLANK`` and what ``escaped`` replaces, compiled on first use (PEP 562):
#: their character classes took 2.2 ms of every run's start, most of which shows no name.
_PATTERNS = {
    "INVISIBLE": _INVISIBLE,
    "BLANK": _BLANK,
    "ESCAPED": f"{UNSHOWABLE.pattern}|{_INVISIBLE}|{_BLANK}",
}
#: A workflow command's start: the runner trims leading whitespace before it looks for ``::``.
_COMMAND_START = re.compile(r"\A\s*:(?=:)")


def __getattr__(name: str) -> re.Pattern[str]:
    if name not in ("INVISIBLE", "BLANK"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _compiled(name)


@functools.cache
def _compiled(name: str) -> re.Pattern[str]:
    return re.compile(_PATTERNS[name])


def one_line(text: object) -> str:
    """``str(text)`` shown safely on a log line, wherever it stands there: ``escaped``, and a
    leading ``::`` spelled ``\\x3a:``."""
    if type(text) is str and text.isascii() and text.isprintable() and ":" not in text:
        # Nothing to escape (the escaped characters are controls or beyond ASCII) and no
        # command to defuse: most names, returned as they are. The two substitutions took
        # 0.5 s of the text output's 100,000 lines.
        return text
    return _COMMAND_START.sub(lambda found: found.group()[:-1] + "\\x3a", escaped(text), count=1)


def escaped(text: object) -> str:
    """``str(text)`` with every unshowable and invisible character escaped as Python writes
    it (``\\n``, ``\\u202e``): for outputs with an escaper of their own (markdown, XML),
    where ``::`` starts no command."""
    escape = _compiled("ESCAPED")
    return escape.sub(lambda found: found.group().encode("unicode_escape").decode(), str(text))


def has_hazard(text: str) -> bool:
    """Whether ``text`` holds anything ``one_line`` would change, or a ``::`` anywhere (which a
    line break, or a renderer folding a long line, could bring to a line's start)."""
    return "::" in text or _compiled("ESCAPED").search(text) is not None


def clipped(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut: a message quoting a
    10 KB header of a hostile file would otherwise fill a screen of the CI log."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


#: A scalar is shown in at most about this many characters; the report keeps it whole. A
#: ``random.getstate()`` is 625 integers, one 7 KB line in a CI log.
MAX_SCALAR_CHARS = 120


def scalar_text(value: Any) -> str:
    """A checkpoint scalar as a person reads it: floats to 4 significant digits, like the
    tensor figures (``0.1471``, not ``0.14706043899059296``); ints, bools, null and strings
    as JSON writes them, so a string stays quoted, on one line, its invisible characters
    escaped (``\\u202e``). A long value is cut to ``MAX_SCALAR_CHARS``, saying how much
    is left out (``[3, 2147483648, ..., 615 more]``)."""
    if isinstance(value, list):
        return _list_text(value)
    text = f"{value:.4g}" if isinstance(value, float) else json.dumps(value)
    return clipped(text, MAX_SCALAR_CHARS)


def _list_text(values: list[Any]) -> str:
    """Whole items up to ``MAX_SCALAR_CHARS``, then how many more there are."""
    shown: list[str] = []
    length = 0
    for item in values:
        text = scalar_text(item)
        length += len(text) + 2
        if length > MAX_SCALAR_CHARS and shown:
            return f"[{', '.join(shown)}, ... {len(values) - len(shown):,} more]"
        shown.append(text)
    return f"[{', '.join(shown)}]"
