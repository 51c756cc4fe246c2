"""Quantized tensors and the packed parameters of quantized layers, read as data.

``torch.ao.quantization`` saves a quantized tensor as ``_rebuild_qtensor(storage,
offset, size, stride, (scheme, scale, zero_point[, axis]), ...)`` over a
``QInt8Storage`` (or ``QUInt8``, ``QInt32``, ``QUInt4x2``, ``QUInt2x4``), and the
packed weights of a dynamic LSTM as a ``torch.ScriptObject`` whose ``BUILD``
state names a C++ class and holds that class's ``__getstate__`` tuple. The
stand-ins here check those arguments and describe them; nothing is looked up by
the names the file gives. Values are compared dequantized, with torch's own
arithmetic, so each float32 equals ``tensor.dequantize()`` bit for bit:

- per tensor (fbgemm's ``Dequantize``): ``f32(scale) * f32(i32(q - zero_point))``;
- per channel (``dequantize_per_channel_affine_kernel``):
  ``f32(f64(f32(q) - f32(zero_point)) * scale)``, the channel's scale and zero point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffai.errors import UnreadableModel
from diffai.formats.pytorch.standins import are_counts
from diffai.formats.pytorch.standins import refuse_state as _refuse_state
from diffai.formats.pytorch.unpickler import (
    PickledTensor,
    _check_requires_grad,
    _Storage,
    _StorageType,
    _TorchDtype,
)
from diffai.formats.pytorch.unpickler import _Function as Function
from diffai.model import CHUNK_ELEMENTS, TensorRef, iter_chunks

#: A strided, byte-order-aware view of a pickled tensor's storage as a canonical dtype.
ViewOf = Callable[[PickledTensor, str], np.ndarray]


@dataclass(frozen=True)
class QuantizedType:
    """How torch stores one quantized dtype: the integer each value is, bits, range."""

    stored: str
    bits: int
    qmin: int
    qmax: int


QUANTIZED_TYPES = {
    "qint8": QuantizedType("i8", 8, -(2**7), 2**7 - 1),
    "quint8": QuantizedType("u8", 8, 0, 2**8 - 1),
    "qint32": QuantizedType("i32", 32, -(2**31), 2**31 - 1),
    "quint4x2": QuantizedType("u8", 4, 0, 2**4 - 1),
    "quint2x4": QuantizedType("u8", 2, 0, 2**2 - 1),
}
_STORAGES = {
    "QInt8Storage": "qint8", "QUInt8Storage": "quint8", "QInt32Storage": "qint32",
    "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
}  # fmt: skip
#: The schemes ``_rebuild_qtensor`` reads; the symmetric ones it refuses stay off the list.
SCHEMES = ("per_tensor_affine", "per_channel_affine", "per_channel_affine_float_qparams")
#: Per-channel (scales, zero points) dtypes torch writes, and the scheme each pair is.
_CHANNEL_PARAMS = {("f64", "i64"): "per_channel_affine", ("f32", "f32"): SCHEMES[2]}


@dataclass(frozen=True, slots=True, repr=False)
class _QuantizedStorageType(_StorageType):
    """``torch.QInt8Storage`` and kin: one byte an item, four for qint32. ``__setstate__`` is
    given again: a slotted dataclass would otherwise get one of its own that BUILD could use
    to rewrite this instance, shared by every read."""

    __setstate__ = _refuse_state

    @property
    def itemsize(self) -> int:
        return 4 if self.dtype == "qint32" else 1


@dataclass(frozen=True, slots=True, repr=False)
class _QScheme:
    """Stand-in for ``torch.per_tensor_affine`` and kin."""

    name: str
    __setstate__ = _refuse_state

    def __repr__(self) -> str:
        return f"torch.{self.name}"


@dataclass(frozen=True, slots=True, eq=False)
class PickledQTensor:
    """A quantized tensor as the pickle describes it: its stored integers (``values``, of the
    quantized type's integer dtype) and its quantizer, checked once its name is known."""

    values: PickledTensor
    qdtype: str
    scheme: str
    scale: Any
    zero_point: Any
    axis: Any = None
    __setstate__ = _refuse_state

    def __repr__(self) -> str:
        return "a quantized tensor"


def _rebuild_qtensor(
    storage: Any,
    offset: Any,
    size: Any,
    stride: Any,
    quantizer_params: Any,
    requires_grad: Any,
    _backward_hooks: Any,
) -> PickledQTensor:
    """``torch._utils._rebuild_qtensor``; the quantizer's numbers are checked by ``qtensor_ref``."""
    if not (isinstance(storage, _Storage) and storage.dtype in QUANTIZED_TYPES):
        raise ValueError("_rebuild_qtensor needs a quantized storage")
    if not (isinstance(quantizer_params, tuple) and quantizer_params):
        raise ValueError(f"quantizer parameters {quantizer_params!r:.60} are not a tuple")
    scheme, *numbers = quantizer_params
    if not isinstance(scheme, _QScheme) or len(numbers) != (2 if scheme == _PER_TENSOR else 3):
        raise ValueError(f"quantizer parameters {quantizer_params!r:.80} are not torch's")
    _check_requires_grad(storage.dtype, requires_grad)
    stored = QUANTIZED_TYPES[storage.dtype].stored
    values = PickledTensor(storage, stored, offset, size, stride)
    return PickledQTensor(values, storage.dtype, scheme.name, *numbers)


_PER_TENSOR = _QScheme(SCHEMES[0])
_REBUILD = "torch._utils._rebuild_qtensor"


# --- values --------------------------------------------------------------------------------


def qtensor_ref(name: str, tensor: PickledQTensor, view: ViewOf) -> TensorRef:
    """The dequantized float32 values, streamed; ValueError when torch's reading is not certain."""
    qtype = QUANTIZED_TYPES[tensor.qdtype]
    integers, shape = _integers(tensor.values, qtype, view)
    if tensor.scheme == _PER_TENSOR.name:
        dequantize, params, extra = _per_tensor(tensor, qtype)
    else:
        dequantize, params, extra = _per_channel(tensor, qtype, shape, view)
    elements = math.prod(shape)

    def stream() -> Iterator[np.ndarray]:
        start = 0
        for chunk in integers():
            yield dequantize(chunk, start)
            start += chunk.size

    stored = (elements * qtype.bits + 7) // 8 + extra
    return TensorRef(
        name, shape, "f32", stream=stream, stored_as=tensor.qdtype, stored_size=stored,
        quantization=params,
    )  # fmt: skip


def _integers(
    values: PickledTensor, qtype: QuantizedType, view: ViewOf
) -> tuple[Callable[[], Iterator[np.ndarray]], tuple[int, ...]]:
    """The stored integers in C order, in chunks; sub-byte ones unpacked from their bytes."""
    if qtype.bits >= 8:
        array = view(values, qtype.stored)
        return lambda: iter_chunks(array), array.shape
    return _unpacked(values, qtype.bits)


def _unpacked(
    values: PickledTensor, bits: int
) -> tuple[Callable[[], Iterator[np.ndarray]], tuple[int, ...]]:
    """quint4x2 and quint2x4 pack 8 // bits values a byte, the first in the lowest bits.
    Torch applies a view's offset and strides to such a tensor in bytes, not values, so
    only a whole contiguous tensor reads as torch reads it."""
    shape, offset, stride = values.shape, values.offset, values.stride
    if not (are_counts(shape) and len(shape) <= 64):
        raise ValueError(f"size {shape!r:.80} is bad")
    if offset != 0 or stride != _contiguous(shape):
        raise ValueError(
            f"a view (offset {offset!r:.20}, stride {stride!r:.60}) of values packed "
            f"{8 // bits} to a byte, which torch does not read as values; refused as ambiguous"
        )
    elements = math.prod(shape)
    needed = (elements * bits + 7) // 8
    data = values.storage.data
    if data.size < needed:
        raise ValueError(
            f"needs {needed} bytes of storage {values.storage.key!r}, which holds {data.size}"
        )
    packed = data[:needed]
    per_byte = 8 // bits
    shifts = np.arange(0, 8, bits, dtype=np.uint8)
    mask = np.uint8((1 << bits) - 1)

    def chunks() -> Iterator[np.ndarray]:
        step = CHUNK_ELEMENTS // per_byte
        for start in range(0, needed, step):
            piece = (packed[start : start + step, None] >> shifts) & mask
            yield piece.reshape(-1)[: elements - start * per_byte]

    return chunks, tuple(shape)


def _contiguous(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


Dequantize = Callable[[np.ndarray, int], np.ndarray]
_F32 = np.finfo(np.float32)


def _per_tensor(tensor: PickledQTensor, qtype: QuantizedType) -> tuple[Dequantize, dict, int]:
    scale, zero_point = tensor.scale, tensor.zero_point
    if not isinstance(scale, float):
        raise ValueError(f"quantization scale {scale!r:.40} is not a float")
    if not _is_int(zero_point):
        raise ValueError(f"zero point {zero_point!r:.40} is not an integer")
    _check_scales(np.array([scale]))
    _check_zero_points(np.array([zero_point], np.float64), qtype)
    scale32 = np.float32(scale)

    def dequantize(q: np.ndarray, _start: int) -> np.ndarray:
        shifted = (q.astype(np.int64) - zero_point).astype(np.int32)  # fbgemm's int32 arithmetic
        with np.errstate(over="ignore"):
            return scale32 * shifted.astype(np.float32)

    params = {"scheme": tensor.scheme, "scale": scale, "zero_point": zero_point, "axis": None}
    return dequantize, params, 0


def _per_channel(
    tensor: PickledQTensor, qtype: QuantizedType, shape: tuple[int, ...], view: ViewOf
) -> tuple[Dequantize, dict, int]:
    axis, scales, points = tensor.axis, tensor.scale, tensor.zero_point
    if not (_is_int(axis) and 0 <= axis < len(shape)):
        raise ValueError(f"per-channel axis {axis!r:.40} is out of range for size {shape}")
    scheme = _channel_scheme(scales, points)
    scale_values, point_values = view(scales, scales.dtype), view(points, points.dtype)
    channels = shape[axis]
    if scale_values.shape != (channels,) or point_values.shape != (channels,) or not channels:
        raise ValueError(
            f"scales of size {list(scale_values.shape)} and zero points of size "
            f"{list(point_values.shape)} for {channels} channels along axis {axis}"
        )
    extra = scale_values.nbytes + point_values.nbytes
    scale_values = scale_values.astype(np.float64)
    _check_scales(scale_values)
    _check_zero_points(point_values.astype(np.float64), qtype if scheme == SCHEMES[1] else None)
    inner = math.prod(shape[axis + 1 :])
    points32 = point_values.astype(np.float32)

    def dequantize(q: np.ndarray, start: int) -> np.ndarray:
        channel = np.arange(start, start + q.size) // inner % channels
        shifted = q.astype(np.float32) - points32[channel]
        with np.errstate(over="ignore"):
            return (shifted.astype(np.float64) * scale_values[channel]).astype(np.float32)

    params = {
        "scheme": scheme, "axis": axis, "channels": channels,
        "scale": _summary(scale_values), "zero_point": _summary(point_values),
    }  # fmt: skip
    return dequantize, params, extra


def _channel_scheme(scales: Any, points: Any) -> str:
    """Torch writes f64 scales with i64 zero points, or f32 with f32 (``float_qparams``)."""
    if not (isinstance(scales, PickledTensor) and isinstance(points, PickledTensor)):
        raise ValueError("per-channel scales and zero points are not tensors")
    scheme = _CHANNEL_PARAMS.get((scales.dtype, points.dtype))
    if scheme is None:
        raise ValueError(
            f"per-channel scales of {scales.dtype} with zero points of {points.dtype} are not "
            "what torch writes"
        )
    if scales.bits or points.bits:
        raise ValueError(
            "per-channel scales or zero points carry tensor metadata, which torch does not "
            "write; refused as ambiguous"
        )
    return scheme


def _check_scales(scales: np.ndarray) -> None:
    """Positive numbers a float32 holds, as torch's observers make them."""
    if not ((scales >= _F32.tiny) & (scales <= _F32.max)).all():
        raise ValueError(
            f"quantization scales {_shown(scales)} are not positive numbers a float32 holds"
        )


def _check_zero_points(points: np.ndarray, qtype: QuantizedType | None) -> None:
    """Within the stored type's range; ``float_qparams`` ones (``qtype`` None) within int32's,
    beyond which torch's dequantize refuses them (a fuzzed file found 9.5e13)."""
    low, high = (qtype.qmin, qtype.qmax) if qtype else (-(2**31), 2**31 - 1)
    if not (np.isfinite(points) & (points >= low) & (points <= high)).all():
        raise ValueError(f"zero points {_shown(points)} are outside {low}..{high}")


def _shown(values: np.ndarray) -> str:
    return f"{values[:4].tolist()!r:.60}"


def _summary(values: np.ndarray) -> dict[str, float]:
    """Thousands of per-channel numbers, as three."""
    as_floats = values.astype(np.float64)
    return {
        "min": float(as_floats.min()),
        "max": float(as_floats.max()),
        "mean": float(as_floats.mean()),
    }


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- read by torch (legacy files, pickles the allow-list refuses) ----------------------------


def torch_qtensor_ref(path: Path, name: str, tensor: Any) -> TensorRef:
    """The same tensor from ``torch.load``: torch is the loader there, so it dequantizes."""
    qdtype = str(tensor.dtype).removeprefix("torch.")
    scheme = str(tensor.qscheme()).removeprefix("torch.")
    if qdtype not in QUANTIZED_TYPES or scheme not in SCHEMES:
        raise UnreadableModel(
            path, f"tensor {name!r} is a {scheme} tensor of {qdtype}, which diffai does not read"
        )
    values = tensor.dequantize().detach().numpy()
    values.setflags(write=False)
    params, extra = _torch_params(tensor, scheme)
    stored = (tensor.numel() * QUANTIZED_TYPES[qdtype].bits + 7) // 8 + extra
    return TensorRef(
        name, tuple(values.shape), "f32", load=lambda: values, stored_as=qdtype,
        stored_size=stored, quantization=params,
    )  # fmt: skip


def _torch_params(tensor: Any, scheme: str) -> tuple[dict[str, Any], int]:
    if scheme == _PER_TENSOR.name:
        scale, zero_point = tensor.q_scale(), tensor.q_zero_point()
        return {"scheme": scheme, "scale": scale, "zero_point": zero_point, "axis": None}, 0
    scales = tensor.q_per_channel_scales().numpy()
    points = tensor.q_per_channel_zero_points().numpy()
    params = {
        "scheme": scheme, "axis": tensor.q_per_channel_axis(), "channels": scales.size,
        "scale": _summary(scales), "zero_point": _summary(points),
    }  # fmt: skip
    return params, scales.nbytes + points.nbytes


#: The globals of a quantized tensor, each an immutable stand-in shared by every read.
QUANTIZED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_qtensor"): Function(
        "torch._utils._rebuild_qtensor", _rebuild_qtensor
    ),
    **{("torch", name): _QuantizedStorageType(dtype) for name, dtype in _STORAGES.items()},
    **{("torch", name): _TorchDtype(name) for name in QUANTIZED_TYPES},
    **{("torch", name): _QScheme(name) for name in SCHEMES},
}
