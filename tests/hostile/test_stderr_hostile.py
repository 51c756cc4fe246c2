"""Error lines that quote a hostile file stay short: the CI log is read by people.

numpy quotes a header it cannot parse whole, and an npy header may hold 10,000
bytes; the error line keeps 1,000 characters of the message
(``cli.MESSAGE_LIMIT``) and says how many it cut.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

from tests.hostile.conftest import Refusal, assert_refused


def npy_with_header(path: Path, header: str) -> Path:
    """A version 1.0 npy file whose header is ``header``, padded as numpy pads it."""
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    return path


def test_a_10_kb_header_numpy_cannot_parse_is_quoted_in_part(
    refused: Callable[..., Refusal], tmp_path: Path
) -> None:
    junk = "'x'" * 3200  # a Python literal numpy's parser refuses, quoting all of it
    header = "{'descr': '<f4', 'shape': (4,), " + junk + "}"
    hostile = npy_with_header(tmp_path / "long.npy", header)
    refusal = refused(hostile)
    assert_refused(refusal, "the array: bad npy header: Cannot parse header: ")
    line = refusal.err.removesuffix("\n")
    assert len(line) < 1100, len(line)
    assert line.endswith(" more characters)")
