"""MATLAB ``.mat`` files: v5/v7 through scipy, v7.3 (HDF5) through h5py.

scipy and h5py are the optional ``matlab`` extra, imported only when a .mat file
is opened, so diffai installs without them. MAT v5 files are read whole at
open: scipy has no lazy access, and cannot even tell a complex variable from a
real one without reading it. v7.3 datasets are read only when a tensor is
loaded. Both present MATLAB's own shapes (always at least 2-D, as scipy gives
them), so a v5 and a v7.3 file of the same variables give equal tensors.

Structs become dotted names, cell arrays indexed names (``c.0``, ``c.1`` in
MATLAB's column-major order), char arrays string scalars. Sparse matrices,
function handles and MATLAB objects are refused by name, never skipped.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from diffai.dtypes import canonical_name, numpy_dtype
from diffai.errors import MalformedModel, MissingExtra, UnreadableModel
from diffai.formats.flatten import TooManyEntries, flatten_checkpoint
from diffai.formats.limits import MAX_DIMS, byte_budget
from diffai.model import Model, Scalar, TensorRef
from diffai.text import one_line

FORMAT = "matlab"
EXTENSIONS = (".mat",)

V5_TEXT = b"MATLAB 5.0 MAT-file"
V73_TEXT = b"MATLAB 7.3 MAT-file"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
USERBLOCK_BYTES = 512
# The descriptive text of a MAT header; the bytes after it hold offsets and endianness.
HEADER_TEXT_BYTES = 116
V5_METADATA = {"__header__": "header", "__version__": "version", "__globals__": "globals"}
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
# The element types MATLAB writes: numbers, logicals as uint8, char as uint16, cell references.
PLAIN_KINDS = frozenset("biufO")
# A char array becomes one string in every report; MATLAB's are names and notes.
MAX_CHARS = 1 << 20
# Bytes per element of what whosmat calls a variable's class (v5), to size it before loading.
V5_ITEM_BYTES = {
    "double": 8, "single": 4, "int64": 8, "uint64": 8, "int32": 4, "uint32": 4,
    "int16": 2, "uint16": 2, "int8": 1, "uint8": 1, "logical": 1, "char": 2,
}  # fmt: skip


def matches(path: Path, head: bytes) -> bool:
    """The MAT header text; v7.3 must also carry the HDF5 signature after its 512-byte userblock."""
    return head.startswith(V5_TEXT) or (head.startswith(V73_TEXT) and _has_hdf5_signature(head))


def _has_hdf5_signature(head: bytes) -> bool:
    return head[USERBLOCK_BYTES : USERBLOCK_BYTES + len(HDF5_SIGNATURE)] == HDF5_SIGNATURE


def read(path: Path) -> Model:
    with path.open("rb") as handle:
        head = handle.read(USERBLOCK_BYTES + len(HDF5_SIGNATURE))
    if _has_hdf5_signature(head):
        return _read_v73(path, head)
    return _read_v5(path)


def _import_extra(path: Path, module: str, what: str) -> ModuleType:
    """The optional module, or ``MissingExtra`` saying which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(path, what, "matlab") from exc


def _header_text(header: bytes) -> str:
    return header[:HEADER_TEXT_BYTES].decode("latin-1").rstrip("\x00 ")


def _model(path: Path, variables: dict[str, Any], metadata: dict[str, Any]) -> Model:
    try:
        tensors, scalars = flatten_checkpoint(variables, lambda value: isinstance(value, TensorRef))
    except TooManyEntries as exc:
        raise MalformedModel(path, str(exc)) from exc
    return Model(
        path=str(path),
        format=FORMAT,
        size_bytes=path.stat().st_size,
        tensors=tensors,
        scalars=scalars,
        metadata=metadata,
    )


def _canonical(path: Path, where: str, dtype: np.dtype) -> str:
    name = canonical_name(dtype)
    if name is None:
        raise UnreadableModel(
            path, f"variable {where!r} has dtype {dtype}, which diffai cannot compare"
        )
    return name


def _strings(rows: list[str]) -> Scalar:
    """A one-row char array is a string; several rows a list of them; an empty one ``""``."""
    if len(rows) == 1:
        return rows[0]
    return rows or ""


# MAT v5 (scipy)


def _read_v5(path: Path) -> Model:
    sio = _import_extra(path, "scipy.io", "reading MAT v5 files needs scipy")
    contents, classes = _load_v5(path, sio)
    metadata = {key: contents.pop(raw) for raw, key in V5_METADATA.items() if raw in contents}
    if "header" in metadata:
        metadata["header"] = _header_text(metadata["header"])
    values = _V5Values(path, sio.matlab)
    logical = {name for name, matlab_class in classes.items() if matlab_class == "logical"}
    try:
        variables = {
            name: values.convert(name, value.astype(bool) if name in logical else value)
            for name, value in contents.items()
        }
    except RecursionError as exc:
        raise MalformedModel(path, "structs and cells nest too deeply to read") from exc
    return _model(path, variables, metadata)


def _load_v5(path: Path, sio: ModuleType) -> tuple[dict[str, Any], dict[str, str]]:
    """The variables, and their MATLAB classes: loadmat turns logical arrays into uint8.

    scipy reads every variable whole, so their declared sizes are checked first: a
    compressed variable of zeros can declare gigabytes in a few kilobytes of file.
    """
    errors = (
        ValueError,
        TypeError,
        EOFError,
        OSError,
        NotImplementedError,
        RecursionError,
        sio.matlab.MatReadError,
    )
    try:
        with path.open("rb") as handle:
            listing = sio.whosmat(handle)
            _check_v5_sizes(path, listing)
            handle.seek(0)
            contents = sio.loadmat(handle, struct_as_record=False)
    except errors as exc:
        raise MalformedModel(path, f"not a readable MAT file: {one_line(exc)}") from exc
    except MemoryError as exc:
        raise MalformedModel(path, "its variables need more memory than there is") from exc
    return contents, {name: matlab_class for name, _shape, matlab_class in listing}


def _check_v5_sizes(path: Path, listing: list[tuple[str, tuple[int, ...], str]]) -> None:
    declared = sum(
        math.prod(shape) * V5_ITEM_BYTES.get(matlab_class, 0)
        for _name, shape, matlab_class in listing
    )
    budget = byte_budget(path.stat().st_size)
    if declared > budget:
        raise MalformedModel(
            path,
            f"its variables declare {declared:,} bytes, more than {budget:,} for a file of "
            f"its size (compressed data that inflates this far is refused)",
        )


class _V5Values:
    """scipy's loadmat output as dicts (structs), lists (cells), strings and tensors."""

    def __init__(self, path: Path, matlab: ModuleType) -> None:
        self.path = path
        self.matlab = matlab

    def convert(self, where: str, value: Any) -> Any:
        if isinstance(value, self.matlab.mat_struct):
            return self._struct(where, value)
        if not self._is_plain_array(value):
            raise UnreadableModel(
                self.path,
                f"variable {where!r} is a {type(value).__name__} (sparse matrix, function "
                "handle or MATLAB object), which diffai cannot compare",
            )
        if value.dtype.kind == "U":
            return _strings([str(row) for row in value.ravel()])
        if value.dtype.hasobject:
            return self._objects(where, value)
        return TensorRef(
            name=where,
            shape=value.shape,
            dtype=_canonical(self.path, where, value.dtype),
            load=lambda: value,
        )

    def _is_plain_array(self, value: Any) -> bool:
        special = (self.matlab.MatlabFunction, self.matlab.MatlabOpaque, self.matlab.MatlabObject)
        return isinstance(value, np.ndarray) and not isinstance(value, special)

    def _struct(self, where: str, struct: Any) -> dict[str, Any]:
        return {
            field: self.convert(f"{where}.{field}", getattr(struct, field))
            for field in struct._fieldnames
        }

    def _objects(self, where: str, array: np.ndarray) -> Any:
        """A struct array holds mat_structs (a 1x1 one is just a struct); a cell holds arrays."""
        items = array.ravel(order="F")
        is_struct = items.size > 0 and isinstance(items[0], self.matlab.mat_struct)
        if is_struct and items.size == 1:
            return self._struct(where, items[0])
        return [self.convert(f"{where}.{index}", item) for index, item in enumerate(items)]


# MAT v7.3 (h5py)


def _read_v73(path: Path, head: bytes) -> Model:
    h5py = _import_extra(path, "h5py", "reading MAT v7.3 files needs h5py")
    values = _V73Values(path, h5py)
    try:
        handle = h5py.File(path, "r")
        variables = {
            name: values.convert(name, item)
            for name, item in values.children("", handle)
            if not name.startswith(HIDDEN_PREFIX)
        }
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise MalformedModel(path, f"not a readable MAT v7.3 (HDF5) file: {one_line(exc)}") from exc
    return _model(path, variables, {"header": _header_text(head)})


class _V73Values:
    """A v7.3 file's groups (structs) and datasets as dicts, lists, strings and lazy tensors.

    HDF5 is row-major and MATLAB column-major, so every dataset is stored with
    its axes reversed; transposing gives back MATLAB's (and scipy's) shape.

    Only what lies inside the file is read: HDF5 can also keep a dataset's bytes in
    any other file (external storage, virtual datasets) or link to one, and a
    file from a pull request could so read ``/proc/self/environ`` into tensor
    values that the report and the PR comment then show.
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
        self._check_storage(where, item)
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
        for key in group:
            link = group.get(key, getlink=True)
            if isinstance(link, (self.h5py.SoftLink, self.h5py.ExternalLink)):
                raise MalformedModel(
                    self.path,
                    f"variable {f'{where}.{key}'.lstrip('.')!r} is an HDF5 link to "
                    f"{link.path!r}, which diffai does not follow",
                )
        return list(group.items())

    def _check_storage(self, where: str, dataset: Any) -> None:
        if dataset.external or dataset.is_virtual:
            raise MalformedModel(
                self.path,
                f"variable {where!r} keeps its data in another file (HDF5 external storage "
                "or a virtual dataset); diffai reads only the file it is given",
            )

    def _check_element(self, where: str, dtype: np.dtype) -> None:
        """A dataset is read whole, so its element size counts as much as its shape: one
        element of a subarray or padded compound type can be a gigabyte in a 2 KB file."""
        if dtype.kind not in PLAIN_KINDS and not _is_complex_pair(dtype):
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
        return _strings([row.tobytes().decode("utf-16-le", "replace") for row in codes])

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
            kind = f"a MATLAB {matlab_class}" if matlab_class else "a dataset without MATLAB_class"
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
