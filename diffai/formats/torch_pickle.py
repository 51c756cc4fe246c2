"""The allow-list unpickler for ``torch.save``: a pickle is a program, and ours runs none of it.

``find_class`` resolves only the globals a state dict needs, each to a
stand-in of our own (frozen, slotted, so a hostile BUILD cannot rewrite it);
``persistent_load`` resolves storages only to members of the archive. What
comes out is plain Python data holding ``PickledTensor`` descriptions, which
``pytorch.py`` checks and maps.
"""

from __future__ import annotations

import collections
import io
import pickle
import pickletools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffai.dtypes import numpy_dtype
from diffai.errors import MalformedModel, UnsafePickle
from diffai.formats.pickle_refusals import refusal_problem
from diffai.formats.zipmembers import ZipMembers
from diffai.model import Scalar
from diffai.text import one_line

TORCH_DTYPES = {
    "float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16",
    "float8_e4m3fn": "f8_e4m3", "float8_e5m2": "f8_e5m2",
    "int64": "i64", "int32": "i32", "int16": "i16", "int8": "i8",
    "uint64": "u64", "uint32": "u32", "uint16": "u16", "uint8": "u8",
    "bool": "bool", "complex64": "c64", "complex128": "c128",
}  # fmt: skip
STORAGE_DTYPES = {
    "DoubleStorage": "f64", "FloatStorage": "f32", "HalfStorage": "f16",
    "BFloat16Storage": "bf16", "LongStorage": "i64", "IntStorage": "i32",
    "ShortStorage": "i16", "CharStorage": "i8", "ByteStorage": "u8", "BoolStorage": "bool",
    "ComplexFloatStorage": "c64", "ComplexDoubleStorage": "c128",
}  # fmt: skip
#: numpy scalar type codes a checkpoint may hold (``np.float64(loss)``); never object or structured.
NUMPY_SCALAR_CODES = frozenset(
    ["b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"]
)
#: A 7B model's data.pkl is about 30 KB, one of 10,000 tensors 1 MB. Unpickling can take 70
#: times a pickle's size in memory (a list per byte), so this bounds a hostile one near 1 GiB.
MAX_PICKLE_BYTES = 16 << 20
#: How a hostile or damaged pickle fails inside the unpickler and our stand-ins.
_PICKLE_ERRORS = (
    pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
    KeyError, IndexError, OverflowError, MemoryError, RecursionError,
)  # fmt: skip


def unpickle_checkpoint(path: Path, members: ZipMembers, pickle_name: str, prefix: str) -> Any:
    data = members.read_bytes(pickle_name, MAX_PICKLE_BYTES)
    _check_memo_indexes(path, pickle_name, data)
    try:
        return _AllowListUnpickler(data, path, members, f"{prefix}data/").load()
    except MemoryError as exc:
        raise MalformedModel(path, f"{pickle_name}: unpickling it needs more memory") from exc
    except _PICKLE_ERRORS as exc:
        raise MalformedModel(path, f"{pickle_name}: malformed pickle ({one_line(exc)})") from exc


def _check_memo_indexes(path: Path, pickle_name: str, data: bytes) -> None:
    """No memo index beyond the pickle's length: C's unpickler sizes its memo by the index.

    Six bytes (``LONG_BINPUT 1479017329``) would make it allocate and zero 23 GB.
    Real pickles number their memo entries from 0, one per object. The scan
    stops where the unpickler will fail anyway (an unknown opcode, a short file).
    """
    position, end = 0, len(data)
    while position < end:
        code, position = data[position], position + 1
        argument = _OPCODE_ARGUMENTS.get(code)
        if argument is None or code == _STOP:
            return
        index = _memo_index(code, data, position)
        if index is not None and index > end:
            raise MalformedModel(
                path, f"{pickle_name}: memo index {index:,} is beyond any real pickle's"
            )
        position = _argument_end(argument, data, position)
        if position < 0:
            return


def _memo_index(code: int, data: bytes, position: int) -> int | None:
    if code == _LONG_BINPUT:
        return int.from_bytes(data[position : position + 4], "little")
    if code == _PUT:  # protocol 0: a decimal line
        digits = data[position : data.find(b"\n", position)][:20]
        return int(digits) if digits.isdigit() else None
    return None


def _argument_end(argument: tuple[str, int, bool], data: bytes, position: int) -> int:
    """Where the opcode's argument ends, or -1 when the data ends first."""
    kind, size, signed = argument
    if kind == "fixed":
        return position + size
    if kind == "lines":
        for _ in range(size):
            newline = data.find(b"\n", position)
            if newline < 0:
                return -1
            position = newline + 1
        return position
    length = int.from_bytes(data[position : position + size], "little", signed=signed)
    return position + size + length if length >= 0 else -1  # the unpickler refuses it


def _opcode_arguments() -> dict[int, tuple[str, int, bool]]:
    """Each opcode's argument: a fixed size, lines (GLOBAL and INST take two), or sized bytes."""
    sized = {
        pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
        pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
        pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
        pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
    }
    arguments = {}
    for opcode in pickletools.opcodes:
        n = opcode.arg.n if opcode.arg else 0
        if n >= 0:
            argument = ("fixed", n, False)
        elif n == pickletools.UP_TO_NEWLINE:
            argument = ("lines", 2 if opcode.arg.name.endswith("_pair") else 1, False)
        else:
            argument = ("sized", *sized[n])
        arguments[ord(opcode.code)] = argument
    return arguments


_OPCODE_ARGUMENTS = _opcode_arguments()
_STOP, _PUT, _LONG_BINPUT = ord(pickle.STOP), ord(pickle.PUT), ord(pickle.LONG_BINPUT)


class _AllowListUnpickler(pickle.Unpickler):
    """Resolves globals only to the stand-ins in ``_ALLOWED``, storages only to archive members."""

    def __init__(self, data: bytes, path: Path, members: ZipMembers, data_folder: str) -> None:
        super().__init__(io.BytesIO(data))
        self._path = path
        self._members = members
        self._data_folder = data_folder
        self._bytes: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        stand_in = _ALLOWED.get((module, name))
        if stand_in is None:
            global_name = f"{module}.{name}"
            raise UnsafePickle(self._path, global_name, refusal_problem(global_name))
        return stand_in

    def persistent_load(self, pid: Any) -> _Storage:
        """``('storage', storage_type, key, location, numel)``; the location is ignored."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise ValueError(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if not (
            isinstance(storage_type, _StorageType) and isinstance(key, str) and is_count(numel)
        ):
            raise ValueError(f"malformed storage record {pid!r:.80}")
        data = self._storage_bytes(key)
        if data.size != numel * storage_type.itemsize:
            raise MalformedModel(
                self._path,
                f"storage {key!r} holds {data.size} bytes, the pickle says "
                f"{numel * storage_type.itemsize}",
            )
        return _Storage(key, storage_type.dtype, data)

    def _storage_bytes(self, key: str) -> np.ndarray:
        """Mapped once per key: tensors that share a storage share its bytes."""
        if key not in self._bytes:
            self._bytes[key] = self._members.member_array(f"{self._data_folder}{key}")
        return self._bytes[key]


def is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True, slots=True, eq=False)
class _Storage:
    """The raw bytes of one ``data/<key>`` member, and the dtype of a typed storage."""

    key: str
    dtype: str | None
    data: np.ndarray


@dataclass(frozen=True, slots=True)
class _StorageType:
    """Stand-in for ``torch.FloatStorage`` and kin; ``None`` for ``UntypedStorage`` (bytes)."""

    dtype: str | None

    @property
    def itemsize(self) -> int:
        return numpy_dtype(self.dtype).itemsize if self.dtype else 1


@dataclass(frozen=True, slots=True, repr=False)
class _TorchDtype:
    """Stand-in for ``torch.float32`` and kin, repr'd as torch spells it when a scalar holds one."""

    torch_name: str

    @property
    def canonical(self) -> str:
        return TORCH_DTYPES[self.torch_name]

    def __repr__(self) -> str:
        return f"torch.{self.torch_name}"


@dataclass(frozen=True, slots=True, eq=False)
class PickledTensor:
    """A tensor as the pickle describes it; checked and mapped once its name is known."""

    storage: _Storage
    dtype: str
    offset: Any
    shape: Any
    stride: Any


def _rebuild_tensor_v2(
    storage: Any, offset: Any, size: Any, stride: Any, *_grad_hooks_metadata: Any
) -> PickledTensor:
    """``torch._utils._rebuild_tensor_v2``: the dtype is the typed storage's."""
    if not isinstance(storage, _Storage) or storage.dtype is None:
        raise ValueError("_rebuild_tensor_v2 needs a typed storage")
    return PickledTensor(storage, storage.dtype, offset, size, stride)


def _rebuild_tensor_v3(
    storage: Any, offset: Any, size: Any, stride: Any, _grad: Any, _hooks: Any, dtype: Any, *_: Any
) -> PickledTensor:
    """``torch._utils._rebuild_tensor_v3``: an untyped storage plus a dtype (uint16, f8 ...)."""
    if not isinstance(storage, _Storage) or not isinstance(dtype, _TorchDtype):
        raise ValueError("_rebuild_tensor_v3 needs a storage and a torch dtype")
    return PickledTensor(storage, dtype.canonical, offset, size, stride)


def _rebuild_parameter(data: Any, *_grad_hooks_state: Any) -> PickledTensor:
    """An ``nn.Parameter`` is compared as the tensor it wraps."""
    if not isinstance(data, PickledTensor):
        raise ValueError("a Parameter must wrap a tensor")
    return data


class _NumpyDtype:
    """Stand-in for ``numpy.dtype(code)`` limited to plain numbers; BUILD sets its byte order."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "=")):
            raise ValueError(f"unexpected numpy dtype state {state!r:.80}")
        self.dtype = self.dtype.newbyteorder(state[1])


def _numpy_dtype(code: Any, *_align_copy: Any) -> _NumpyDtype:
    if code not in NUMPY_SCALAR_CODES:
        raise ValueError(f"numpy dtype {code!r:.40} is not a plain number type")
    return _NumpyDtype(np.dtype(code))


def _numpy_scalar(dtype: Any, data: Any) -> Scalar | complex:
    """``np.float64(0.5)`` as pickled: a dtype and its bytes, returned as a Python number."""
    if not (isinstance(dtype, _NumpyDtype) and isinstance(data, bytes)):
        raise ValueError("malformed numpy scalar")
    if len(data) != dtype.dtype.itemsize:
        raise ValueError(f"numpy scalar of {dtype.dtype} has {len(data)} bytes")
    return np.frombuffer(data, dtype=dtype.dtype)[0].item()


def _latin1_encode(text: Any, encoding: Any) -> bytes:
    """How protocol 2 spells ``bytes``: ``_codecs.encode(str, 'latin1')``, and nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError("_codecs.encode is allowed only for latin1 strings")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "Size"): tuple,
    ("torch.storage", "UntypedStorage"): _StorageType(None),
    **{("torch", name): _StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()},
    **{("torch", name): _TorchDtype(name) for name in TORCH_DTYPES},
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("_codecs", "encode"): _latin1_encode,
}


def are_counts(value: Any) -> bool:
    return isinstance(value, tuple) and all(is_count(v) for v in value)
