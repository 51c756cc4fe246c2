"""Torch zips that torch's own zip reader (miniz) reads otherwise than ``zipfile``, or refuses.

Each file here is one the reader before it accepted: some torch refuses (a disk
number, a record it cannot parse), some torch reads with other values (a
directory only miniz reads, a record only it finds). The rule: a file torch
refuses is refused, and one it reads is read as torch reads it.
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from diffai.formats import open_model
from tests.hostile.conftest import Refusal, assert_refused
from tests.hostile.test_pytorch_ambiguity_hostile import EVIL, GOOD, saved

Records = list[tuple[str, bytes]]
#: Offsets in the end record and in a central directory entry.
END_DISK, END_ENTRIES_HERE, END_ENTRIES, END_OFFSET, END_COMMENT = 4, 8, 10, 16, 20
ENTRY_DISK, ENTRY_ATTRIBUTES, ENTRY_OFFSET, ENTRY_SIZE = 34, 38, 42, 24


def zipped(records: Records, methods: dict[str, int] | None = None) -> bytearray:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as opened:
        for name, data in records:
            method = (methods or {}).get(name.rpartition("archive/")[2], zipfile.ZIP_STORED)
            opened.writestr(name, data, compress_type=method)
    return bytearray(buffer.getvalue())


def good_records() -> Records:
    return list(saved(GOOD).items())


def replaced(record: str, data: bytes) -> Records:
    return [(name, data if name == f"archive/{record}" else old) for name, old in good_records()]


def end_of(raw: bytearray) -> int:
    return raw.rindex(b"PK\x05\x06")


def entries(raw: bytes | bytearray, start: int, count: int) -> dict[str, int]:
    """Each entry's name -> its offset in ``raw``, for a directory of ``count`` at ``start``."""
    found, at = {}, start
    for _ in range(count):
        name_size, extra_size, comment_size = struct.unpack_from("<HHH", raw, at + 28)
        found[raw[at + 46 : at + 46 + name_size].decode()] = at
        at += 46 + name_size + extra_size + comment_size
    return found


def directory(raw: bytearray) -> dict[str, int]:
    end = end_of(raw)
    count, _, start = struct.unpack_from("<HII", raw, end + END_ENTRIES)
    return entries(raw, start, count)


def set_entry(raw: bytearray, member: str, field: int, fmt: str, value: int) -> bytearray:
    struct.pack_into(fmt, raw, directory(raw)[f"archive/{member}"] + field, value)
    return raw


def set_end(raw: bytearray, field: int, fmt: str, value: int) -> bytearray:
    struct.pack_into(fmt, raw, end_of(raw) + field, value)
    return raw


def entry_hidden_from_miniz() -> bytearray:
    """``archive/byteorder: big`` last in the directory, but left out of the counts: zipfile
    reads entries up to the directory's size, miniz up to its count."""
    records = [(n, d) for n, d in good_records() if not n.endswith("/byteorder")]
    raw = zipped([*records, ("archive/byteorder", b"big")])
    set_end(raw, END_ENTRIES_HERE, "<H", len(records))
    return set_end(raw, END_ENTRIES, "<H", len(records))


def directory_in_comment() -> bytearray:
    """Two directories: zipfile reads the one before the end record (its offset taken from
    where it is), miniz the one at the offset the end record states, hidden in its comment,
    whose ``archive/data/0`` is other bytes, also in the comment."""
    raw = zipped(good_records())
    end = end_of(raw)
    count, size, start = struct.unpack_from("<HII", raw, end + END_ENTRIES)
    real = bytes(raw[start:end])
    hidden_at = end + 22
    member = entries(raw, start, count)["archive/data/0"]
    local = struct.unpack_from("<I", raw, member + ENTRY_OFFSET)[0]
    evil_local = bytes(raw[local : local + 30 + len("archive/data/0")]) + EVIL
    hidden = bytearray(real)
    struct.pack_into("<I", hidden, member - start + ENTRY_OFFSET, hidden_at + size)
    shifted = bytearray(real)  # zipfile adds (where it found it - where the record says) = -shift
    for at in entries(real, 0, count).values():
        offset = struct.unpack_from("<I", shifted, at + ENTRY_OFFSET)[0]
        struct.pack_into("<I", shifted, at + ENTRY_OFFSET, offset + hidden_at - start)
    record = bytearray(raw[end : end + 22])
    struct.pack_into("<IH", record, END_OFFSET, hidden_at, len(hidden) + len(evil_local))
    return bytearray(raw[:start] + shifted + record + hidden + evil_local)


def numpy_dtype_state(version: int) -> Records:
    """A checkpoint with a numpy scalar whose dtype state says ``version`` (numpy writes 3)."""
    records = dict(saved({**GOOD, "loss": np.float64(0.25)}))
    state = b"K\x03X\x01\x00\x00\x00<"
    assert records["archive/data.pkl"].count(state) == 1
    patched = records["archive/data.pkl"].replace(state, bytes([75, version]) + state[2:])
    return list({**records, "archive/data.pkl": patched}.items())


ZIP_CASES: dict[str, tuple[Callable[[], bytearray], str]] = {
    "end-record-disk": (lambda: set_end(zipped(good_records()), END_DISK, "<H", 1),
                        "torch's zip reader refuses it: unsupported multidisk archive"),
    "entry-disk": (lambda: set_entry(zipped(good_records()), "data/0", ENTRY_DISK, "<H", 2),
                   "unsupported multidisk archive ('archive/data/0' is on disk 2)"),
    "entry-hidden-from-miniz": (entry_hidden_from_miniz,
                                "read different zip directories (6 entries against zipfile's 7)"),
    "directory-in-comment": (directory_in_comment, "'archive/data/0' is not the same entry"),
    "directory-attribute": (
        lambda: set_entry(zipped(good_records()), "data/0", ENTRY_ATTRIBUTES, "<I", 0x10),
        "marked as a directory, which torch reads as uninitialised memory"),
    "bzip2-record": (
        lambda: zipped(good_records(), {".data/serialization_id": zipfile.ZIP_BZIP2}),
        "'archive/.data/serialization_id': torch's zip reader: unsupported method (12)"),
    "deflate-short-of-its-size": (
        lambda: set_entry(zipped(good_records(), {".format_version": zipfile.ZIP_DEFLATED}),
                          ".format_version", ENTRY_SIZE, "<I", 2),
        "does not inflate to exactly 2 bytes"),
    "storage-alignment-not-a-number": (lambda: zipped(replaced(".storage_alignment", b"x4")),
                                       "holds b'x4', not the integer torch.load parses"),
    "data-version-first": (lambda: zipped([*good_records(), ("archive/.data/version", b"99")]),
                           "'archive/.data/version' is not a torch.save format version"),
    "folder-past-511-bytes": (
        lambda: zipped([(n.replace("archive/", "f" * 520 + "/"), d) for n, d in good_records()]),
        "is 529 bytes long, over the 511 torch's zip reader lists"),
    "non-ascii-name": (lambda: zipped([*good_records(), ("archive/donn\u00e9es", b"x")]),
                       "zip member name 'archive/donn\u00e9es' is not ASCII"),
    "numpy-dtype-version-5": (lambda: zipped(numpy_dtype_state(5)),
                              "unexpected numpy dtype state (5, '<', None"),
}  # fmt: skip


@pytest.mark.parametrize("name", ZIP_CASES)
def test_a_zip_torch_refuses_or_reads_otherwise_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path, name: str
) -> None:
    build, problem = ZIP_CASES[name]
    hostile = tmp_path / f"{name}.pt"
    hostile.write_bytes(build())
    assert_refused(refused(hostile), problem)


def torch_values(path: Path) -> dict[str, bytes]:
    loaded = torch.load(path, weights_only=True)
    return {name: tensor.numpy().tobytes() for name, tensor in loaded.items()}


def test_a_record_torch_finds_in_another_case_is_read_as_torch_reads_it(tmp_path: Path) -> None:
    """miniz folds ASCII case: ``archive/BYTEORDER: big`` is the byte order to torch, which
    swaps the values; the reader before took it for no record, and read them little-endian."""
    records = [(n.replace("byteorder", "BYTEORDER"), b"big" if n.endswith("byteorder") else d)
               for n, d in good_records()]  # fmt: skip
    hostile = tmp_path / "upper-case-byteorder.pt"
    hostile.write_bytes(zipped(records))
    tensors = open_model(hostile).tensors
    ours = {name: ref.array().astype("<f4").tobytes() for name, ref in tensors.items()}
    assert ours == torch_values(hostile) != {"w": GOOD["w"].numpy().tobytes()}


def test_the_crafted_files_are_what_they_claim(tmp_path: Path) -> None:
    """The two directories of directory-in-comment hold other values to torch than to zipfile,
    and dtype version 3 is read by both (so version 5 is refused for its version alone)."""
    hostile = tmp_path / "directory-in-comment.pt"
    hostile.write_bytes(directory_in_comment())
    with zipfile.ZipFile(hostile) as opened:
        assert opened.read("archive/data/0") == GOOD["w"].numpy().tobytes()
    assert torch_values(hostile) == {"w": EVIL}
    plain = tmp_path / "numpy-dtype-version-3.pt"
    plain.write_bytes(zipped(numpy_dtype_state(3)))
    assert open_model(plain).scalars["loss"] == 0.25
    numpy = [np.dtype, np._core.multiarray.scalar, type(np.dtype("f8"))]
    with torch.serialization.safe_globals(numpy), pytest.raises(Exception, match="version 5"):
        torch.load(io.BytesIO(zipped(numpy_dtype_state(5))), weights_only=True)
