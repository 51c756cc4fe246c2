"""The storages a pickle declares, counted before any of it goes to ``torch.load``.

Torch allocates each storage a pickle names as it unpickles it, by the element
count the pickle states, before it reads a byte of the data: a few hundred bytes
of legacy (pre-zip) file can declare gigabytes, and a zip's ``data.pkl`` can too.
The byte budget (``limits.byte_budget``) therefore applies to what the pickles
declare, counted here, and a file over it never reaches torch.

The count runs the pickle under an unpickler that resolves every global to a
placeholder of its own (storage types to their element size): nothing the file
names is imported or called, whatever it names, so files the allow-list refuses
(and torch may read) are counted too. Only the opcodes torch reads are run,
checked first by ``opcodes.check_opcodes``, as for the allow-list unpickler.
"""

from __future__ import annotations

import io
import mmap
import pickle
from pathlib import Path
from typing import Any

from diffai.dtypes import itemsize
from diffai.errors import MalformedModel
from diffai.formats.limits import byte_budget
from diffai.formats.pytorch.opcodes import PickleRefused, check_opcodes
from diffai.formats.pytorch.unpickler import MAX_PICKLE_BYTES, STORAGE_DTYPES
from diffai.text import one_line

#: Element sizes of the storage types torch's loaders know, quantized ones included.
STORAGE_ITEMSIZES = {
    **{name: itemsize(dtype) for name, dtype in STORAGE_DTYPES.items()},
    "QInt8Storage": 1, "QUInt8Storage": 1, "QInt32Storage": 4, "QUInt4x2Storage": 1,
    "QUInt2x4Storage": 1, "UntypedStorage": 1,
}  # fmt: skip
#: A legacy file is five pickles in a row; torch's magic number, format version and system
#: information come before the one that holds the tensors.
_PICKLES_BEFORE_TENSORS = 3
_SIZING_ERRORS = (
    pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, KeyError,
    IndexError, OverflowError, MemoryError, RecursionError, PickleRefused,
)  # fmt: skip


def check_legacy_budget(path: Path) -> None:
    """Refuse a legacy file whose storages would exceed the budget, before torch allocates them,
    or whose storage data torch would not fill (``check_legacy_storages``)."""
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        start = 0
        for _ in range(_PICKLES_BEFORE_TENSORS):
            start += _pickle_size(path, data[start : start + MAX_PICKLE_BYTES])
        pickled = data[start : start + MAX_PICKLE_BYTES]
        pickled = pickled[: _pickle_size(path, pickled)]
        check_pickle_budget(path, pickled, path.stat().st_size)
        check_legacy_storages(path, data, start + len(pickled), _storages_of(pickled))


def check_legacy_storages(
    path: Path, data: mmap.mmap, start: int, storages: dict[Any, tuple[int, int]] | None
) -> None:
    """After the tensors' pickle come the storage keys, then each storage's element count and
    bytes in that order. Torch fills only the storages that list names: a key the pickle uses
    and the list does not (a mutated digit makes one) is memory torch never writes, whose
    values change from one load to the next. Refused, as is data that does not add up."""
    if storages is None:  # torch stops in the pickle already, and refuses the file itself
        return
    keys_pickle = data[start : start + MAX_PICKLE_BYTES]
    keys_pickle = keys_pickle[: _pickle_size(path, keys_pickle)]
    try:
        keys = _Sizer(keys_pickle).load()
    except _SIZING_ERRORS as exc:
        raise _unfilled(path, f"its list of storage keys is unreadable ({one_line(exc)})") from exc
    if not (type(keys) is list and all(type(key) is str for key in keys)):
        raise _unfilled(path, "its list of storage keys is not a list of names")
    if not len(keys) == len(set(keys)) == len(storages):
        raise _unfilled(path, "its list of storage keys does not name each storage once")
    offset = start + len(keys_pickle)
    for key in keys:
        if key not in storages:
            raise _unfilled(path, f"its list of storage keys names {key!r:.40}, no storage's")
        numel, itemsize = storages[key]
        stored = int.from_bytes(data[offset : offset + 8], "little", signed=True)
        offset += 8 + stored * itemsize
        if stored != numel or offset > len(data):
            problem = f"storage {key!r:.40} has {numel:,} elements, but the file does not hold them"
            raise MalformedModel(path, f"legacy torch file: {problem}")


def _storages_of(pickled: bytes) -> dict[Any, tuple[int, int]] | None:
    """Each storage key's (elements, element size), or None where torch would stop early."""
    try:
        check_opcodes(pickled, lambda _module, _name: None)
    except PickleRefused:
        return None
    sizer = _Sizer(pickled)
    sizer.load()  # counted already by check_pickle_budget, which refuses what fails here
    return sizer.shapes


def _unfilled(path: Path, problem: str) -> MalformedModel:
    return MalformedModel(
        path, f"legacy torch file: {problem}, so torch would read uninitialised memory"
    )


def check_pickle_budget(path: Path, pickled: bytes, file_size: int) -> None:
    """Refuse a pickle whose storages add up to more than a file of ``file_size`` may hold."""
    declared = declared_storage_bytes(path, pickled)
    budget = byte_budget(file_size)
    if declared > budget:
        raise MalformedModel(
            path,
            f"its pickle declares storages of {declared:,} bytes, over the limit of {budget:,} "
            "for a file this size; not handed to torch.load",
        )


def declared_storage_bytes(path: Path, pickled: bytes) -> int:
    """Bytes of every storage the pickle names, each key counted once (as torch keeps it).

    An opcode torch does not read stops torch where it stands, so only what comes before it
    is counted (torch then refuses the file in its own words); a pickle the count cannot
    follow otherwise, or one that asks for memory another way, is refused.
    """
    try:
        check_opcodes(pickled, lambda _module, _name: None)
    except PickleRefused as exc:
        if exc.position is None:
            raise _uncountable(path, exc) from exc
        return _counted(path, pickled[: exc.position], cut=True)
    return _counted(path, pickled, cut=False)


def _counted(path: Path, pickled: bytes, cut: bool) -> int:
    sizer = _Sizer(pickled)
    try:
        sizer.load()
    except _SIZING_ERRORS as exc:
        if not (cut and isinstance(exc, (EOFError, pickle.UnpicklingError))):
            raise _uncountable(path, exc) from exc
    return sum(sizer.storages.values())


def _uncountable(path: Path, exc: Exception) -> MalformedModel:
    return MalformedModel(
        path, f"cannot count what its pickle allocates ({one_line(exc)}); not handed to torch.load"
    )


def _pickle_size(path: Path, data: bytes) -> int:
    """Bytes up to and with the first pickle's ``STOP``."""
    try:
        end = check_opcodes(data, lambda _module, _name: None)
    except PickleRefused as exc:
        raise MalformedModel(path, f"legacy torch file: {exc}") from exc
    if data[end - 1 : end] != pickle.STOP:
        raise MalformedModel(
            path, f"legacy torch file: a pickle without its end within {MAX_PICKLE_BYTES:,} bytes"
        )
    return end


class _Sizer(pickle.Unpickler):
    """Resolves every global to a placeholder; records each storage's bytes by its key."""

    def __init__(self, pickled: bytes) -> None:
        super().__init__(io.BytesIO(pickled), encoding="utf-8")
        self.storages: dict[Any, int] = {}
        self.shapes: dict[Any, tuple[int, int]] = {}  # key -> (elements, element size)

    def find_class(self, module: str, name: str) -> Any:
        if module in ("torch", "torch.storage") and name in STORAGE_ITEMSIZES:
            return _StorageType(STORAGE_ITEMSIZES[name])
        if f"{module}.{name}" in _ALLOCATING:
            return _allocating(f"{module}.{name}")
        if "Storage" in name:
            raise ValueError(f"storage type {module}.{name} is one diffai cannot size")
        return _Placeholder

    def persistent_load(self, pid: Any) -> Any:
        """``('storage', type, key, location, numel[, view])``: legacy files add a view."""
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            return _Placeholder  # a legacy file's pickled module class, say
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if not (isinstance(storage_type, _StorageType) and type(numel) is int and numel >= 0):
            raise ValueError(f"a storage record torch cannot size either: {pid!r:.80}")
        self.storages.setdefault(key, numel * storage_type.itemsize)
        self.shapes.setdefault(key, (numel, storage_type.itemsize))
        return _Placeholder()


class _StorageType:
    __slots__ = ("itemsize",)

    def __init__(self, itemsize: int) -> None:
        self.itemsize = itemsize


class _Placeholder:
    """Anything a global names, called, built or filled: it keeps nothing and runs nothing."""

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def __call__(self, *_args: Any, **_kwargs: Any) -> _Placeholder:
        return _Placeholder()

    def __setstate__(self, _state: Any) -> None:
        pass

    def __setitem__(self, _key: Any, _value: Any) -> None:
        pass

    def append(self, _item: Any) -> None:
        pass

    def extend(self, _items: Any) -> None:
        pass


#: What torch's weights-only unpickler may call or construct that allocates by a number the
#: pickle states: ``bytearray(2**30)`` is 1 GiB of zeros from a few bytes (and diffai once
#: showed it as a scalar: 14.5 GiB). No pickler writes a size there (a bytearray pickles as
#: its latin-1 text), so any integer argument is refused.
_ALLOCATING = frozenset({
    "builtins.bytearray", "torch.storage.UntypedStorage", "torch.storage.TypedStorage",
    "torch.Tensor", "torch._tensor.Tensor", "torch.nn.parameter.Parameter",
    *(f"torch.{kind}Tensor" for kind in ("Double", "Float", "Half", "BFloat16", "Long", "Int",
                                         "Short", "Char", "Byte", "Bool")),
})  # fmt: skip


def _allocating(name: str) -> type:
    def new(cls: type, *args: Any, **_kwargs: Any) -> _Placeholder:
        sizes = [arg for arg in _flat(args) if type(arg) is int]
        if sizes:
            raise ValueError(f"it calls {name} with a size ({sizes[0]:,}), which torch allocates")
        return object.__new__(cls)

    return type("_Allocating", (_Placeholder,), {"__new__": new})


def _flat(args: Any) -> list[Any]:
    """The arguments and the items of tuple and list arguments, one level down."""
    return [item for arg in args for item in (arg if isinstance(arg, (tuple, list)) else [arg])]
