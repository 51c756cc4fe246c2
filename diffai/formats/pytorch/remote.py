"""A ``torch.save`` zip read where it lives, by ranges (``formats.remote``), nothing on disk.

The same reader as a local file's, over ``RangedZip`` in place of the mapped
file: the same directory replay, record checks and allow-list unpickler, so a
file refused locally is refused remotely in the same words. What it fetches is
told in ``zipranges``; each storage's bytes come only when a tensor's values
stream, straight into the statistics. What needs more than ranges says it needs
a local copy: a legacy (pre-zip) file, a compressed storage, a pickle only
``torch.load`` might read (the allow-list's refusal), a quantized tensor.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, cast

import numpy as np

from diffai.dtypes import numpy_dtype
from diffai.errors import MalformedModel, UnreadableModel, UnsafePickle
from diffai.formats import pytorch
from diffai.formats.limits import MAX_TENSORS
from diffai.formats.pytorch import torchscript
from diffai.formats.pytorch.archive import TorchArchive
from diffai.formats.pytorch.numpy_values import PickledArray
from diffai.formats.pytorch.quantized import PickledQTensor
from diffai.formats.pytorch.sparse import PickledSparse
from diffai.formats.pytorch.unpickler import PickledTensor
from diffai.formats.pytorch.zipranges import RangedZip, Span
from diffai.formats.zipmembers import LOCAL_HEADER
from diffai.model import Model, TensorRef, iter_chunks
from diffai.sources import ByteSource, whole_elements

FORMAT = pytorch.FORMAT
LOCAL_COPY = "needs a local copy: download it and compare the files"


def matches(_path: PurePosixPath, head: bytes) -> bool:
    """A zip (whether it holds ``data.pkl`` is known once its directory is read) or a legacy
    torch pickle."""
    return head.startswith(pytorch.ZIP_MAGIC) or pytorch.is_legacy(head)


def read_source(source: ByteSource) -> Model | None:
    """The model, or None for a zip that is not a ``torch.save`` checkpoint (no ``data.pkl``,
    or a TorchScript archive, whose code and constants are read only from a local copy)."""
    head = source.read(0, min(source.size, 16))
    name = cast(Path, source.name)  # a URL, named in messages only (a Path would fold its //)
    if pytorch.is_legacy(head):
        raise UnreadableModel(name, f"a legacy (pre-zip) PyTorch file {LOCAL_COPY}")
    if not head.startswith(pytorch.ZIP_MAGIC):
        raise MalformedModel(name, pytorch.NOT_PYTORCH)
    members = _RangedArchive(name, RangedZip(source))
    names = members.names()
    if pytorch.pickle_member(names) is None or torchscript.is_script_archive(names):
        members.archive.close()
        return None
    try:
        return pytorch.read_archive(name, members, source.size, _mappers(name))
    except UnsafePickle as refused:
        problem = f"{refused.problem}; torch.load(weights_only=True) is tried only on a local copy"
        raise UnsafePickle(name, refused.global_name, problem) from refused


#: Members a remote checkpoint may list: one storage per tensor at most, and torch's records.
#: Each costs a header request, so a crafted directory must not ask for millions of them.
MAX_MEMBERS = MAX_TENSORS + 16


class _RangedArchive(TorchArchive):
    def __init__(self, path: Path, ranged: RangedZip) -> None:
        super().__init__(path, ranged)
        members = self.archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise MalformedModel(
                path, f"its zip directory lists {len(members):,} members, over the {MAX_MEMBERS:,}"
                f" a checkpoint of at most {MAX_TENSORS:,} tensors can hold"
            )
        headers = (info.header_offset for info in members)
        ranged.prefetch((at, at + LOCAL_HEADER.size) for at in headers if at < ranged.size)

    def member_array(self, name: str) -> Any:
        """A stored member's ``Span``; a compressed one would be inflated whole into memory."""
        info = self._info(name)
        if info.compress_type != zipfile.ZIP_STORED:
            raise UnreadableModel(self.path, f"zip member {name!r} is compressed; it {LOCAL_COPY}")
        return super().member_array(name)


def _tensor_ref(name: str, tensor: PickledTensor, byteorder: str) -> TensorRef:
    stored = pytorch.stored_dtype(tensor.dtype, byteorder)
    begin, end = pytorch.storage_span(tensor, stored)
    storage: Span = tensor.storage.data  # type: ignore[assignment]
    values = numpy_dtype(tensor.dtype)
    as_values = _converter(stored, values, tensor.bits)
    if _is_c_contiguous(tensor.shape, tensor.stride):

        def pieces() -> Iterator[np.ndarray]:
            return _contiguous(storage, begin, end, stored, as_values)

        return TensorRef(name, tuple(tensor.shape), tensor.dtype, stream=pieces)

    def strided() -> Iterator[np.ndarray]:
        """A view that skips or repeats elements: its span fetched whole, then viewed."""
        span = b"".join(storage.stream(begin, end))
        view = pytorch.strided_view(tensor, stored, span, 0)
        return (as_values(chunk) for chunk in iter_chunks(view))

    return TensorRef(name, tuple(tensor.shape), tensor.dtype, stream=strided)


def _contiguous(storage: Span, begin: int, end: int, stored: np.dtype,
                as_values: Callable[[np.ndarray], np.ndarray]) -> Iterator[np.ndarray]:  # fmt: skip
    pieces = whole_elements(storage.stream(begin, end), stored.itemsize)
    items = np.dtype((np.void, stored.itemsize))
    return (as_values(np.frombuffer(piece, items).view(stored)) for piece in pieces)


def _converter(stored: np.dtype, values: np.dtype,
               bits: frozenset[str]) -> Callable[[np.ndarray], np.ndarray]:  # fmt: skip
    """Stored pieces as values: big-endian ones swapped (bf16 maps as uint16), lazy bits
    resolved."""

    def convert(piece: np.ndarray) -> np.ndarray:
        if piece.dtype != values:
            piece = piece.astype(piece.dtype.newbyteorder("<")).view(values)
        return pytorch.resolve_bits(piece, bits)

    return convert


def _is_c_contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """Strides of a C-order array, ignoring dimensions of one element (any stride reads alike)."""
    expected = 1
    for size, step in zip(reversed(shape), reversed(stride), strict=True):
        if size != 1 and step != expected:
            return False
        expected *= size
    return True


def _mappers(path: Path) -> pytorch.Mappers:
    """What each kind of tensor becomes remotely; a numpy array is held whole by the pickle."""

    def local_only(kind: str) -> Callable[[str, Any, str], TensorRef]:
        def refuse(name: str, _tensor: Any, _byteorder: str) -> TensorRef:
            raise UnreadableModel(path, f"tensor {name!r} is {kind}; a {kind} tensor {LOCAL_COPY}")

        return refuse

    return {
        PickledTensor: _tensor_ref,
        PickledArray: pytorch.array_ref,
        PickledQTensor: local_only("quantized"),
        PickledSparse: local_only("sparse"),
    }
