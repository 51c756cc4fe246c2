"""MAT v7.3 files (HDF5) through h5py, read only from inside the file itself.

Like the v5 reader, run only inside the isolated reader process: the HDF5
library parses the file's structures in C.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from diffai.dtypes import numpy_dtype
from diffai.errors import MalformedModel, UnreadableModel
from diffai.formats import hdf5
from diffai.formats.limits import MAX_DIMS
from diffai.formats.matlab.common import as_model, header_text, import_extra, strings
from diffai.model import Model, Scalar, TensorRef
from diffai.text import one_line

# How MATLAB names the class of a v7.3 dataset (attribute ``MATLAB_class``).
MATLAB_CLASSES = {
    "double": "f64", "single": "f32",
    "int8": "i8", "int16": "i16", "int32": "i32", "int64": "i64",
    "uint8": "u8", "uint16": "u16", "uint32": "u32", "uint64": "u64",
    "logical": "bool",
}  # fmt: skip
COMPLEX = {"f64": "c128", "f32": "c64"}
# #refs# holds cell contents and #subsystem# MATLAB objects; both are reached through references.
HIDDEN_PREFIX = "#"
# MATLAB nests structs and cells a few levels deep, and never shares one between two parents.
# HDF5 links and references can form cycles, nest without end, or share a struct or cell so
# that a walk visits it 2**depth times; and a compressed cell can hold millions of references.
MAX_DEPTH = 100
MAX_ITEMS = 10_000
# A char array becomes one string in every report; MATLAB's are names and notes.
MAX_CHARS = 1 << 20


def read_v73(path: Path, head: bytes) -> Model:
    h5py = import_extra(path, "h5py", "reading MAT v7.3 files needs h5py")
    values = _V73Values(path, h5py)
    try:
        handle = h5py.File(path, "r")
        variables = {
            name: values.convert(name, item)
            for name, item in values.children("", handle)
            if not name.startswith(HIDDEN_PREFIX)
        }
    # RuntimeError: h5py's for damaged structures ("wrong B-tree signature", "bad symbol
    # table node signature"), raised while walking the file.
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise MalformedModel(path, f"not a readable MAT v7.3 (HDF5) file: {one_line(exc)}") from exc
    return as_model(path, variables, {"header": header_text(head)})


class _V73Values:
    """A v7.3 file's groups (structs) and datasets as dicts, lists, strings and lazy tensors.

    HDF5 is row-major and MATLAB column-major, so every dataset is stored with
    its axes reversed; transposing gives back MATLAB's (and scipy's) shape.

    Only what lies inside the file is read (``diffai.formats.hdf5`` says why).
    """

    def __init__(self, path: Path, h5py: ModuleType) -> None:
        self.path = path
        self.h5py = h5py
        self._open: set[Any] = set()  # the HDF5 objects on the way down, to spot cycles
        self._containers: set[Any] = set()  # every struct and cell walked so far
        self._items = 0

    def convert(self, where: str, item: Any) -> Any:
        self._enter(where, item)
        try:
            return self._convert(where, item)
        finally:
            self._open.discard(item.id)

    def _enter(self, where: str, item: Any) -> None:
        if item is None:  # h5py gives None for a link or reference to nothing
            raise MalformedModel(self.path, f"variable {where[:200]!r} leads to no HDF5 object")
        self._items += 1
        problem = ""
        if self._items > MAX_ITEMS:
            problem = f"is one item too many: the file holds over {MAX_ITEMS:,}"
        elif item.id in self._open:
            problem = "contains itself (an HDF5 link or reference cycle)"
        elif len(self._open) >= MAX_DEPTH:
            problem = f"nests deeper than {MAX_DEPTH} levels"
        if problem:
            raise MalformedModel(self.path, f"variable {where[:200]!r} {problem}")
        self._open.add(item.id)

    def _walk_once(self, where: str, container: Any) -> None:
        if container.id in self._containers:
            raise MalformedModel(
                self.path,
                f"variable {where[:200]!r} is a struct or cell that another one holds too "
                "(shared, it could be walked 2**depth times)",
            )
        self._containers.add(container.id)

    def _convert(self, where: str, item: Any) -> Any:
        if isinstance(item, self.h5py.Group):
            return self._struct(where, item)
        if not isinstance(item, self.h5py.Dataset):  # a named datatype, say
            raise MalformedModel(
                self.path,
                f"variable {where[:200]!r} is an HDF5 {type(item).__name__}, not a dataset or "
                "group (MATLAB writes no other)",
            )
        hdf5.check_storage(self.path, f"variable {where!r}", item)
        self._check_element(where, item.dtype)
        matlab_class = _attribute_text(item, "MATLAB_class")
        if item.attrs.get("MATLAB_empty"):
            return self._empty(where, item, matlab_class)
        if matlab_class == "char":
            return self._char(where, item)
        if matlab_class == "cell":
            return self._cell(where, item)
        return self._tensor(where, item, matlab_class)

    def children(self, where: str, group: Any) -> list[tuple[str, Any]]:
        """The group's members, refusing soft and external links (MATLAB writes neither)."""
        return hdf5.hard_children(
            self.path, self.h5py, group, lambda key: f"variable {f'{where}.{key}'.lstrip('.')!r}"
        )

    def _check_element(self, where: str, dtype: np.dtype) -> None:
        """A dataset is read whole, so its element size counts as much as its shape: one
        element of a subarray or padded compound type can be a gigabyte in a 2 KB file."""
        plain = hdf5.is_plain_number(dtype) or dtype.kind == "O"
        if not plain and not _is_complex_pair(dtype):
            raise MalformedModel(
                self.path,
                f"variable {where!r} stores {dtype.itemsize:,}-byte elements of an HDF5 type "
                "MATLAB never writes (a subarray, or a compound other than a complex number)",
            )

    def _struct(self, where: str, group: Any) -> dict[str, Any]:
        self._walk_once(where, group)
        if "MATLAB_sparse" in group.attrs:
            raise UnreadableModel(
                self.path, f"variable {where!r} is a sparse matrix, which diffai cannot compare"
            )
        return {
            key: self.convert(f"{where}.{key}", child) for key, child in self.children(where, group)
        }

    def _char(self, where: str, dataset: Any) -> Scalar:
        if dataset.size > MAX_CHARS:
            raise MalformedModel(
                self.path,
                f"variable {where!r} is a char array of {dataset.size:,} characters, "
                f"over the limit of {MAX_CHARS:,}",
            )
        codes = np.asarray(dataset[()], dtype="<u2").T
        return strings([row.tobytes().decode("utf-16-le", "replace") for row in codes])

    def _cell(self, where: str, dataset: Any) -> list[Any]:
        """References into #refs#; the transposed storage makes C order MATLAB's linear order."""
        self._walk_once(where, dataset)
        if dataset.size > MAX_ITEMS:
            raise MalformedModel(
                self.path, f"variable {where!r} is a cell of {dataset.size:,} items, too many"
            )
        references = np.asarray(dataset[()]).ravel()
        return [
            self.convert(f"{where}.{index}", dataset.file[reference])
            for index, reference in enumerate(references)
        ]

    def _empty(self, where: str, dataset: Any, matlab_class: str) -> Any:
        """MATLAB stores an empty array's dimensions as its data; one of them is 0."""
        if matlab_class == "char":
            return ""
        if matlab_class == "cell":
            return []
        dtype = self._dtype(where, matlab_class, dataset.dtype)
        sizes = np.asarray(dataset[()]).ravel() if dataset.size <= MAX_DIMS else None
        if sizes is None or sizes.dtype.kind not in "iu" or 0 not in sizes or any(sizes < 0):
            raise MalformedModel(
                self.path, f"variable {where!r} is marked empty, but its sizes are not a shape"
            )
        shape = tuple(int(size) for size in sizes)
        return TensorRef(
            name=where, shape=shape, dtype=dtype, load=lambda: np.zeros(shape, numpy_dtype(dtype))
        )

    def _tensor(self, where: str, dataset: Any, matlab_class: str) -> TensorRef:
        """Read when loaded, so a filter or a chunk that fails then still names the file."""
        dtype = self._dtype(where, matlab_class, dataset.dtype)

        def load() -> np.ndarray:
            try:
                stored = np.asarray(dataset[()])
            except (OSError, ValueError) as exc:
                problem = f"variable {where!r}: cannot read: {one_line(exc)}"
                raise MalformedModel(self.path, problem) from exc
            return _as_dtype(stored, numpy_dtype(dtype)).T

        return TensorRef(name=where, shape=dataset.shape[::-1], dtype=dtype, load=load)

    def _dtype(self, where: str, matlab_class: str, stored: np.dtype) -> str:
        if matlab_class not in MATLAB_CLASSES:
            named = f"a MATLAB {one_line(matlab_class)}"  # the file's bytes: one line
            kind = named if matlab_class else "a dataset without MATLAB_class"
            raise UnreadableModel(
                self.path, f"variable {where!r} is {kind}, which diffai cannot compare"
            )
        real = MATLAB_CLASSES[matlab_class]
        # MATLAB stores complex numbers as a (real, imag) compound.
        if not stored.names:
            return real
        if real not in COMPLEX:
            raise UnreadableModel(
                self.path,
                f"variable {where!r} is a complex {matlab_class}, which diffai cannot compare",
            )
        return COMPLEX[real]


def _is_complex_pair(dtype: np.dtype) -> bool:
    """MATLAB's complex numbers: ``real`` then ``imag``, one plain number type, no padding."""
    if dtype.names != ("real", "imag"):
        return False
    real, imag = (dtype.fields[name] for name in dtype.names)
    part = real[0]
    return (
        part.kind in "iuf" and imag[0] == part and (real[1], imag[1]) == (0, part.itemsize)
        and dtype.itemsize == 2 * part.itemsize
    )  # fmt: skip


def _attribute_text(item: Any, name: str) -> str:
    value = item.attrs.get(name, b"")
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _as_dtype(stored: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if stored.dtype.names:
        values = np.empty(stored.shape, dtype)
        values.real, values.imag = stored["real"], stored["imag"]
        return values
    return stored.astype(dtype, copy=False)
