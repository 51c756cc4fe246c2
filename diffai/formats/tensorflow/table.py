"""The SSTable that a TensorFlow checkpoint's ``.index`` is (LevelDB's table format), strictly.

Layout: data blocks, a metaindex and an index block, then a 48-byte footer (the
two block handles as varints, padding, the magic number). Each block is
followed by a 5-byte trailer: its compression type and the masked CRC32C of the
block and that byte. Inside a block, entries share key prefixes with the entry
before (``shared``, ``non_shared``, ``value_length`` varints), and a restart
array ends it. TensorFlow's bundle writer never compresses its index, so a
snappy block is refused rather than inflated; every handle, length and key is
checked against the file before it is used, every CRC is checked, keys must
strictly increase (a key twice would be read by whichever lookup finds it), and
the number of entries is bounded before anything is built per entry.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from diffai.formats.limits import MAX_TENSORS
from diffai.formats.tensorflow.protobuf import WireError, varint

FOOTER_BYTES = 48
MAGIC = 0xDB4775248B80FB57
TRAILER_BYTES = 5
COMPRESSION = {0: None, 1: "snappy"}
#: An index's entries: the header, the tensors, and nothing else.
MAX_ENTRIES = MAX_TENSORS + 1
#: One index is kilobytes per thousand tensors; 1 GiB is more than any real one.
MAX_INDEX_BYTES = 1 << 30
_U32 = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes | memoryview) -> int:
    """LevelDB's and TensorFlow's masked CRC32C (so a CRC of CRCs is not a CRC)."""
    import google_crc32c  # the tensorflow extra, checked by the reader before any read

    return mask(google_crc32c.value(bytes(data)))


def mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def entries(data: memoryview) -> Iterator[tuple[bytes, memoryview]]:
    """Every (key, value) of the table in key order; ``WireError`` names what is wrong."""
    if len(data) < FOOTER_BYTES:
        raise WireError(f"it is {len(data)} bytes long, shorter than an SSTable footer")
    footer = data[len(data) - FOOTER_BYTES :]
    (magic,) = struct.unpack_from("<Q", footer, FOOTER_BYTES - 8)
    if magic != MAGIC:
        raise WireError("it does not end with the SSTable magic number")
    _meta, position = _handle(footer, 0)
    index, _ = _handle(footer, position)
    count, previous = 0, None
    for _separator, handle in _block_entries(_block(data, index)):
        for key, value in _block_entries(_block(data, _handle(handle, 0)[0])):
            count += 1
            if count > MAX_ENTRIES:
                raise WireError(f"it lists over {MAX_ENTRIES - 1:,} tensors")
            if previous is not None and key <= previous:
                raise WireError(f"its keys are not in strictly increasing order at {key[:100]!r}")
            previous = key
            yield key, value


def _handle(data: memoryview, position: int) -> tuple[tuple[int, int], int]:
    offset, position = varint(data, position)
    size, position = varint(data, position)
    return (offset, size), position


def _block(data: memoryview, handle: tuple[int, int]) -> memoryview:
    offset, size = handle
    end = len(data) - FOOTER_BYTES
    if offset > end or size > end - offset - TRAILER_BYTES or size > MAX_INDEX_BYTES:
        raise WireError(f"a block handle ({offset:,}, {size:,}) points past the table's blocks")
    block = data[offset : offset + size]
    kind = data[offset + size]
    (stored,) = _U32.unpack_from(data, offset + size + 1)
    if masked_crc32c(data[offset : offset + size + 1]) != stored:
        raise WireError(f"the block at {offset:,} fails its CRC32C check")
    if COMPRESSION.get(kind, "unknown") is not None:
        name = COMPRESSION.get(kind, f"compression type {kind}")
        raise WireError(f"the block at {offset:,} is {name}-compressed, which TensorFlow's "
                        "checkpoint index never is")  # fmt: skip
    return block


def _block_entries(block: memoryview) -> Iterator[tuple[bytes, memoryview]]:
    if len(block) < 4:
        raise WireError("a block is too short for its restart count")
    (restarts,) = _U32.unpack_from(block, len(block) - 4)
    if restarts == 0 or restarts > (len(block) - 4) // 4:
        raise WireError(f"a block claims {restarts:,} restart points")
    limit, position, key = len(block) - 4 - 4 * restarts, 0, b""
    while position < limit:
        shared, position = varint(block, position)
        fresh, position = varint(block, position)
        length, position = varint(block, position)
        if shared > len(key) or fresh > limit - position or length > limit - position - fresh:
            raise WireError("a block entry's lengths run past its block")
        key = key[:shared] + bytes(block[position : position + fresh])
        position += fresh
        yield key, block[position : position + length]
        position += length
