"""The TensorFlow fixtures (made by TensorFlow, tests/data/tensorflow/README.md) and the
byte-level edits tests make to them: protobuf fields, and checkpoints whose CRCs still hold.

``set_tensor_bytes`` edits a real checkpoint the way a retrain would: new bytes for one
tensor, its entry's CRC32C and the index block's CRC brought up to date, nothing else
touched, so what diffai reads is still judged against what TensorFlow wrote.
"""

from __future__ import annotations

import struct
from pathlib import Path

import google_crc32c
import numpy as np

from diffai.formats.tensorflow import table
from diffai.formats.tensorflow.bundle import tensor_name

TF_DATA = Path(__file__).resolve().parent / "data" / "tensorflow"


def reference(npz: str) -> dict[str, np.ndarray]:
    """What TensorFlow's own readers returned, by diffai's names (bf16 from its bits)."""
    import ml_dtypes

    values = {}
    with np.load(TF_DATA / npz) as archive:
        for key in archive.files:
            value = archive[key]
            if key.endswith("|bf16"):
                key, value = key.removesuffix("|bf16"), value.view(ml_dtypes.bfloat16)
            name = tensor_name(key.encode()) if "/.ATTRIBUTES/" in key else key.replace("/", ".")
            values[name] = value
    return values


def varint(value: int) -> bytes:
    """Base-128, a negative value as its 64-bit two's complement (as int64 fields are)."""
    out, value = bytearray(), value & ((1 << 64) - 1)
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, payload: bytes | int, wire: int | None = None) -> bytes:
    """One protobuf field: a varint for an int, length-delimited bytes otherwise."""
    if isinstance(payload, int):
        return varint(number << 3 | (wire or 0)) + varint(payload)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def const_node(name: str, dtype: int, dims: list[int], values: bytes) -> bytes:
    """A NodeDef ``Const`` whose ``value`` is a TensorProto: dtype, shape, then ``values``
    (already encoded fields: tensor_content, float_val ...)."""
    shape = b"".join(field(2, field(1, size)) for size in dims)
    tensor = field(1, dtype) + field(2, shape) + values
    attr = field(1, b"value") + field(2, field(8, tensor))
    return field(1, field(1, name.encode()) + field(2, b"Const") + field(5, attr))


def set_tensor_bytes(folder: Path, old: bytes, new: bytes) -> None:
    """Replace ``old`` by ``new`` (same length) in the data shard, and every CRC over them."""
    shard = folder / "variables" / "variables.data-00000-of-00001"
    index = folder / "variables" / "variables.index"
    data = shard.read_bytes()
    assert data.count(old) == 1 and len(old) == len(new)
    shard.write_bytes(data.replace(old, new))
    raw = bytearray(index.read_bytes())
    old_crc, new_crc = (struct.pack("<I", table.mask(google_crc32c.value(b))) for b in (old, new))
    assert raw.count(old_crc) == 1
    raw[raw.index(old_crc) : raw.index(old_crc) + 4] = new_crc
    index.write_bytes(fix_block_crcs(raw))


def fix_block_crcs(raw: bytearray) -> bytes:
    """Every block's trailer CRC recomputed (the data blocks the index block lists, and it)."""
    view = memoryview(bytes(raw))
    footer = view[len(view) - table.FOOTER_BYTES :]
    _meta, position = table._handle(footer, 0)
    index_handle, _ = table._handle(footer, position)
    handles = [index_handle]
    offset, size = index_handle
    for _key, value in table._block_entries(view[offset : offset + size]):
        handles.append(table._handle(value, 0)[0])
    for offset, size in handles:
        crc = table.mask(google_crc32c.value(bytes(raw[offset : offset + size + 1])))
        struct.pack_into("<I", raw, offset + size + 1, crc)
    return bytes(raw)
