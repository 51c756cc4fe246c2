"""JSON that refuses repeated keys, for headers and indexes from untrusted files.

``json.loads`` keeps the last of two equal keys, so a file could show one
tensor entry to one reader and another to the next; diffai refuses instead.
"""

from __future__ import annotations

import json
from typing import Any


class DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"repeated key {key!r}")


def loads_strict(raw: bytes | str) -> Any:
    """Parse JSON; ``DuplicateKey`` on a repeated object key, ``JSONDecodeError`` on bad JSON."""
    return json.loads(raw, object_pairs_hook=_reject_duplicate_keys)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKey(key)
        seen[key] = value
    return seen
