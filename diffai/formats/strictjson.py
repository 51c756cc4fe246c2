"""JSON that refuses repeated keys, for headers and indexes from untrusted files.

``json.loads`` keeps the last of two equal keys, so a file could show one
tensor entry to one reader and another to the next; diffai refuses instead.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"repeated key {key!r}")


class InvalidJson(ValueError):
    """Not JSON, or JSON that Python cannot hold: nested past the stack, a 5,000-digit number."""


def loads_strict(raw: bytes | str) -> Any:
    """Parse JSON; ``DuplicateKey`` on a repeated object key, ``InvalidJson`` on bad JSON.

    Bytes must be UTF-8 (``UnicodeDecodeError`` otherwise).
    """
    with _strict_errors():
        return json.loads(raw, object_pairs_hook=_reject_duplicate_keys)


def decode_prefix(text: str, start: int) -> tuple[Any, int]:
    """The JSON value that begins at ``text[start]`` (no whitespace before it) and the index
    just past it, parsed as strictly as ``loads_strict``; what follows is not read."""
    with _strict_errors():
        return _DECODER.raw_decode(text, start)


@contextmanager
def _strict_errors() -> Iterator[None]:
    try:
        yield
    except (DuplicateKey, UnicodeDecodeError):
        raise
    except json.JSONDecodeError as exc:
        raise InvalidJson(str(exc)) from exc
    except RecursionError:
        raise InvalidJson("nested too deeply") from None
    except ValueError as exc:  # int() refuses numbers of over 4,300 digits
        digits = sys.get_int_max_str_digits()
        raise InvalidJson(f"a number has more than {digits:,} digits") from exc


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Called for every object: ``dict()`` builds it in C (a header holds one per tensor), and
    only an object that came out shorter than its pairs is searched for the repeated key."""
    built = dict(pairs)
    if len(built) < len(pairs):
        raise DuplicateKey(_first_repeat(pairs))
    return built


def _first_repeat(pairs: list[tuple[str, Any]]) -> str:
    seen: set[str] = set()
    return next(key for key, _ in pairs if key in seen or seen.add(key))  # add() is None


_DECODER = json.JSONDecoder(object_pairs_hook=_reject_duplicate_keys)
