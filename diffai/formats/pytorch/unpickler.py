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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from diffai.dtypes import NAMES, numpy_dtype
from diffai.errors import MalformedModel, UnsafePickle
from diffai.formats.pytorch.harmless import HARMLESS_CLASSES, HARMLESS_FUNCTIONS
from diffai.formats.pytorch.numpy_values import NUMPY_FUNCTIONS, NUMPY_STAND_INS
from diffai.formats.pytorch.opcodes import PickleRefused, check_opcodes
from diffai.formats.pytorch.refusals import refusal_problem
from diffai.formats.pytorch.sparse import SPARSE_FUNCTIONS
from diffai.formats.pytorch.standins import is_count
from diffai.formats.pytorch.standins import refuse_state as _refuse_state
from diffai.formats.zipmembers import ZipMembers
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
#: A 7B model's data.pkl is about 30 KB, one of 10,000 tensors 1 MB. Unpickling can take 70
#: times a pickle's size in memory (a list per byte), so this bounds a hostile one near 1 GiB.
MAX_PICKLE_BYTES = 16 << 20
#: How a hostile or damaged pickle fails inside the unpickler and our stand-ins.
_PICKLE_ERRORS = (
    pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
    KeyError, IndexError, OverflowError, MemoryError, RecursionError,
)  # fmt: skip


def unpickle_checkpoint(
    path: Path,
    members: ZipMembers,
    pickle_name: str,
    prefix: str,
    unpickler_type: Callable[..., AllowListUnpickler] | None = None,
) -> Any:
    """``unpickler_type`` widens the allow-list for a kind of archive (TorchScript's)."""
    data = members.read_bytes(pickle_name, MAX_PICKLE_BYTES)
    try:
        unpickler = (unpickler_type or AllowListUnpickler)(data, path, members, f"{prefix}data/")
        check_opcodes(data, unpickler.find_class)
        return unpickler.load()
    except PickleRefused as exc:
        raise MalformedModel(path, f"{pickle_name}: {exc}") from exc
    except MemoryError as exc:
        raise MalformedModel(path, f"{pickle_name}: unpickling it needs more memory") from exc
    except _PICKLE_ERRORS as exc:
        raise MalformedModel(path, f"{pickle_name}: malformed pickle ({one_line(exc)})") from exc


class AllowListUnpickler(pickle.Unpickler):
    """Resolves globals only to the stand-ins in ``_ALLOWED``, storages only to archive members."""

    def __init__(self, data: bytes, path: Path, members: ZipMembers, data_folder: str) -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8")  # as torch.load decodes strings
        self._path = path
        self._members = members
        self._data_folder = data_folder
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        stand_in = allowed_globals().get((module, name))
        if stand_in is None:
            global_name = f"{module}.{name}"
            raise UnsafePickle(self._path, global_name, refusal_problem(global_name))
        return stand_in

    def persistent_load(self, pid: Any) -> _Storage:
        """``('storage', storage_type, key, location, numel)``; the location is ignored, as
        under ``map_location="cpu"``."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise ValueError(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, location, numel = pid
        if not (
            isinstance(storage_type, _StorageType)
            and isinstance(key, str)
            and isinstance(location, str)
            and is_count(numel)
        ):
            raise ValueError(f"malformed storage record {pid!r:.80}")
        return self._storage(key, storage_type, numel)

    def _storage(self, key: str, storage_type: _StorageType, numel: int) -> _Storage:
        """Mapped once per key. Torch keeps the first record of a key and ignores the type and
        size of any later one, so a key named twice must be named alike."""
        known = self._storages.get(key)
        if known is None:
            data = self._members.member_array(f"{self._data_folder}{key}")
            known = self._storages[key] = _Storage(key, storage_type.dtype, data, numel)
            _check_storage_size(self._path, known, storage_type)
        if (known.dtype, known.numel) != (storage_type.dtype, numel):
            raise MalformedModel(
                self._path,
                f"storage {key!r} is named twice, as {known.numel} x {known.dtype or 'u8'} and as "
                f"{numel} x {storage_type.dtype or 'u8'}; refused as ambiguous",
            )
        return known


def _check_storage_size(path: Path, storage: _Storage, storage_type: _StorageType) -> None:
    expected = storage.numel * storage_type.itemsize
    if storage.data.size != expected:
        raise MalformedModel(
            path,
            f"storage {storage.key!r} holds {storage.data.size} bytes, the pickle says {expected}",
        )


@dataclass(frozen=True, slots=True, eq=False)
class _Storage:
    """The raw bytes of one ``data/<key>`` member, and the dtype of a typed storage."""

    key: str
    dtype: str | None
    data: np.ndarray
    numel: int
    __setstate__ = _refuse_state

    def __repr__(self) -> str:
        return f"storage {self.key!r:.40}"


@dataclass(frozen=True, slots=True, repr=False)
class _StorageType:
    """Stand-in for ``torch.FloatStorage`` and kin; ``None`` for ``UntypedStorage`` (bytes)."""

    dtype: str | None
    __setstate__ = _refuse_state

    @property
    def itemsize(self) -> int:
        return numpy_dtype(self.dtype).itemsize if self.dtype else 1

    def __repr__(self) -> str:
        return f"the storage type of {self.dtype or 'bytes'}"


@dataclass(frozen=True, slots=True, repr=False)
class _TorchDtype:
    """Stand-in for ``torch.float32`` and kin, repr'd as torch spells it when a scalar holds one."""

    torch_name: str
    __setstate__ = _refuse_state

    @property
    def canonical(self) -> str:
        return TORCH_DTYPES[self.torch_name]

    def __repr__(self) -> str:
        return f"torch.{self.torch_name}"


@dataclass(frozen=True, slots=True, repr=False)
class _Function:
    """A callable stand-in: a plain function has a ``__dict__`` that BUILD could write into."""

    name: str
    call: Callable[..., Any]
    __setstate__ = _refuse_state

    def __call__(self, *args: Any) -> Any:
        return self.call(*args)

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True, eq=False)
class PickledTensor:
    """A tensor as the pickle describes it; checked and mapped once its name is known.

    ``bits`` are torch's lazy ``neg`` and ``conj`` flags, applied to the values when read.
    """

    storage: _Storage
    dtype: str
    offset: Any
    shape: Any
    stride: Any
    bits: frozenset[str] = frozenset()
    __setstate__ = _refuse_state

    def __repr__(self) -> str:
        return "a tensor"


def _rebuild_tensor_v2(
    storage: Any,
    offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any,
    _backward_hooks: Any,
    metadata: Any = None,
) -> PickledTensor:
    """``torch._utils._rebuild_tensor_v2``: the dtype is the typed storage's."""
    if not isinstance(storage, _Storage) or storage.dtype not in NAMES:
        raise ValueError("_rebuild_tensor_v2 needs a typed storage of plain values")
    return _tensor(storage, storage.dtype, offset, size, stride, requires_grad, metadata)


def _rebuild_tensor_v3(
    storage: Any,
    offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any,
    _backward_hooks: Any,
    dtype: Any,
    metadata: Any = None,
) -> PickledTensor:
    """``torch._utils._rebuild_tensor_v3``: an untyped storage plus a dtype (uint16, f8 ...)."""
    if not (
        isinstance(storage, _Storage)
        and isinstance(dtype, _TorchDtype)
        and dtype.torch_name in TORCH_DTYPES
    ):
        raise ValueError("_rebuild_tensor_v3 needs a storage and a plain torch dtype")
    return _tensor(storage, dtype.canonical, offset, size, stride, requires_grad, metadata)


def _tensor(
    storage: _Storage, dtype: str, offset: Any, size: Any, stride: Any, grad: Any, metadata: Any
) -> PickledTensor:
    _check_requires_grad(dtype, grad)
    return PickledTensor(storage, dtype, offset, size, stride, tensor_bits(dtype, metadata))


#: Torch lets only these dtypes require gradients.
_DIFFERENTIABLE = frozenset({"f64", "f32", "f16", "bf16", "f8_e4m3", "f8_e5m2", "c64", "c128"})
#: The dtypes whose lazy bits diffai applies exactly as torch resolves them: ``neg`` as
#: numpy's negation (a sign flip for floats, wrapping for integers), ``conj`` on complex only.
_BITS_APPLIED = {
    "neg": frozenset({"f64", "f32", "f16", "c64", "c128", "i64", "i32", "i16", "i8",
                      "u64", "u32", "u16", "u8"}),
    "conj": frozenset({"c64", "c128"}),
}  # fmt: skip


def _check_requires_grad(dtype: str, requires_grad: Any) -> None:
    if not isinstance(requires_grad, bool):
        raise ValueError(f"requires_grad {requires_grad!r:.40} is not a bool, which torch refuses")
    if requires_grad and dtype not in _DIFFERENTIABLE:
        raise ValueError(f"a {dtype} tensor cannot require gradients, which torch refuses")


def tensor_bits(dtype: str, metadata: Any) -> frozenset[str]:
    """The lazy bits of ``_rebuild_tensor_v2``'s metadata, or ValueError when applying them as
    torch does is not certain: a key set False (which torch 2.13 still sets), an unknown key."""
    if metadata is None or metadata == {}:
        return frozenset()
    if not (isinstance(metadata, dict) and all(v is True for v in metadata.values())):
        raise ValueError(f"tensor metadata {metadata!r:.60} is ambiguous; refused")
    for bit in metadata:
        if dtype not in _BITS_APPLIED.get(bit, ()):
            raise ValueError(
                f"tensor metadata {metadata!r:.60} on a {dtype} tensor is not applied by diffai"
                "; refused as ambiguous"
            )
    return frozenset(metadata)


def _rebuild_parameter(data: Any, requires_grad: Any, _backward_hooks: Any) -> PickledTensor:
    """An ``nn.Parameter`` is compared as the tensor it wraps."""
    if not isinstance(data, PickledTensor):
        raise ValueError("a Parameter must wrap a tensor")
    _check_requires_grad(data.dtype, requires_grad)
    return data


def _rebuild_parameter_with_state(
    data: Any, requires_grad: Any, backward_hooks: Any, _state: Any
) -> PickledTensor:
    """The state holds Python attributes of the Parameter, never its values."""
    return _rebuild_parameter(data, requires_grad, backward_hooks)


class _StateDict(collections.OrderedDict):  # type: ignore[type-arg]
    """``collections.OrderedDict``; BUILD may give it only the ``_metadata`` a state dict keeps.

    Torch updates the dict's ``__dict__`` with whatever BUILD holds, so another key (``items``)
    would change how its entries are read; the ``_metadata`` itself holds no values.
    """

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, dict) and set(state) <= {"_metadata"}):
            raise ValueError(f"BUILD may set only _metadata on an OrderedDict, not {state!r:.60}")


def _latin1_encode(text: Any, encoding: Any) -> bytes:
    """How protocol 2 spells ``bytes``: ``_codecs.encode(str, 'latin1')``, and nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError("_codecs.encode is allowed only for latin1 strings")
    return text.encode("latin1")


def _torch_size(sizes: Any = ()) -> tuple[int, ...]:
    """``torch.Size``: a tuple of integers, as torch checks."""
    size = tuple(sizes) if isinstance(sizes, (tuple, list)) else None
    if size is None or not all(isinstance(n, int) and not isinstance(n, bool) for n in size):
        raise ValueError(f"torch.Size of {sizes!r:.60}, which torch refuses")
    return size


_FUNCTIONS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("collections", "OrderedDict"): _StateDict,
    ("torch", "Size"): _torch_size,
    ("_codecs", "encode"): _latin1_encode,
    **SPARSE_FUNCTIONS,
    **NUMPY_FUNCTIONS,
    **HARMLESS_FUNCTIONS,
}
#: Every value is immutable: it serves every read of the process, hostile or not.
_ALLOWED: dict[tuple[str, str], Any] = {
    **{key: _Function(".".join(key), call) for key, call in _FUNCTIONS.items()},
    ("torch.storage", "UntypedStorage"): _StorageType(None),
    **{("torch", name): _StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()},
    **{("torch", name): _TorchDtype(name) for name in TORCH_DTYPES},
    **NUMPY_STAND_INS,
    **HARMLESS_CLASSES,
}


@cache
def allowed_globals() -> Mapping[tuple[str, str], Any]:
    """``_ALLOWED`` and the stand-ins of quantized tensors and packed parameters, which build on
    this module's and so are imported only once it is loaded."""
    from diffai.formats.pytorch.packed import PACKED_GLOBALS
    from diffai.formats.pytorch.quantized import QUANTIZED_GLOBALS

    return {**_ALLOWED, **QUANTIZED_GLOBALS, **PACKED_GLOBALS}
