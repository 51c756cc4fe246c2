"""A TensorFlow checkpoint (tensor bundle): ``<prefix>.index`` and its data shards.

The index (``table``) maps each key to a BundleEntryProto: dtype, shape, shard,
offset, size and the masked CRC32C of the bytes; the key ``""`` holds the
BundleHeaderProto (number of shards, byte order). The shards
``<prefix>.data-00000-of-0000N`` are raw bytes at those offsets, memory-mapped
and streamed; each tensor's CRC32C is checked as its bytes stream by, as
TensorFlow checks it when it loads the tensor, so a file TensorFlow refuses is
refused here too (at the end of that tensor's pass). Shards must be regular
files inside the checkpoint's folder, even through a symbolic link: raw bytes
read from ``/proc/self/environ`` would be a runner's secrets in a report.

Names: the checkpoint's object paths with ``/`` as ``.``, TensorFlow's
``/.ATTRIBUTES/VARIABLE_VALUE`` dropped and the leading dot of its own segments
(``.OPTIMIZER_SLOT``) too: ``inner/w/.ATTRIBUTES/VARIABLE_VALUE`` is ``inner.w``.
String tensors (the object graph, Keras's JSON configs) are not values to compare.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from diffai.dtypes import numpy_dtype
from diffai.errors import MalformedModel, UnreadableModel
from diffai.formats.limits import MAX_DIMS
from diffai.formats.mapped import map_bytes
from diffai.formats.tensorflow import FORMAT, table
from diffai.formats.tensorflow import protobuf as pb
from diffai.formats.tensorflow.dtypes import DT_STRING, dtype_name
from diffai.model import Model, TensorRef

VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
#: BundleEntryProto's fields; BundleHeaderProto's.
DTYPE, SHAPE, SHARD, OFFSET, SIZE, CRC, SLICES = 1, 2, 3, 4, 5, 6, 7
NUM_SHARDS, ENDIANNESS = 1, 2
MAX_SHARDS = 100_000
#: Bytes per piece of a streamed tensor: a multiple of every itemsize.
PIECE_BYTES = 1 << 22


def read_bundle(path: Path, prefix: Path, metadata: dict[str, object]) -> Model:
    """``prefix.index`` and its shards as a model; ``path`` is what the user named."""
    index = prefix.with_name(prefix.name + ".index")
    data = _mapped(path, index)
    try:
        listed = list(table.entries(data))
    except pb.WireError as exc:
        raise MalformedModel(
            path, f"{index.name} is not a readable checkpoint index: {exc}"
        ) from exc
    if not listed or listed[0][0] != b"":
        raise MalformedModel(path, f"{index.name} has no bundle header")
    shards = _header(path, index, listed[0][1])
    tensors = {}
    for key, value in listed[1:]:
        ref = _entry(path, prefix, shards, key, value)
        if ref is not None:
            if ref.name in tensors:
                raise MalformedModel(
                    path, f"two tensors are named {ref.name!r}; refused as ambiguous"
                )
            tensors[ref.name] = ref
    size = sum(file.stat().st_size for file in _shard_paths(prefix, shards)) + len(data)
    return Model(str(path), FORMAT, size, tensors, metadata={**metadata, "shards": shards})


def _mapped(path: Path, file: Path) -> memoryview:
    try:
        size = file.stat().st_size
        return memoryview(map_bytes(file) if size else np.empty(0, np.uint8))
    except OSError as exc:
        raise UnreadableModel(path, f"cannot read {file.name}: {exc.strerror or exc}") from exc


def _header(path: Path, index: Path, value: memoryview) -> int:
    shards, big_endian = 1, 0
    try:
        for field in pb.fields(value):
            if field.number == NUM_SHARDS:
                shards = pb.signed(pb.number(field))
            elif field.number == ENDIANNESS:
                big_endian = pb.number(field)
    except pb.WireError as exc:
        raise MalformedModel(path, f"{index.name}: its bundle header is unreadable: {exc}") from exc
    if big_endian:
        raise UnreadableModel(
            path, f"{index.name} is a big-endian checkpoint, which diffai does not read"
        )
    if not 1 <= shards <= MAX_SHARDS:
        raise MalformedModel(path, f"{index.name} claims {shards:,} data shards")
    return shards


def _shard_paths(prefix: Path, shards: int) -> list[Path]:
    return [prefix.with_name(f"{prefix.name}.data-{i:05d}-of-{shards:05d}") for i in range(shards)]


def tensor_name(key: bytes) -> str:
    text = key.decode("utf-8", "replace").removesuffix(VALUE_SUFFIX)
    return ".".join(segment.lstrip(".") for segment in text.split("/"))


def _entry(
    path: Path, prefix: Path, shards: int, key: bytes, value: memoryview
) -> TensorRef | None:
    name = tensor_name(key)
    try:
        found = {field.number: field for field in pb.fields(value)}
        dtype = pb.number(found[DTYPE]) if DTYPE in found else 0
        if dtype == DT_STRING:
            return None
        if SLICES in found:
            raise UnreadableModel(
                path, f"tensor {name!r} is a partitioned variable, which diffai does not read yet"
            )
        shape = tensor_shape(found[SHAPE]) if SHAPE in found else ()
        where = tuple(
            pb.signed(pb.number(found[f])) if f in found else 0 for f in (SHARD, OFFSET, SIZE)
        )
        crc = pb.number(found[CRC]) if CRC in found else 0
    except pb.WireError as exc:
        raise MalformedModel(
            path, f"tensor {name!r}: its index entry is unreadable: {exc}"
        ) from exc
    return _tensor(path, prefix, shards, name, dtype_name(path, name, dtype), shape, where, crc)


def tensor_shape(field: pb.Field) -> tuple[int, ...]:
    sizes = []
    for part in pb.message(field, 1):
        if part.number == 3 and pb.number(part):
            raise pb.WireError("its shape has an unknown rank")
        if part.number == 2:
            size = next((pb.signed(pb.number(f)) for f in pb.message(part, 2) if f.number == 1), 0)
            if size < 0:
                raise pb.WireError(f"its shape has a size of {size}")
            sizes.append(size)
            if len(sizes) > MAX_DIMS:
                raise pb.WireError(f"its shape has over {MAX_DIMS} axes")
    return tuple(sizes)


def _tensor(
    path: Path, prefix: Path, shards: int, name: str, dtype: str, shape: tuple[int, ...],
    where: tuple[int, int, int], crc: int,
) -> TensorRef:  # fmt: skip
    shard, offset, size = where
    expected = int(np.prod(shape, dtype=object)) * numpy_dtype(dtype).itemsize
    if size != expected:
        raise MalformedModel(
            path,
            f"tensor {name!r} claims {size:,} bytes, but its shape and dtype take {expected:,}",
        )
    if not 0 <= shard < shards:
        raise MalformedModel(path, f"tensor {name!r} is in shard {shard}, but there are {shards}")
    file = _shard_file(path, prefix, shard, shards)
    length = file.stat().st_size
    if offset < 0 or offset + size > length:
        raise MalformedModel(
            path, f"tensor {name!r} lies at bytes {offset:,} to {offset + size:,} of {file.name}, "
            f"which has {length:,}",
        )  # fmt: skip
    return TensorRef(
        name, shape, dtype, stream=lambda: _pieces(path, name, file, offset, size, crc, dtype)
    )


def _shard_file(path: Path, prefix: Path, shard: int, shards: int) -> Path:
    file = prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{shards:05d}")
    folder = prefix.parent.resolve()
    try:
        real = file.resolve(strict=True)
    except OSError as exc:
        raise UnreadableModel(path, f"data shard {file.name} is missing") from exc
    if not real.is_relative_to(folder) or not real.is_file():
        raise MalformedModel(
            path,
            f"data shard {file.name} leads outside the checkpoint's folder (to "
            f"{str(real)[:200]!r}); diffai reads only the model's own files",
        )
    return real


def _pieces(
    path: Path, name: str, file: Path, offset: int, size: int, crc: int, dtype: str
) -> Iterator[np.ndarray]:
    import google_crc32c

    view = numpy_dtype(dtype)
    data = map_bytes(file, offset, size) if size else np.empty(0, np.uint8)
    checksum = google_crc32c.Checksum()
    for start in range(0, size, PIECE_BYTES):
        piece = data[start : start + PIECE_BYTES]
        checksum.update(piece.tobytes())
        yield piece.view(view)
    if table.mask(int.from_bytes(checksum.digest(), "big")) != crc:
        raise MalformedModel(
            path, f"tensor {name!r} fails its CRC32C check, so TensorFlow would refuse to load it"
        )
