"""The compact safetensors header reader against the strict parse, on the same text.

``compact_entries`` (``diffai/formats/safetensors_header.py``) is a fast path over an
untrusted header: it must answer None, or exactly the entries the strict parse reads
(``json`` refusing repeated keys, then ``_check_entry`` and ``_check_layout``), and never
answer for a header the strict parse refuses (``tests/test_safetensors_columns.py``).

The first two bytes are the data region's length (little-endian), the rest the header
text in UTF-8. Each header is also tried with the data length its largest end offset
implies, since a mutated header seldom keeps the length its bytes state.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_safetensors_columns import assert_agrees

#: The end of every ``data_offsets`` pair, to guess the data length a header implies.
_END = re.compile(r",([0-9]{1,18})\]\}")


def header_input(data: bytes, _workdir: Path) -> None:
    try:
        text = data[2:].decode("utf-8")
    except UnicodeDecodeError:
        return
    implied = max(map(int, _END.findall(text)), default=0)
    for data_len in {int.from_bytes(data[:2], "little"), implied}:
        assert_agrees(text, data_len)


HEADER_TARGETS = {"safetensors_header": header_input}
