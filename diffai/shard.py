"""Splitting one comparison over CI matrix jobs: ``--shard I/N`` picks a slice of the tensors.

The slice depends only on the tensor names and sizes, so every job computes
the same partition without talking to the others: tensors are dealt largest
first to the job with the fewest bytes so far (ties by name), which keeps the
jobs within one large tensor of each other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from diffai.errors import UsageError

_SHARD = re.compile(r"^(\d+)/(\d+)$")


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> (2, 4); the index counts from 1, as CI matrices do."""
    match = _SHARD.match(text.strip())
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise UsageError(f"--shard takes I/N with 1 <= I <= N (for example 2/4), got {text!r}")
    return int(match[1]), int(match[2])


def shard_members(sizes: Iterable[tuple[str, int]], index: int, count: int) -> set[str]:
    """The names job ``index`` of ``count`` measures."""
    import heapq  # here: only --shard runs call this

    loads = [(0, job) for job in range(1, count + 1)]
    members: set[str] = set()
    for name, size in sorted(sizes, key=lambda item: (-item[1], item[0])):
        load, job = heapq.heappop(loads)
        if job == index:
            members.add(name)
        heapq.heappush(loads, (load + size, job))
    return members
