"""Hostile .npy, .npz and .mat files through the CLI.

tests/test_format_numpy.py refuses object arrays and malformed headers at the
reader; tests/test_format_matlab.py refuses sparse matrices and MATLAB objects.
Here: object arrays whose pickle is live, headers and archives built to burst
memory, and HDF5 files that loop, nest, fan out or reach outside themselves.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.hostile.conftest import (
    TIME_LIMIT,
    Call,
    Refusal,
    assert_refused,
    declare_size,
    run_bounded,
)
from tests.test_format_matlab import V73_HEADER, write_v73

# --- numpy ---------------------------------------------------------------------------------


def live_object_array(sentinel: Path) -> np.ndarray:
    """An object array whose pickle runs ``touch sentinel`` when loaded with allow_pickle."""
    array = np.empty(1, dtype=object)
    array[0] = Call(os.system, f"touch {sentinel}")
    return array


def test_an_object_npy_is_refused_and_its_pickle_never_runs(
    refused: Callable[..., Refusal], tmp_path: Path, sentinel: Path
) -> None:
    hostile = tmp_path / "hostile.npy"
    np.save(hostile, live_object_array(sentinel), allow_pickle=True)
    assert_refused(refused(hostile), "holds an object array (dtype '|O')")
    assert not sentinel.exists()
    np.load(hostile, allow_pickle=True)  # the same file, loaded naively, runs the command
    assert sentinel.exists()


@pytest.mark.parametrize("compress", [False, True], ids=["stored", "compressed"])
def test_an_object_npz_member_is_refused_and_its_pickle_never_runs(
    refused: Callable[..., Refusal], tmp_path: Path, sentinel: Path, compress: bool
) -> None:
    hostile = tmp_path / "hostile.npz"
    save = np.savez_compressed if compress else np.savez
    save(hostile, fine=np.ones(2), evil=live_object_array(sentinel))
    assert_refused(refused(hostile), "member 'evil.npy' holds an object array")
    assert not sentinel.exists()


def npy_with_header_length(version: int, length: int) -> bytes:
    field = struct.pack("<H" if version == 1 else "<I", length)
    return b"\x93NUMPY" + bytes([version, 0]) + field + b"{'descr': '<f4', "


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param(npy_with_header_length(1, 65_535), "65,535 bytes long", id="v1-64k"),
        pytest.param(npy_with_header_length(2, 2**32 - 1), "4,294,967,295 bytes long", id="v2-4GB"),
        pytest.param(b"\x93NUMPY\x02\x00\x10", "it ends before its length", id="v2-cut"),
        pytest.param(b"\x93NUMPY\x03\x00", "npy format version (3, 0) is not supported", id="v3"),
    ],
)  # fmt: skip
def test_a_huge_or_broken_npy_header_is_refused_unread(
    refused: Callable[..., Refusal], tmp_path: Path, content: bytes, problem: str
) -> None:
    hostile = tmp_path / "hostile.npy"
    hostile.write_bytes(content)
    assert_refused(refused(hostile), problem)


def test_an_npz_member_name_with_a_newline_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path
) -> None:
    hostile = tmp_path / "hostile.npz"
    with zipfile.ZipFile(hostile, "w") as archive:
        buffer = io.BytesIO()
        np.save(buffer, np.ones(2, np.float32))
        archive.writestr("w\n::error::forged.npy", buffer.getvalue())
    assert_refused(refused(hostile), "tensor name 'w\\n::error::forged' contains '\\n'")


# --- MATLAB v7.3 (HDF5) -----------------------------------------------------------------------


def v73(path: Path, build: Callable[[h5py.File], None]) -> Path:
    """An HDF5 file with MATLAB's header, its contents made by ``build``."""
    with h5py.File(path, "w", userblock_size=512) as handle:
        build(handle)
    with path.open("r+b") as raw:
        raw.write(V73_HEADER.ljust(116, b" "))
    return path


def classed(item: h5py.HLObject, matlab_class: str) -> h5py.HLObject:
    item.attrs["MATLAB_class"] = np.bytes_(matlab_class.encode())
    return item


def cell_of(parent: h5py.Group, name: str, targets: list[h5py.HLObject]) -> h5py.Dataset:
    cell = classed(
        parent.create_dataset(name, shape=(len(targets), 1), dtype=h5py.ref_dtype), "cell"
    )
    for index, target in enumerate(targets):
        cell[index, 0] = target.ref
    return cell


def self_cell(handle: h5py.File) -> None:
    cell = classed(handle.create_dataset("c", shape=(1, 1), dtype=h5py.ref_dtype), "cell")
    cell[0, 0] = cell.ref


def ref_cycle(handle: h5py.File) -> None:
    refs = handle.create_group("#refs#")
    first = classed(refs.create_dataset("a", shape=(1, 1), dtype=h5py.ref_dtype), "cell")
    cell_of(handle, "c", [first])
    first[0, 0] = cell_of(refs, "b", [first]).ref


def group_loop(handle: h5py.File) -> None:
    group = classed(handle.create_group("s"), "struct")
    group["again"] = group  # a hard link: the struct holds itself


def deep_groups(handle: h5py.File) -> None:
    group = handle
    for _ in range(150):
        group = classed(group.create_group("g"), "struct")


def soft_link(handle: h5py.File) -> None:
    handle["w"] = h5py.SoftLink("/#refs#/w")


def external_link(handle: h5py.File) -> None:
    handle["w"] = h5py.ExternalLink("/etc/passwd", "/w")


def empty_but_huge(handle: h5py.File) -> None:
    sizes = classed(handle.create_dataset("e", data=np.array([2**40, 2**40], np.uint64)), "double")
    sizes.attrs["MATLAB_empty"] = 1


V73_CASES = [
    pytest.param(self_cell, "variable 'c.0' contains itself", id="cell-holds-itself"),
    pytest.param(ref_cycle, "variable 'c.0.0.0' contains itself", id="reference-cycle"),
    pytest.param(group_loop, "variable 's.again' contains itself", id="group-hard-link-loop"),
    pytest.param(deep_groups, "nests deeper than 100 levels", id="150-nested-groups"),
    pytest.param(soft_link, "is an HDF5 link to '/#refs#/w', which diffai does not follow",
                 id="soft-link"),
    pytest.param(external_link, "is an HDF5 link to '/w', which diffai does not follow",
                 id="external-link"),
    pytest.param(empty_but_huge, "marked empty, but its sizes are not a shape", id="empty-huge"),
]  # fmt: skip


@pytest.mark.parametrize(("build", "problem"), V73_CASES)
def test_a_looping_nesting_or_linking_v73_file_is_refused(
    refused: Callable[..., Refusal],
    tmp_path: Path,
    build: Callable[[h5py.File], None],
    problem: str,
) -> None:
    hostile = v73(tmp_path / "hostile.mat", build)
    assert_refused(refused(hostile), problem)


def test_external_storage_is_refused_and_the_outside_file_never_read(
    run_cli, tmp_path: Path
) -> None:
    """HDF5 can keep a dataset's bytes in any file: its values would leak into the PR comment."""
    secret = tmp_path / "secret.env"
    secret.write_bytes(b"GITHUB_TOKEN=ghs_0123456789abcdef0123456789abcdef0123\n")

    def outside(handle: h5py.File) -> None:
        size = secret.stat().st_size
        dataset = handle.create_dataset(
            "w", shape=(size, 1), dtype="u1", external=[(secret, 0, size)]
        )
        classed(dataset, "uint8")

    hostile = v73(tmp_path / "hostile.mat", outside)
    report = tmp_path / "report.json"
    result = run_cli(write_v73(tmp_path / "base.mat", {"w": np.zeros((1, 55), np.uint16)}),
                     hostile, "--report", report, "-o", "json")  # fmt: skip
    refusal = Refusal(hostile, result.code, result.err, report.exists())
    assert_refused(refusal, "keeps its data in another file (HDF5 external storage")
    assert result.out == ""


# Built to exhaust memory or time: read in a child process with both bounded.
def shared_children(handle: h5py.File) -> None:
    """Forty cells, each holding the next one twice: 2**40 paths to the last."""
    refs = handle.create_group("#refs#")
    below = classed(refs.create_dataset("leaf", data=np.ones((1, 1))), "double")
    for level in range(40):
        below = cell_of(refs, f"level{level}", [below, below])
    cell_of(handle, "c", [below])


def many_references(handle: h5py.File) -> None:
    """A compressed cell of 20,000 references to one leaf: a few kilobytes of file (and as
    few for a billion, which the limit on cells refuses alike)."""
    refs = handle.create_group("#refs#")
    leaf = classed(refs.create_dataset("leaf", data=np.ones((1, 1))), "double")
    cell = handle.create_dataset(
        "c", data=np.full((20_000, 1), leaf.ref, dtype=h5py.ref_dtype), compression="gzip"
    )
    classed(cell, "cell")


def inflating_dataset(handle: h5py.File) -> None:
    """12.8 GB of doubles, never written: every chunk is the fill value, the file 2 KB."""
    shape, chunks = (40_000, 40_000), (1000, 1000)
    classed(handle.create_dataset("w", shape, "f8", chunks=chunks, compression="gzip"), "double")


def v5_inflating(path: Path) -> Path:
    """A compressed MAT v5 variable that declares 20000x20000 doubles (3.2 GB)."""
    rows, cols = 20_000, 20_000
    inner = b"".join([
        struct.pack("<II", 6, 8) + struct.pack("<II", 6, 0),  # array flags: double
        struct.pack("<II", 5, 8) + struct.pack("<ii", rows, cols),  # dimensions
        struct.pack("<II", 1, 1) + b"w" + bytes(7),  # name
        struct.pack("<II", 9, rows * cols * 8),  # real part, whose bytes never come
    ])  # fmt: skip
    matrix = struct.pack("<II", 14, len(inner) + rows * cols * 8) + inner
    stream = zlib.compressobj()
    packed = (
        stream.compress(matrix) + stream.compress(bytes(1 << 16)) + stream.flush(zlib.Z_SYNC_FLUSH)
    )
    header = (
        b"MATLAB 5.0 MAT-file, hostile".ljust(116) + bytes(8) + struct.pack("<H", 0x0100) + b"IM"
    )
    path.write_bytes(header + struct.pack("<II", 15, len(packed)) + packed)
    return path


def npz_inflating(path: Path) -> Path:
    """A compressed member whose header and directory promise 2 GiB of doubles."""
    header = io.BytesIO()
    shape = {"descr": "<f8", "fortran_order": False, "shape": (2**28,)}
    np.lib.format.write_array_header_1_0(header, shape)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("w.npy", header.getvalue() + bytes(1 << 16))
    return declare_size(path, "w.npy", len(header.getvalue()) + 2**31)


def subarray_elements(handle: h5py.File) -> None:
    """One element of 2**27 doubles (1 GiB), never written: the file is 2 KB."""
    classed(handle.create_dataset("w", (3, 1), np.dtype(("<f8", (2**27,)))), "double")


def padded_complex(handle: h5py.File) -> None:
    """A (real, imag) compound padded to 1 MiB an element: 1,024 of them are 1 GiB."""
    padded = np.dtype({"names": ["real", "imag"], "formats": ["<f8", "<f8"], "itemsize": 1 << 20})
    classed(handle.create_dataset("w", (2048, 1), padded), "double")


ELEMENT_PROBLEM = "elements of an HDF5 type MATLAB never writes"
BOMB_PROBLEMS = {
    "many-references": "is a cell of 20,000 items, too many",
    "shared-children": "is a struct or cell that another one holds too",
    "inflating-hdf5": "its tensors add up to 12,800,000,000 bytes",
    "inflating-v5": "its variables declare 3,200,000,000 bytes",
    "npz-bomb": "its tensors add up to 2,147,483,648 bytes",
    "subarray-elements": f"variable 'w' stores 1,073,741,824-byte {ELEMENT_PROBLEM}",
    "padded-complex": f"variable 'w' stores 1,048,576-byte {ELEMENT_PROBLEM}",
}


def write_bombs(folder: Path) -> dict[str, Path]:
    return {
        "many-references": v73(folder / "references.mat", many_references),
        "shared-children": v73(folder / "shared.mat", shared_children),
        "inflating-hdf5": v73(folder / "inflating.mat", inflating_dataset),
        "inflating-v5": v5_inflating(folder / "inflating-v5.mat"),
        "npz-bomb": npz_inflating(folder / "bomb.npz"),
        "subarray-elements": v73(folder / "subarray.mat", subarray_elements),
        "padded-complex": v73(folder / "padded.mat", padded_complex),
    }


@pytest.fixture(scope="module")
def bomb_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Refusal]:
    files = write_bombs(tmp_path_factory.mktemp("bombs"))
    return dict(zip(files, run_bounded(list(files.values())), strict=True))


@pytest.mark.parametrize("name", list(BOMB_PROBLEMS))
def test_a_bomb_is_refused_in_bounded_memory_and_time(
    bomb_results: dict[str, Refusal], name: str
) -> None:
    assert_refused(bomb_results[name], BOMB_PROBLEMS[name])


# Large but legitimate: accepted, and measured within the same bounds.
GIB_OF_DOUBLES = 2**27


def npz_deflated_gib(path: Path, fortran: bool = False) -> Path:
    """A 1 GiB member of doubles (a 1.0 every 2**17) deflated to about a megabyte."""
    shape = (GIB_OF_DOUBLES // 2, 2) if fortran else (GIB_OF_DOUBLES,)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": fortran, "shape": shape}
    )
    block = np.zeros(1 << 17, "<f8")
    block[-1] = 1.0
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open("w.npy", "w", force_zip64=True) as member,
    ):
        member.write(header.getvalue())
        for _ in range(GIB_OF_DOUBLES >> 17):
            member.write(block.tobytes())
    return path


@pytest.fixture(scope="module")
def large_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Refusal, Path]]:
    folder = tmp_path_factory.mktemp("large")
    files = {
        "c-order": npz_deflated_gib(folder / "deflated.npz"),
        "fortran-order": npz_deflated_gib(folder / "deflated-fortran.npz", fortran=True),
    }
    results = run_bounded(list(files.values()))
    return {
        name: (result, folder / f"{file.name}.report.json")
        for (name, file), result in zip(files.items(), results, strict=True)
    }


@pytest.mark.parametrize("layout", ["c-order", "fortran-order"])
def test_a_deflated_gib_member_is_measured_in_bounded_memory(
    large_results: dict[str, tuple[Refusal, Path]], layout: str, validate_report
) -> None:
    """1 MB of file, 1 GiB of values: inflating it whole took 2.03 GiB."""
    result, report_path = large_results[layout]
    assert (result.code, result.err) == (1, ""), result
    assert result.seconds < TIME_LIMIT, result
    report = json.loads(report_path.read_text())
    validate_report(report)
    (record,) = [t for t in report["tensors"] if t["name"] == "w"]
    stats = record["candidate"]
    assert (stats["elements"], stats["bytes"], stats["min"]) == (GIB_OF_DOUBLES, 2**30, 0.0)
    assert (stats["max"], stats["zeros"]) == (1.0, GIB_OF_DOUBLES - (GIB_OF_DOUBLES >> 17))


def test_a_member_that_inflates_short_of_its_declared_size_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path
) -> None:
    """Its header promises 2**17 doubles and the directory their size; the data is 8 KiB."""
    path = tmp_path / "short.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (2**17,)}
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("w.npy", header.getvalue() + bytes(8192))
    declare_size(path, "w.npy", len(header.getvalue()) + 2**20)
    assert_refused(refused(path), "it inflates to fewer bytes than its size declares")


# A crash inside scipy: one line, never a dead process.
def v5_unknown_element_type(path: Path) -> Path:
    """A 2x3 double whose real part is tagged with data type 55, which MAT v5 does not have:
    scipy 1.17.1's ``_mio5.read_var_array`` dies of signal 11 on it, after the size checks."""
    values = np.arange(6, dtype="<f8").tobytes()
    inner = b"".join([
        struct.pack("<II", 6, 8) + struct.pack("<II", 6, 0),  # array flags: double
        struct.pack("<II", 5, 8) + struct.pack("<ii", 2, 3),  # dimensions
        struct.pack("<HH", 1, 1) + b"w" + bytes(3),  # name, a small element
        struct.pack("<II", 55, len(values)) + values,  # real part, of no known type
    ])  # fmt: skip
    header = b"MATLAB 5.0 MAT-file, hostile".ljust(116) + bytes(8) + struct.pack("<H", 0x0100)
    path.write_bytes(header + b"IM" + struct.pack("<II", 14, len(inner)) + inner)
    return path


def test_a_crash_in_the_mat_reader_is_one_line(tmp_path: Path) -> None:
    (refusal,) = run_bounded([v5_unknown_element_type(tmp_path / "x.mat")])
    assert_refused(refusal, "the MAT reader crashed on this file (signal 11)")
