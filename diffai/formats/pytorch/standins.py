"""What every stand-in of the allow-list shares: argument checks, and no BUILD on shared state.

Kept apart from ``unpickler.py`` so the modules that add stand-ins (``sparse.py``,
``harmless.py``) can use them while ``unpickler.py`` registers theirs.
"""

from __future__ import annotations

from typing import Any


def is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def are_counts(value: Any) -> bool:
    return isinstance(value, tuple) and all(is_count(v) for v in value)


def refuse_state(self: object, state: Any) -> None:
    """BUILD on a stand-in: they are immutable, and some are shared by every read."""
    raise ValueError(f"BUILD cannot give state to {self!r}; diffai's stand-ins are immutable")
