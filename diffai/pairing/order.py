"""Model order: the order a comparison lists tensors in, natural where the file's says nothing."""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable
from typing import Any


def model_order(tensors: dict[str, Any]) -> list[str]:
    """The file's order where it means something, else natural order (``layers.2`` < ``layers.10``).

    A PyTorch state dict keeps module registration order; a safetensors header
    is stored sorted by name, so its order says nothing and the lexical
    ``layers.1, layers.10, layers.2`` would only confuse. Names that come
    lexically sorted are taken as such a file's and sorted naturally.
    """
    names = list(tensors)
    is_lexical = all(left <= right for left, right in itertools.pairwise(names))
    return sorted(names, key=_natural_sort_key(names)) if is_lexical else names


def _natural_sort_key(names: list[str]) -> Callable[[str], Any]:
    """``natural_key``'s order, as one string a name that sorts compare in C: 100,000 MoE
    names sorted in 0.27 s against 0.50 s by tuples (CPU time, load 4).

    Each digit run becomes NUL, its significant digits' count in 20 digits, and those digits:
    NUL sorts below any other character, so a name whose text goes on sorts after one whose
    number starts there, as the tuples' shorter string part does. A name holding a NUL
    itself would blur that, and then the tuples decide.
    """
    return natural_key if any("\0" in name for name in names) else _natural_text


def _natural_text(name: str) -> str:
    parts = _DIGITS.split(name)  # the digit runs are at the odd indices
    parts[1::2] = map(_encoded_number, parts[1::2])
    return "".join(parts)


@functools.lru_cache(maxsize=4096)  # a model's names repeat few numbers: 0 to 127, say
def _encoded_number(digits: str) -> str:
    significant = digits.lstrip("0")
    return f"\0{len(significant):020d}{significant}"


def natural_key(name: str) -> tuple[str | tuple[int, str], ...]:
    """Runs of digits compared as numbers: ``("layers.", (2, "10"), ".weight")``.

    A number is compared by its length, then its digits, never through ``int()``,
    which refuses the 5,000-digit runs a hostile file may put in a name.
    """
    parts = _DIGITS.split(name)  # the digit runs are at the odd indices
    return tuple(_number_key(part) if index % 2 else part for index, part in enumerate(parts))


def _number_key(digits: str) -> tuple[int, str]:
    significant = digits.lstrip("0")
    return len(significant), significant


_DIGITS = re.compile(r"([0-9]+)")
