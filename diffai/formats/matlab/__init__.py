"""MATLAB ``.mat`` files: v5/v7 through scipy, v7.3 (HDF5) through h5py, both isolated.

scipy and h5py are the optional ``matlab`` extra, imported only when a .mat file
is opened, so diffai installs without them. Neither is hardened against hostile
input (scipy's ``loadmat`` segfaults on MAT v5 files with four mutated bytes), so
``read`` runs ``read_in_process`` in a bounded child process
(``diffai.formats.isolated``) and maps the arrays it hands back: a crash there
is one error line here. Every variable is read whole, as scipy must anyway (it
cannot even tell a complex variable from a real one without reading it). Both
versions present MATLAB's own shapes (always at least 2-D, as scipy gives them),
so a v5 and a v7.3 file of the same variables give equal tensors.

Structs become dotted names, cell arrays indexed names (``c.0``, ``c.1`` in
MATLAB's column-major order), char arrays string scalars. Sparse matrices,
function handles and MATLAB objects are refused by name, never skipped.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from diffai.errors import MissingExtra
from diffai.formats import isolated
from diffai.formats.matlab.common import (
    EXTENSIONS,
    FORMAT,
    HDF5_SIGNATURE,
    USERBLOCK_BYTES,
    V5_TEXT,
    V73_TEXT,
    has_hdf5_signature,
)
from diffai.formats.matlab.v5 import read_v5
from diffai.formats.matlab.v73 import read_v73
from diffai.model import Model

__all__ = ["EXTENSIONS", "FORMAT", "matches", "read", "read_in_process"]

#: What the child needs for each version, and what to tell a user who lacks it.
EXTRAS = {
    False: ("scipy.io", "reading MAT v5 files needs scipy"),
    True: ("h5py", "reading MAT v7.3 files needs h5py"),
}
READER_NAME = "the MAT reader"


def matches(path: Path, head: bytes) -> bool:
    """The MAT header text; v7.3 must also carry the HDF5 signature after its 512-byte userblock."""
    return head.startswith(V5_TEXT) or (head.startswith(V73_TEXT) and has_hdf5_signature(head))


def read(path: Path) -> Model:
    """The file read by ``read_in_process`` in a bounded child process."""
    module, what = EXTRAS[has_hdf5_signature(_head(path))]
    if importlib.util.find_spec(module) is None:
        raise MissingExtra(path, what, "matlab")
    return isolated.read_isolated(path, __name__, READER_NAME)


def read_in_process(path: Path) -> Model:
    """Parse the file here: for the isolated child and the fuzzers, never for hostile bytes
    in a process that matters."""
    head = _head(path)
    return read_v73(path, head) if has_hdf5_signature(head) else read_v5(path)


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(USERBLOCK_BYTES + len(HDF5_SIGNATURE))
