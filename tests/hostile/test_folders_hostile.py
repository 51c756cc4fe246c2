"""Hostile model folders and indexes through the CLI.

tests/test_format_sharded.py checks the reader's messages for shards outside
the folder, missing shards and ambiguous folders. Here each goes through
``diffai``, with symlink loops, FIFOs and unreadable shards added; the cases
that would block a reader for ever run in a child process with a time limit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.hostile.conftest import Refusal, assert_refused, run_bounded

INDEX = "model.safetensors.index.json"
SHARD = "model-00001-of-00001.safetensors"


def indexed_folder(folder: Path, shard_name: str = SHARD) -> Path:
    """A folder whose index maps tensor ``w`` to ``shard_name``; the shard itself is not made."""
    folder.mkdir(exist_ok=True)
    (folder / INDEX).write_text(json.dumps({"weight_map": {"w": shard_name}}))
    return folder


def write_shard(path: Path) -> Path:
    save_file({"w": np.arange(4, dtype=np.float32)}, path)
    return path


@pytest.mark.parametrize(
    "shard_name",
    ["../../etc/passwd", "/etc/passwd", "..\\..\\etc\\passwd", "C:secrets.safetensors"],
)
def test_an_index_pointing_outside_its_folder_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path, shard_name: str
) -> None:
    folder = indexed_folder(tmp_path / "model", shard_name)
    problem = f"shard {shard_name!r} (for tensor 'w') points outside the index's folder"
    assert_refused(refused(folder), problem, named=folder / INDEX)


def make_loop(shard: Path) -> None:
    shard.symlink_to(shard.name)


def make_folder(shard: Path) -> None:
    shard.mkdir()


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        pytest.param(lambda shard: None, "does not exist", id="missing"),
        pytest.param(make_loop, "cannot be opened: Too many levels of symbolic links",
                     id="symlink-loop"),
        pytest.param(make_folder, "is not a regular file", id="a-folder-named-like-a-shard"),
    ],
)  # fmt: skip
def test_a_shard_that_cannot_be_read_is_named(
    refused: Callable[..., Refusal],
    tmp_path: Path,
    make: Callable[[Path], None],
    problem: str,
) -> None:
    folder = indexed_folder(tmp_path / "model")
    make(folder / SHARD)
    problem = f"shard {SHARD!r} (for tensor 'w') {problem}"
    assert_refused(refused(folder), problem, named=folder / INDEX)


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="root reads a chmod 000 file; the FIFO, folder and loop cases above fail for root too",
)
def test_a_shard_without_read_permission_is_named(
    refused: Callable[..., Refusal], tmp_path: Path
) -> None:
    folder = indexed_folder(tmp_path / "model")
    write_shard(folder / SHARD).chmod(0)
    assert_refused(refused(folder), "Permission denied", named=folder / SHARD)


def test_the_model_itself_a_symlink_loop_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path
) -> None:
    loop = tmp_path / "loop.safetensors"
    loop.symlink_to(loop.name)
    assert_refused(refused(loop), "cannot open: Too many levels of symbolic links")


@pytest.mark.parametrize(
    "contents",
    [[], ["README.md", "config.json"], ["model.safetensors/"]],
    ids=["empty", "no-weights", "model-file-is-a-folder"],
)
def test_a_folder_with_no_model_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path, contents: list[str]
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    for name in contents:
        if name.endswith("/"):
            (folder / name).mkdir()
        else:
            (folder / name).write_text("{}")
    assert_refused(refused(folder), "found no weight file")


def test_a_symlinked_shard_is_read_where_it_points(run_cli, tmp_path: Path) -> None:
    """Hugging Face's cache links snapshot files to blobs elsewhere, so links are followed;
    every reader then parses only the file it was given (see docs/security.md)."""
    (tmp_path / "blobs").mkdir()
    blob = write_shard(tmp_path / "blobs" / "0123abcd")
    folder = indexed_folder(tmp_path / "snapshot")
    (folder / SHARD).symlink_to(blob)
    assert run_cli(folder, write_shard(tmp_path / "plain.safetensors")).code == 0


def test_fifos_and_devices_are_never_opened(tmp_path: Path) -> None:
    """Opening a FIFO blocks until someone writes: a reader must look before it opens."""
    fifo = tmp_path / "weights.safetensors"
    os.mkfifo(fifo)
    via_index = indexed_folder(tmp_path / "model")
    os.mkfifo(via_index / SHARD)
    to_device = indexed_folder(tmp_path / "device")
    (to_device / SHARD).symlink_to("/dev/zero")
    cases = {
        fifo: (fifo, "not a regular file or a folder"),
        via_index: (via_index / INDEX, "is not a regular file"),
        to_device: (to_device / INDEX, "is not a regular file"),
    }
    for refusal in run_bounded(list(cases)):
        named, problem = cases[refusal.hostile]
        assert_refused(refusal, problem, named=named)


def empty_shards(folder: Path, count: int, shards: int = 2) -> Path:
    """An index of ``count`` zero-size tensors spread over ``shards`` safetensors files."""
    folder.mkdir()
    weight_map = {}
    for shard in range(shards):
        names = [f"s{shard}.t{index}" for index in range(count // shards)]
        header = {name: {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for name in names}
        encoded = json.dumps(header).encode()
        file = f"model-{shard}.safetensors"
        (folder / file).write_bytes(len(encoded).to_bytes(8, "little") + encoded)
        weight_map.update(dict.fromkeys(names, file))
    (folder / INDEX).write_text(json.dumps({"weight_map": weight_map}))
    return folder


def test_an_index_of_60000_tensors_is_read_in_linear_time(tmp_path: Path) -> None:
    """A set rebuilt per tensor made 40,000 take up to 79 s, and 60,000 never finish."""
    (result,) = run_bounded([empty_shards(tmp_path / "moe", 60_000)])
    assert (result.code, result.err, result.report_written) == (1, "", True), result


def test_an_index_over_the_tensor_limit_is_refused_before_any_shard_is_read(
    refused: Callable[..., Refusal], tmp_path: Path
) -> None:
    folder = tmp_path / "huge"
    folder.mkdir()
    weight_map = {f"t{index}": "missing.safetensors" for index in range(200_001)}
    (folder / INDEX).write_text(json.dumps({"weight_map": weight_map}))
    assert_refused(
        refused(folder),
        "weight_map lists 200,001 tensors, over the limit of 200,000",
        folder / INDEX,
    )
