"""What the two sides of one comparison share while they are opened: a header both files
hold byte for byte is parsed once.

A fine-tune keeps its base model's names, shapes and dtypes, so its safetensors header
is the base's byte for byte; parsing it a second time was 0.2-0.3 s of CPU at 100,000
tensors. The answers live only while ``formats.open_models`` opens one pair (a context
variable, so neither another thread nor the next comparison sees them), and one is
reused only for a key equal to the one that produced it: it is what working it out
again would give.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

Answer = TypeVar("Answer")

#: The answers worked out so far while one pair is opened, by key; None outside.
_OPENING: ContextVar[list[tuple[tuple[object, ...], Any]] | None] = ContextVar(
    "diffai_opening_a_pair", default=None
)


@contextmanager
def opening_a_pair() -> Iterator[None]:
    """Both sides of one comparison are opened inside: ``once_per_pair`` shares answers."""
    token = _OPENING.set([])
    try:
        yield
    finally:
        _OPENING.reset(token)


def once_per_pair(key: tuple[object, ...], compute: Callable[[], Answer]) -> Answer:
    """``compute()``, or its answer for an equal ``key`` earlier in this pair's opening.

    Keys are compared, not hashed: hashing a 12 MB header took 3-10 ms, comparing two
    1-2 ms (two reviews, loads 1-6), and a pair holds a few keys (one a side, or one a shard).
    """
    answers = _OPENING.get()
    if answers is None:
        return compute()
    found = next((answer for known, answer in answers if known == key), _MISSING)
    if found is _MISSING:
        found = compute()
        answers.append((key, found))
    return found  # type: ignore[no-any-return]


_MISSING: Any = object()
