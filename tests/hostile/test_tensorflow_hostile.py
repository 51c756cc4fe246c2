"""Hostile TensorFlow files through the CLI: checkpoints cut short, with failing CRCs, lying
offsets, shards that lead outside the folder, and GraphDefs that nest, lie or claim 2**40
elements. Each starts from a real TensorFlow file (tests/data/tensorflow) where one exists.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.hostile.conftest import Refusal, assert_refused, run_bounded
from tests.tensorflow_files import TF_DATA, const_node, field, fix_block_crcs, reference

SHARD = Path("variables") / "variables.data-00000-of-00001"
INDEX = Path("variables") / "variables.index"


def saved_model(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(TF_DATA / "module", folder)
    return folder


def truncate_index(folder: Path) -> None:
    index = folder / INDEX
    index.write_bytes(index.read_bytes()[:-20])


def flip_block_byte(folder: Path) -> None:
    index = folder / INDEX
    raw = bytearray(index.read_bytes())
    raw[3] ^= 0x40  # inside the first data block: its key bytes
    index.write_bytes(bytes(raw))


def flip_data_byte(folder: Path) -> None:
    """One bit of the kernel's bytes (the shard's last bytes are the skipped object graph)."""
    shard = folder / SHARD
    raw = bytearray(shard.read_bytes())
    raw[raw.index(reference("module.npz")["kernel"].tobytes())] ^= 0x01
    shard.write_bytes(bytes(raw))


def cut_shard(folder: Path) -> None:
    shard = folder / SHARD
    shard.write_bytes(shard.read_bytes()[:100])


def shard_outside(folder: Path) -> None:
    outside = folder.parent / "secret.env"
    outside.write_bytes((folder / SHARD).read_bytes())  # the right size: only its place is wrong
    (folder / SHARD).unlink()
    os.symlink(outside, folder / SHARD)


def snappy_block(folder: Path) -> None:
    """The first data block marked snappy-compressed, its CRC made to match."""
    index = folder / INDEX
    raw = bytearray(index.read_bytes())
    offset, size = 0, _first_block_size(bytes(raw))
    raw[offset + size] = 1
    index.write_bytes(fix_block_crcs(raw))


def _first_block_size(raw: bytes) -> int:
    from diffai.formats.tensorflow import table

    view = memoryview(raw)
    footer = view[len(view) - table.FOOTER_BYTES :]
    _meta, position = table._handle(footer, 0)
    (offset, size), _ = table._handle(footer, position)
    first_entry = next(table._block_entries(view[offset : offset + size]))
    return table._handle(first_entry[1], 0)[0][1]


CHECKPOINT_CASES = [
    pytest.param(truncate_index, "variables.index is not a readable checkpoint index: it does "
                 "not end with the SSTable magic number", id="truncated-index"),
    pytest.param(flip_block_byte, "fails its CRC32C check", id="index-crc-mismatch"),
    pytest.param(flip_data_byte, "fails its CRC32C check, so TensorFlow would refuse to load it",
                 id="data-crc-mismatch"),
    pytest.param(cut_shard, "of variables.data-00000-of-00001, which has 100",
                 id="offset-past-shard"),
    pytest.param(shard_outside, "data shard variables.data-00000-of-00001 leads outside the "
                 "checkpoint's folder", id="shard-escapes-folder"),
    pytest.param(snappy_block, "is snappy-compressed, which TensorFlow's checkpoint index never is",
                 id="snappy-block"),
]  # fmt: skip


@pytest.mark.parametrize(("spoil", "problem"), CHECKPOINT_CASES)
def test_a_hostile_saved_model_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path, spoil: Callable[[Path], None], problem: str
) -> None:
    folder = saved_model(tmp_path)
    spoil(folder)
    assert_refused(refused(folder), problem)


def test_the_outside_shard_s_bytes_never_reach_the_output(run_cli, tmp_path: Path) -> None:
    folder = saved_model(tmp_path)
    shard_outside(folder)
    result = run_cli(folder, folder, "-o", "json")
    assert result.code == 2 and result.out == ""


def graph(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "frozen.pb"
    path.write_bytes(data)
    return path


def nested_groups(depth: int) -> bytes:
    """A node whose field 9 opens ``depth`` protobuf groups (wire type 3) inside each other."""
    return field(1, field(1, b"n") + bytes([9 << 3 | 3]) * depth)


def deep_messages(depth: int) -> bytes:
    """Length-delimited messages in messages, in a field TensorFlow's NodeDef lacks."""
    inner = b""
    for _ in range(depth):
        inner = field(1, inner)
    return field(1, field(1, b"n") + field(2, b"Const") + field(5, field(2, inner)))


GRAPH_CASES = [
    pytest.param(nested_groups(100_000), "uses protobuf groups, which TensorFlow never writes",
                 id="deep-groups"),
    pytest.param(field(1, b"\x0a\xff\xff\xff\xff\x0f"), "claims 4,294,967,295 bytes, past the "
                 "end of its message", id="lying-length"),
    pytest.param(const_node("w", 1, [4], field(4, b"\x00" * 12)), "tensor_content is 12 bytes, "
                 "but its shape and dtype take 16", id="content-too-short"),
    pytest.param(const_node("w", 1, [3], field(1, 1) + field(4, bytes(12))),
                 "gives field 1 twice; refused as ambiguous", id="dtype-twice"),
    pytest.param(const_node("w", 1, [1], field(4, bytes(4))) * 2, "two nodes are named 'w'",
                 id="two-nodes-one-name"),
    pytest.param(const_node("w", 1, [-1], b""), "its shape has a size of -1", id="negative-dim"),
    pytest.param(const_node("w", 20, [1], b""), "has TensorFlow dtype 20, which diffai cannot "
                 "compare", id="resource-dtype"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "problem"), GRAPH_CASES)
def test_a_hostile_graph_def_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path, data: bytes, problem: str
) -> None:
    assert_refused(refused(graph(tmp_path, data)), problem)


def test_deep_nesting_is_never_walked(run_cli, tmp_path: Path) -> None:
    """Nesting in fields diffai does not read is skipped, not recursed into (TensorFlow's
    parser would keep it as unknown bytes too): 2,000 levels, 20 times its limit."""
    path = graph(tmp_path, deep_messages(2_000))
    result = run_cli(path, path)
    assert (result.code, result.err) == (0, "")


def test_a_const_claiming_2_to_the_40_elements_is_refused_unbuilt(tmp_path: Path) -> None:
    """One float_val repeated 2**40 times would be 4 TiB: refused by its size, in a child
    limited to 1.5 GiB, before a value is made."""
    hostile = graph(tmp_path, const_node("w", 1, [1 << 40], field(5, struct.pack("<f", 1.0))))
    (refusal,) = run_bounded([hostile])
    assert_refused(refusal, "its tensors add up to 4,398,046,511,104 bytes")
