"""What every model must satisfy, whatever its format: checked once a reader is done.

A reader checks its own format's rules; these are the ones no format can
promise on its own, because each protects a later stage from a hostile file:

- names are shown on one line in logs, PR comments and reports, so a name may
  hold no control character, line or paragraph separator, or lone surrogate
  (which no UTF-8 output can encode), and no more than ``MAX_NAME_CHARS``;
- a shape must be one numpy can build (at most 64 axes, sizes that fit in
  64 bits), or reading the values would fail long after the file was accepted;
- the tensors may add up to at most ``byte_budget(file size)`` (an encoded tensor by its
  stored bytes, its values at most ``MAX_DECODE_RATIO`` times those): views that
  repeat their storage (stride 0, overlapping strides) and compressed members
  let a few bytes of file declare terabytes, which would take hours to
  stream (or memory to inflate), while real checkpoints stay near their size;
- a scalar must fit in the JSON report: integers of at most ``MAX_INT_BITS``;
- a model holds at most ``MAX_TENSORS`` tensors, which readers whose files can
  list more check before building anything per tensor (``check_tensor_count``).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path

from diffai.dtypes import numpy_dtype
from diffai.errors import MalformedModel
from diffai.formats._opening import plain_names, tensor_kinds
from diffai.model import Model, Scalar, TensorRef
from diffai.text import UNSHOWABLE

#: Real names are under 200 characters; a megabyte-long one only floods every output.
MAX_NAME_CHARS = 1024
#: numpy's own limit on the number of axes.
MAX_DIMS = 64
#: numpy indexes with signed 64-bit integers, so no size (in bytes or elements) may reach 2**63.
MAX_SIZE = 2**63 - 1
#: The tensors may declare this many times the file's bytes ...
MAX_EXPANSION = 8
#: ... plus this much, so small files may still hold a modest expanded buffer.
EXPANSION_ALLOWANCE = 1 << 30
#: 128-bit hashes and seeds fit; a 4,300-digit integer cannot even be written as JSON.
MAX_INT_BITS = 1024
#: Values per stored byte of an encoded tensor (``stored_as``): GGUF's IQ1_S keeps 256 values
#: in 50 bytes, 20.5x as f32, the densest codec diffai dequantizes.
MAX_DECODE_RATIO = 32
#: Tensors of one model (all its shards). The largest mixture-of-experts checkpoints hold
#: about 10**5 (Kimi K2 with its FP8 scales: 141,000); a header or index of a million
#: empty tensors costs a minute and gigabytes at every per-tensor step, reading it included,
#: so readers count before they build anything per tensor.
MAX_TENSORS = 200_000


def byte_budget(file_size: int) -> int:
    """How many bytes of tensors a file of ``file_size`` bytes may declare."""
    return MAX_EXPANSION * file_size + EXPANSION_ALLOWANCE


def check_model(path: Path, model: Model) -> None:
    check_tensor_count(path, "it holds", len(model.tensors))
    _check_names(path, "tensor", list(model.tensors))
    kinds: Kinds = tensor_kinds(model.tensors.values())
    _check_shapes(path, model.tensors.values(), kinds)
    _check_names(path, "scalar", list(model.scalars))
    for name, value in model.scalars.items():
        _check_scalar(path, name, value)
    _check_budget(path, model, kinds)


#: What the shape and budget checks read of a tensor: its shape, dtype, stored_as and
#: stored_size. Tensors come in few kinds (a mixture-of-experts model repeats a handful of
#: shapes 100,000 times), so each kind is checked once, and tensor by tensor only to name the
#: first one that fails: 100,000 tensors took 0.25 s of CPU tensor by tensor, 0.03 s counted
#: by kind through ``collections.Counter`` (0.07 s at load 3), 0.01 s by ``tensor_kinds``
#: (diffai/formats/_opening.c), which builds no key for a tensor whose attributes are the
#: objects of a kind just seen.
Kind = tuple[tuple[int, ...], str, str | None, int | None]
Kinds = dict[Kind, int]


def check_tensor_count(path: Path, holder: str, count: int) -> None:
    """``holder`` says what counted them, e.g. ``the index lists``."""
    if count > MAX_TENSORS:
        raise MalformedModel(path, f"{holder} {count:,} tensors, over the limit of {MAX_TENSORS:,}")


def _check_names(path: Path, kind: str, names: list[str]) -> None:
    """All names at once, and name by name only to say which one when some name fails.

    Names all printable ASCII and short enough pass in C (``plain_names``: 100,000 names
    in 2 ms, where their longest, their join and a byte translation of it took 30 ms at
    load 3); any others are searched joined, by one regex (100,000 searches took 0.1 s)."""
    if plain_names(names, MAX_NAME_CHARS):
        return
    too_long = max(map(len, names), default=0) > MAX_NAME_CHARS
    joined = "".join(names)
    if too_long or UNSHOWABLE.search(joined):
        for name in names:
            _check_name(path, kind, name)


def _check_name(path: Path, kind: str, name: str) -> None:
    if len(name) > MAX_NAME_CHARS:
        raise MalformedModel(
            path,
            f"{kind} name {name[:40]!r}... is {len(name):,} characters long, "
            f"over the limit of {MAX_NAME_CHARS}",
        )
    bad = UNSHOWABLE.search(name)
    if bad:
        raise MalformedModel(
            path,
            f"{kind} name {name!r} contains {bad.group()!r}, "
            "which no log or comment shows on one line",
        )


def _check_shapes(path: Path, refs: Collection[TensorRef], kinds: Kinds) -> None:
    if any(_shape_problem(shape, dtype) for shape, dtype, _, _ in kinds):
        for ref in refs:
            _check_shape(path, ref)


def _check_shape(path: Path, ref: TensorRef) -> None:
    problem = _shape_problem(ref.shape, ref.dtype)
    if problem:
        shown = _shown_shape(ref.shape)
        raise MalformedModel(path, f"tensor {ref.name!r}: shape {shown} has {problem}")


def _shape_problem(shape: tuple[int, ...], dtype: str) -> str:
    if len(shape) > MAX_DIMS:
        return f"{len(shape)} axes, over numpy's limit of {MAX_DIMS}"
    if any(size > MAX_SIZE for size in shape):
        return "a size that does not fit in 64 bits"
    if math.prod(size for size in shape if size) * numpy_dtype(dtype).itemsize > MAX_SIZE:
        return "more bytes than a 64-bit size can count"
    return ""


def _shown_shape(shape: tuple[int, ...]) -> str:
    text = str(list(shape))
    return text if len(text) <= 80 else f"{text[:77]}..."


def _check_scalar(path: Path, name: str, value: Scalar) -> None:
    values = value if isinstance(value, list) else [value]
    for item in values:
        if isinstance(item, int) and item.bit_length() > MAX_INT_BITS:
            raise MalformedModel(
                path,
                f"scalar {name!r} is an integer of {item.bit_length():,} bits, "
                f"over the limit of {MAX_INT_BITS}",
            )


def _check_budget(path: Path, model: Model, kinds: Kinds) -> None:
    # Values are what is streamed, the stored encoding what a reader may hold: both are bounded.
    if any(stored_as is not None for _, _, stored_as, _ in kinds):
        declared = sum(_declared_bytes(path, ref) for ref in model.tensors.values())
    else:
        declared = sum(count * _plain_bytes(*kind) for kind, count in kinds.items())
    budget = byte_budget(model.size_bytes)
    if declared > budget:
        raise MalformedModel(
            path,
            f"its tensors add up to {declared:,} bytes, more than {MAX_EXPANSION}x its "
            f"{model.size_bytes:,} bytes plus 1 GiB: views that repeat their storage or "
            "compressed data that inflate this far are refused",
        )


def _plain_bytes(shape: tuple[int, ...], dtype: str, _: None, stored_size: int | None) -> int:
    """``_declared_bytes`` of a tensor of this kind stored as its values."""
    nbytes = math.prod(shape) * numpy_dtype(dtype).itemsize
    return nbytes if stored_size is None else max(nbytes, stored_size)


def _declared_bytes(path: Path, ref: TensorRef) -> int:
    """An encoded tensor counts its stored bytes, its values at most ``MAX_DECODE_RATIO`` times
    those: a real 2.8 GB Q2_K GGUF dequantizes to 28 GB of f32, 12x its file, which is work in
    proportion to the model, not repeated storage; a ratio past any codec's is refused."""
    if ref.stored_as is None:
        return max(ref.nbytes, ref.stored_bytes)
    if ref.nbytes > MAX_DECODE_RATIO * max(ref.stored_bytes, 1):
        raise MalformedModel(
            path,
            f"tensor {ref.name!r}: {ref.nbytes:,} bytes of values from {ref.stored_bytes:,} "
            f"stored bytes of {ref.stored_as}, over {MAX_DECODE_RATIO}x",
        )
    return ref.stored_bytes
