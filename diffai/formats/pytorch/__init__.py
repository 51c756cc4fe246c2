"""PyTorch checkpoints (``torch.save``): zip format read by hand, legacy files through torch.

Hand-rolled rather than ``torch.load`` for two reasons. Torch is an optional
extra of several gigabytes, and a zip-format checkpoint needs none of it: the
archive is a pickle that describes tensors plus one uncompressed member per
storage, which we memory-map. And a checkpoint from a pull request is untrusted:
a pickle is a program, so ours runs under an unpickler that resolves only an
allow-list of globals, each to a stand-in of our own; nothing the file names is
ever imported or called. What the allow-list refuses, and legacy (pre-zip) files,
go to ``torch.load(weights_only=True)`` when torch is installed, and to a clear
error when it is not.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from diffai.dtypes import canonical_name, numpy_dtype
from diffai.errors import MalformedModel, MissingExtra, UnreadableModel, UnsafePickle
from diffai.formats.flatten import TooManyEntries, flatten_checkpoint
from diffai.formats.limits import byte_budget, check_tensor_count
from diffai.formats.pytorch.archive import TorchArchive
from diffai.formats.pytorch.densify import Part, sparse_ref
from diffai.formats.pytorch.layout import (
    PICKLE_MEMBER,
    archive_folder,
    byteorder,
    check_records,
    check_version,
)
from diffai.formats.pytorch.numpy_values import PickledArray
from diffai.formats.pytorch.packed import expand_packed, is_script_object, named_packed_tuples
from diffai.formats.pytorch.quantized import PickledQTensor, qtensor_ref, torch_qtensor_ref
from diffai.formats.pytorch.refusals import refusal_problem
from diffai.formats.pytorch.sizing import check_legacy_budget, check_pickle_budget
from diffai.formats.pytorch.sparse import SPARSE_LAYOUTS, PickledSparse
from diffai.formats.pytorch.standins import are_counts, is_count
from diffai.formats.pytorch.unpickler import (
    MAX_PICKLE_BYTES,
    TORCH_DTYPES,
    PickledTensor,
    unpickle_checkpoint,
)
from diffai.formats.zipmembers import OPEN_ERRORS, ZipMembers
from diffai.model import Model, Scalar, TensorRef
from diffai.text import one_line

FORMAT = "pytorch"
EXTENSIONS = (".pt", ".pth", ".bin", ".ckpt")

ZIP_MAGIC = b"PK\x03\x04"
NOT_PYTORCH = "not a PyTorch file: neither a zip archive nor a legacy torch pickle"
#: How a legacy file starts: protocol 2, then LONG1 of torch's magic number 0x1950a86a20f9469cfc6c.
_LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
#: "GLOBAL x.y was not an allowed global", or "unsupported GLOBAL x.y whose module x is blocked".
_TORCH_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+) (?:was not an allowed|whose module)")

#: torch dtypes numpy lacks, converted through a same-size integer view.
_TORCH_SAME_SIZE = {"bf16": "int16", "f8_e4m3": "uint8", "f8_e5m2": "uint8"}


def matches(path: Path, head: bytes) -> bool:
    """A zip holding ``data.pkl`` (npz zips hold only ``.npy``), or a legacy torch pickle."""
    if head.startswith(ZIP_MAGIC):
        return pickle_member(_zip_names(path)) is not None
    return is_legacy(head)


def read(path: Path) -> Model:
    head = _read_head(path)
    if head.startswith(ZIP_MAGIC):
        try:
            return _read_zip(path)
        except UnsafePickle as refused:
            _check_declared_bytes(path)
            return torch_fallback(path, _import_torch(), refused)
    if is_legacy(head):
        torch = _import_torch()
        if torch is not None:
            check_legacy_budget(path)
        return torch_fallback(path, torch, None)
    raise MalformedModel(path, NOT_PYTORCH)


def _check_declared_bytes(path: Path) -> None:
    """Torch inflates every storage whole, so the budget applies before torch ever sees it."""
    members = ZipMembers(path)
    size = path.stat().st_size
    try:
        declared = sum(info.file_size for info in members.archive.infolist())
        pickled = pickle_member(members.names())
        if pickled is not None:
            check_pickle_budget(path, members.read_bytes(pickled, MAX_PICKLE_BYTES), size)
    finally:
        members.archive.close()
    budget = byte_budget(size)
    if declared > budget:
        raise MalformedModel(
            path,
            f"its zip members declare {declared:,} bytes, over the limit of {budget:,} for a "
            "file this size (a zip bomb?); not handed to torch.load",
        )


def is_legacy(head: bytes) -> bool:
    return head[:1] == b"\x80" and head[2:14] == _LEGACY_MAGIC


def _read_head(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(16)
    except OSError as exc:
        raise UnreadableModel(path, f"cannot read: {exc.strerror or exc}") from exc


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except OPEN_ERRORS:
        return []


def pickle_member(names: list[str]) -> str | None:
    """``<archive>/data.pkl``: torch writes every record under one top-level folder."""
    for name in names:
        folder, _, base = name.rpartition("/")
        if base == PICKLE_MEMBER and "/" not in folder:
            return name
    return None


# --- zip format, read without torch --------------------------------------------------------


def _read_zip(path: Path) -> Model:
    return read_archive(path, TorchArchive(path), path.stat().st_size, _MAPPERS)


def read_archive(path: Path, members: TorchArchive, size: int,
                 mappers: Mappers) -> Model:  # fmt: skip
    """The checks and the pickle of an open archive (mapped, or remote: ``pytorch.remote``),
    each tensor made by its kind's entry of ``mappers``."""
    try:
        folder = archive_folder(path, members)
        check_version(path, members, folder)
        check_records(path, members, folder)
        order = byteorder(path, members, folder)
        checkpoint = unpickle_checkpoint(path, members, f"{folder}{PICKLE_MEMBER}", folder)
    finally:
        members.archive.close()
    metadata = {"torch_format": "zip", "byteorder": order}
    return _model_from_pickle(path, checkpoint, order, metadata, size, mappers)


def _model_from_pickle(
    path: Path, checkpoint: Any, byteorder: str, metadata: dict[str, Any],
    size: int | None = None, mappers: Mappers | None = None,
) -> Model:  # fmt: skip
    found, scalars = _flatten(path, checkpoint, _is_pickled_tensor)
    found, scalars = expand_packed(path, found, scalars)
    check_tensor_count(path, "its pickle holds", len(found))
    tensors = {
        name: _pickled_ref(path, name, t, byteorder, mappers or _MAPPERS)
        for name, t in found.items()
    }
    return Model(
        path=str(path),
        format=FORMAT,
        size_bytes=path.stat().st_size if size is None else size,
        tensors=tensors,
        scalars=scalars,
        metadata=metadata,
    )


def _is_pickled_tensor(obj: Any) -> bool:
    """Tensors of every kind, and script objects: ``expand_packed`` turns those into the
    tensors they hold."""
    return type(obj) in _MAPPERS or is_script_object(obj)


def _flatten(
    path: Path, checkpoint: Any, is_tensor: Callable[[Any], bool]
) -> tuple[dict[str, Any], dict[str, Scalar]]:
    """A few bytes of pickle nest lists deep enough to exhaust the stack of a recursive walk,
    or hold an integer key too long for ``str`` (over 4,300 digits) to make a name of."""
    try:
        return flatten_checkpoint(checkpoint, is_tensor)
    except RecursionError as exc:
        raise MalformedModel(path, "the checkpoint nests too deeply to read") from exc
    except TooManyEntries as exc:
        raise MalformedModel(path, str(exc)) from exc
    except ValueError as exc:
        raise MalformedModel(path, "the checkpoint holds an integer too long to show") from exc


def _pickled_ref(path: Path, name: str, tensor: Any, byteorder: str,
                 mappers: Mappers) -> TensorRef:  # fmt: skip
    """Checked and mapped now, so a bad tensor fails the read instead of a later comparison."""
    try:
        return mappers[type(tensor)](name, tensor, byteorder)
    except (ValueError, OverflowError) as exc:
        raise MalformedModel(path, f"tensor {name!r}: {one_line(exc)}") from exc


def _tensor_ref(name: str, tensor: PickledTensor, byteorder: str) -> TensorRef:
    view = _strided_view(tensor, stored_dtype(tensor.dtype, byteorder))
    load = _loader(view, numpy_dtype(tensor.dtype))
    return TensorRef(name, view.shape, tensor.dtype, _resolved(load, tensor.bits))


def _sparse_ref(name: str, sparse: PickledSparse, byteorder: str) -> TensorRef:
    """The parts are plain tensors of the pickle, read as any other; ``size`` a ``torch.Size``."""
    if not (all(isinstance(p, PickledTensor) for p in sparse.parts) and are_counts(sparse.size)):
        raise ValueError(f"{sparse!r} needs tensors and a size")
    parts = [Part(p.dtype, _tensor_ref(name, p, byteorder).array()) for p in sparse.parts]
    return sparse_ref(name, sparse.layout, sparse.size, parts, sparse.coalesced)


def array_ref(name: str, pickled: PickledArray, _byteorder: str) -> TensorRef:
    """A numpy array pickled the numpy way (``np.random.get_state()``'s): its bytes, as data."""
    array = pickled.array
    dtype = canonical_name(array.dtype) if array is not None else None
    if array is None or dtype is None:
        raise ValueError("a numpy array without the state numpy pickles with it")
    return TensorRef(name, array.shape, dtype, load=lambda: array)


def _qtensor_ref(name: str, tensor: PickledQTensor, byteorder: str) -> TensorRef:
    return qtensor_ref(name, tensor, lambda t, d: _strided_view(t, stored_dtype(d, byteorder)))


#: What each kind of tensor the pickle holds becomes (name, pickled tensor, byte order).
Mappers = dict[type, Callable[[str, Any, str], TensorRef]]
_MAPPERS: Mappers = {
    PickledTensor: _tensor_ref,
    PickledQTensor: _qtensor_ref,
    PickledSparse: _sparse_ref,
    PickledArray: array_ref,
}


def stored_dtype(dtype: str, byteorder: str) -> np.dtype:
    """The dtype of the stored bytes; big-endian bf16 has no numpy spelling, so maps as uint16."""
    native = numpy_dtype(dtype)
    if byteorder == "little" or native.itemsize == 1:
        return native
    swapped = native.newbyteorder(">")
    return swapped if swapped.kind != "V" else np.dtype(f">u{native.itemsize}")


def _loader(view: np.ndarray, target: np.dtype) -> Callable[[], np.ndarray]:
    """The mapped view itself, unless it is big-endian bf16: that is swapped into a copy."""
    if view.dtype.newbyteorder("<") == target:
        return lambda: view
    return lambda: view.astype(view.dtype.newbyteorder("<")).view(target)


#: How torch resolves a tensor's lazy bits when its values are read (``resolve_neg/conj``).
_BIT_RESOLVERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "conj": np.conjugate,
    "neg": np.negative,
}


def _resolved(load: Callable[[], np.ndarray], bits: frozenset[str]) -> Callable[[], np.ndarray]:
    """Values with torch's ``conj`` then ``neg`` applied: a copy, as torch makes on reading."""
    if not bits & _BIT_RESOLVERS.keys():
        return load
    return lambda: resolve_bits(load(), bits)


def resolve_bits(values: np.ndarray, bits: frozenset[str]) -> np.ndarray:
    for bit in ("conj", "neg"):
        if bit in bits:
            values = _BIT_RESOLVERS[bit](values)
    return values


def _strided_view(tensor: PickledTensor, dtype: np.dtype) -> np.ndarray:
    """A read-only view of the storage bytes with torch's offset, size and stride (in elements)."""
    begin, _ = storage_span(tensor, dtype)
    return strided_view(tensor, dtype, tensor.storage.data, begin)


def storage_span(tensor: PickledTensor, dtype: np.dtype) -> tuple[int, int]:
    """The bytes ``begin..end`` of its storage the tensor's offset, size and stride reach,
    checked to be there."""
    offset, shape, stride = tensor.offset, tensor.shape, tensor.stride
    if not (
        is_count(offset) and are_counts(shape) and are_counts(stride) and len(shape) == len(stride)
    ):
        raise ValueError(
            f"offset {offset!r:.40}, size {shape!r:.80}, stride {stride!r:.80} are bad"
        )
    span = 1 + sum((n - 1) * s for n, s in zip(shape, stride, strict=True)) if all(shape) else 0
    begin = offset * dtype.itemsize
    end = begin + span * dtype.itemsize
    data = tensor.storage.data
    if end > data.size or begin > data.size:
        raise ValueError(
            f"needs bytes [{begin}, {end}) of storage {tensor.storage.key!r}, "
            f"which holds {data.size}"
        )
    return begin, end


def strided_view(tensor: PickledTensor, dtype: np.dtype, data: Any, begin: int) -> np.ndarray:
    """The view over ``data`` (the storage, or its span from ``begin`` fetched remotely)."""
    shape, stride = tensor.shape, tensor.stride
    # Built as opaque items, typed after (ml_dtypes types such as f8_e5m2 need it), straight
    # from the buffer: as_strided costs 40 us a tensor, a minute for 10**6 of them.
    strides = tuple(s * dtype.itemsize for s in stride)
    items = np.dtype((np.void, dtype.itemsize))
    view = np.ndarray(tuple(shape), items, buffer=data, offset=begin, strides=strides)
    view.flags.writeable = False
    return view.view(dtype)


# --- legacy files and refused pickles, through torch's own safe loader -----------------------


def _import_torch() -> ModuleType | None:
    """Imported only when needed: it takes seconds, and most checkpoints need no torch at all."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_fallback(path: Path, torch: ModuleType | None, refused: UnsafePickle | None) -> Model:
    """Read with ``torch.load(weights_only=True)``, or explain why the file cannot be read.

    ``refused`` is our allow-list's refusal of a zip file; ``None`` means a legacy file.
    """
    if torch is None:
        if refused is not None:
            raise refused
        raise MissingExtra(path, "legacy (pre-zip) PyTorch files need torch", "torch")
    try:
        with warnings.catch_warnings():  # torch's advice on pickle protocols is not the user's
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, weights_only=True, map_location="cpu", mmap=False)
    except Exception as exc:  # torch fails in many types; each becomes one of ours here
        raise _torch_failure(path, refused, exc) from exc
    found, scalars = _flatten(path, checkpoint, lambda obj: isinstance(obj, torch.Tensor))
    found, scalars = named_packed_tuples(path, found, scalars)
    check_tensor_count(path, "torch loaded", len(found))
    _check_tensor_bytes(path, torch, found)
    tensors = {name: _torch_ref(path, torch, name, t) for name, t in found.items()}
    metadata = {"torch_format": "legacy" if refused is None else "zip"}
    size = path.stat().st_size
    return Model(str(path), FORMAT, size, tensors=tensors, scalars=scalars, metadata=metadata)


def _check_tensor_bytes(path: Path, torch: ModuleType, found: dict[str, Any]) -> None:
    """Before any tensor is resolved: a stride-0 view torch holds lazily negated becomes a
    copy of its whole size when its values are read (``resolve_neg``)."""
    strided = [t for t in found.values() if t.layout == torch.strided and not t.is_meta]
    declared = sum(t.numel() * t.element_size() for t in strided)
    budget = byte_budget(path.stat().st_size)
    if declared > budget:
        raise MalformedModel(
            path,
            f"torch loaded tensors of {declared:,} bytes, over the limit of {budget:,} for a "
            "file this size: views that repeat their storage are refused",
        )


def _torch_failure(path: Path, refused: UnsafePickle | None, exc: Exception) -> UnreadableModel:
    reason = _torch_reason(exc)
    named = _TORCH_REFUSED_GLOBAL.search(str(exc))
    if refused is not None:
        # Torch's reason is worth a place only when it is not our refusal again in its words.
        why = "" if named else f": {reason}"
        problem = f"{refused.problem}; torch.load(weights_only=True) refused it too{why}"
        return UnsafePickle(path, refused.global_name, problem)
    if named:
        problem = f"{refusal_problem(named.group(1))}; torch.load(weights_only=True) refused it"
        return UnsafePickle(path, named.group(1), problem)
    return UnreadableModel(path, f"torch.load(weights_only=True) cannot read it: {reason}")


def _torch_reason(exc: Exception) -> str:
    """The one informative line of torch's long, ANSI-coloured weights_only message."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    detail = [line for line in lines if line.startswith("WeightsUnpickler error:")]
    line = detail[0].removeprefix("WeightsUnpickler error:").strip() if detail else lines[0]
    return line.split(". ")[0]


def _torch_ref(path: Path, torch: ModuleType, name: str, tensor: Any) -> TensorRef:
    if tensor.is_quantized:
        return torch_qtensor_ref(path, name, tensor)
    dtype = TORCH_DTYPES.get(str(tensor.dtype).removeprefix("torch."))
    if dtype is not None and str(tensor.layout) in SPARSE_LAYOUTS:
        return _torch_sparse_ref(path, torch, name, tensor)
    if dtype is None or tensor.layout != torch.strided or tensor.is_meta:
        kind = _tensor_kind(torch, tensor)
        raise UnreadableModel(path, f"tensor {name!r} is {kind}, which diffai does not read yet")
    try:  # torch resolves the lazy neg and conj bits when it reads values; numpy() refuses them
        array = _torch_numpy(torch, tensor.detach().resolve_conj().resolve_neg(), dtype)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise UnreadableModel(path, f"tensor {name!r}: {_torch_reason(exc)}") from exc
    array.setflags(write=False)
    return TensorRef(name=name, shape=array.shape, dtype=dtype, load=lambda: array)


#: The parts of each sparse layout, as torch names their accessors (values last).
_BY_ROWS, _BY_COLUMNS = (
    ("crow_indices", "col_indices", "values"),
    ("ccol_indices", "row_indices", "values"),
)
_TORCH_SPARSE_PARTS = {
    "coo": ("_indices", "_values"), "csr": _BY_ROWS, "csc": _BY_COLUMNS, "bsr": _BY_ROWS,
    "bsc": _BY_COLUMNS,
}  # fmt: skip


def _torch_sparse_ref(path: Path, torch: ModuleType, name: str, tensor: Any) -> TensorRef:
    """What torch loaded, taken apart into the parts a zip's pickle names, and read alike."""
    layout = SPARSE_LAYOUTS[str(tensor.layout)]
    coalesced = tensor.is_coalesced() if layout == "coo" else None
    parts = [getattr(tensor, accessor)() for accessor in _TORCH_SPARSE_PARTS[layout]]
    try:
        arrays = [_torch_ref(path, torch, name, part) for part in parts]
        described = [Part(ref.dtype, ref.array()) for ref in arrays]
        return sparse_ref(name, layout, tuple(tensor.shape), described, coalesced)
    except ValueError as exc:
        raise UnreadableModel(path, f"tensor {name!r}: {one_line(exc)}") from exc


def _tensor_kind(torch: ModuleType, tensor: Any) -> str:
    """What a tensor torch loaded but diffai cannot compare is: a meta, a layout, or a dtype."""
    if tensor.is_meta:
        return "a meta tensor (one without values)"
    if tensor.layout != torch.strided:
        return f"a sparse tensor ({tensor.layout})"
    return f"of dtype {tensor.dtype}"


def _torch_numpy(torch: ModuleType, tensor: Any, dtype: str) -> np.ndarray:
    """numpy has no bf16 or f8, so those go through a same-size integer view."""
    if dtype not in _TORCH_SAME_SIZE:
        return tensor.numpy()
    same_size = getattr(torch, _TORCH_SAME_SIZE[dtype])
    return tensor.view(same_size).numpy().view(numpy_dtype(dtype))
