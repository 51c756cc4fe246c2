"""What every HDF5 reader checks before it reads a byte of a dataset (MAT v7.3, Keras).

HDF5 can keep a dataset's bytes in any other file (external storage, virtual
datasets) or link to one (external links), and soft links make a tree a graph.
A file from a pull request could so read ``/proc/self/environ`` into tensor
values that the report and the PR comment then show, so only what lies inside
the file itself is read. And a dataset's elements may be any HDF5 type: one
element of a subarray or padded compound type can be a gigabyte in a 2 KB file,
which the shape alone does not show, so only the element types a format writes
are read. The HDF5 library parses in C, so every caller runs in the isolated
reader process (``diffai.formats.isolated``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from diffai.errors import MalformedModel

SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: HDF5 puts its superblock at 0, or after a userblock of 512, 1024, 2048 ... bytes.
FIRST_USERBLOCK = 512
#: numpy kinds of plain numbers: bool, signed, unsigned, float.
NUMBER_KINDS = frozenset("biuf")


def signature_offsets(size: int) -> Iterator[int]:
    """Where an HDF5 superblock may start in a file of ``size`` bytes."""
    yield 0
    offset = FIRST_USERBLOCK
    while offset + len(SIGNATURE) <= size:
        yield offset
        offset *= 2


def has_signature(path: Path) -> bool:
    """The HDF5 signature at any userblock size (8 bytes read at each)."""
    try:
        with path.open("rb") as handle:
            size = path.stat().st_size
            for offset in signature_offsets(size):
                handle.seek(offset)
                if handle.read(len(SIGNATURE)) == SIGNATURE:
                    return True
    except OSError:
        return False
    return False


def hard_children(
    path: Path, h5py: ModuleType, group: Any, describe: Callable[[str], str]
) -> list[tuple[str, Any]]:
    """The group's members, refusing soft and external links (no format here writes them);
    ``describe(key)`` names a member in the message, e.g. ``variable 's.w'``."""
    return [(key, hard_member(path, h5py, group, key, describe)) for key in group]


def hard_member(
    path: Path, h5py: ModuleType, group: Any, key: str, describe: Callable[[str], str]
) -> Any:
    """``group[key]`` (one segment), refused if it is a soft or external link."""
    link = group.get(key, getlink=True)
    if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):
        raise MalformedModel(
            path, f"{describe(key)} is an HDF5 link to {link.path!r}, which diffai does not follow"
        )
    return group[key]


def check_storage(path: Path, what: str, dataset: Any) -> None:
    """``what`` names the dataset in the message, e.g. ``variable 'w'``."""
    if dataset.external or dataset.is_virtual:
        raise MalformedModel(
            path,
            f"{what} keeps its data in another file (HDF5 external storage "
            "or a virtual dataset); diffai reads only the file it is given",
        )


def is_plain_number(dtype: np.dtype) -> bool:
    """A number numpy reads element for element: no subarray, compound or opaque type."""
    return dtype.kind in NUMBER_KINDS and dtype.subdtype is None and dtype.names is None


def slabs(shape: tuple[int, ...], budget: int) -> Iterator[tuple[int | slice, ...]]:
    """Index tuples covering an array of ``shape`` in C order, each of at most ``budget``
    elements (one element at least), so a dataset is read piece by piece, never whole."""
    if not shape:
        yield ()
        return
    row = math.prod(shape[1:])
    if row > budget:
        for index in range(shape[0]):
            yield from ((index, *rest) for rest in slabs(shape[1:], budget))
        return
    rows = max(1, budget // max(row, 1))
    for start in range(0, shape[0], rows):
        yield (slice(start, min(start + rows, shape[0])),)
