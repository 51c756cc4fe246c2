"""MAT v5/v7 files through scipy, which reads every variable whole.

Run only inside the isolated reader process (``diffai.formats.isolated``):
scipy's MAT parser is C code that crashes on hostile files, so no byte of one
reaches it in diffai's own process.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from diffai.errors import MalformedModel, UnreadableModel
from diffai.formats.limits import byte_budget
from diffai.formats.matlab.common import as_model, canonical, header_text, import_extra, strings
from diffai.model import Model, TensorRef
from diffai.text import one_line

V5_METADATA = {"__header__": "header", "__version__": "version", "__globals__": "globals"}
# Bytes per element of what whosmat calls a variable's class (v5), to size it before loading.
V5_ITEM_BYTES = {
    "double": 8, "single": 4, "int64": 8, "uint64": 8, "int32": 4, "uint32": 4,
    "int16": 2, "uint16": 2, "int8": 1, "uint8": 1, "logical": 1, "char": 2,
}  # fmt: skip


def read_v5(path: Path) -> Model:
    sio = import_extra(path, "scipy.io", "reading MAT v5 files needs scipy")
    contents, classes = _load_v5(path, sio)
    metadata = {key: contents.pop(raw) for raw, key in V5_METADATA.items() if raw in contents}
    if "header" in metadata:
        metadata["header"] = header_text(metadata["header"])
    values = _V5Values(path, sio.matlab)
    logical = {name for name, matlab_class in classes.items() if matlab_class == "logical"}
    try:
        variables = {
            name: values.convert(name, value.astype(bool) if name in logical else value)
            for name, value in contents.items()
        }
    except RecursionError as exc:
        raise MalformedModel(path, "structs and cells nest too deeply to read") from exc
    return as_model(path, variables, metadata)


def _load_v5(path: Path, sio: ModuleType) -> tuple[dict[str, Any], dict[str, str]]:
    """The variables, and their MATLAB classes: loadmat turns logical arrays into uint8.

    scipy reads every variable whole, so their declared sizes are checked first: a
    compressed variable of zeros can declare gigabytes in a few kilobytes of file.
    """
    # How scipy fails on hostile bytes, as found by the fuzzer too: zlib.error for a broken
    # compressed variable; UnboundLocalError (a NameError), IndexError, KeyError,
    # AttributeError and ZeroDivisionError from branches of its parser a hostile file reaches.
    errors = (
        ValueError, TypeError, EOFError, OSError, NotImplementedError, RecursionError,
        zlib.error, NameError, IndexError, KeyError, AttributeError, ArithmeticError,
        sio.matlab.MatReadError,
    )  # fmt: skip
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
            return strings([str(row) for row in value.ravel()])
        if value.dtype.hasobject:
            return self._objects(where, value)
        return TensorRef(
            name=where,
            shape=value.shape,
            dtype=canonical(self.path, where, value.dtype),
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
