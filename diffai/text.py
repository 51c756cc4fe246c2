"""Untrusted text on one line: what every name, value and message shown to a person goes through.

Names and values come from model files; exception messages from libraries
that quote those files' bytes. A newline in them would start a line of its
own: a GitHub workflow command (``::set-output``) in a CI log, or the end of
a code block in a pull-request comment.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: What ends a line early or cannot be encoded: the controls (C0, DEL, C1), the line and
#: paragraph separators, and lone surrogates.
UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def one_line(text: object) -> str:
    """``str(text)`` with every unshowable character escaped as Python writes it (``\\n``)."""
    return UNSHOWABLE.sub(lambda found: found.group().encode("unicode_escape").decode(), str(text))


def scalar_text(value: Any) -> str:
    """A checkpoint scalar as a person reads it: floats to 4 significant digits, like the
    tensor figures (``0.1471``, not ``0.14706043899059296``); ints, bools, null and strings
    as JSON writes them, so a string stays quoted and on one line."""
    if isinstance(value, list):
        return "[" + ", ".join(scalar_text(item) for item in value) + "]"
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value)
