"""Legacy (pre-zip) files torch would fill with uninitialised memory: its values then change
from one load to the next, so no gate can judge what production will load."""

from __future__ import annotations

import io
import pickle
import pickletools
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.hostile.conftest import Refusal, assert_refused


def legacy_bytes() -> bytes:
    buffer = io.BytesIO()
    tensors = {"a": torch.arange(4.0), "b": torch.ones(4)}  # alike: torch checks sizes
    torch.save(tensors, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


def split(data: bytes) -> tuple[bytes, list[str], bytes]:
    """(the four pickles before the keys, the keys, the storages' counts and bytes)."""
    stream = io.BytesIO(data)
    for _ in range(4):  # magic, version, system info, the tensors: read as opcodes, never run
        for _op in pickletools.genops(stream):
            pass
    head = data[: stream.tell()]
    keys = pickle.load(stream)  # a list of strings
    return head, keys, data[stream.tell() :]


def rewritten(path: Path, change: Callable[[list[str], bytes], tuple[list[str], bytes]]) -> Path:
    head, keys, storages = split(legacy_bytes())
    keys, storages = change(keys, storages)
    path.write_bytes(head + pickle.dumps(keys, protocol=2) + storages)
    return path


def test_a_storage_the_key_list_leaves_out_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path
) -> None:
    """Found by the differential fuzzer: a digit changed in the key list ('0', '1' -> '1',
    '1'); torch then read different values of 'a' on every load."""
    hostile = rewritten(tmp_path / "keys.pt", lambda keys, data: ([keys[1], keys[1]], data))
    assert torch.load(hostile, weights_only=True)["a"].shape == (4,)  # torch loads it silently
    assert_refused(refused(hostile), "its list of storage keys does not name each storage once")


@pytest.mark.parametrize("cut", [1, 8, 20])
def test_storage_data_that_ends_early_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path, cut: int
) -> None:
    hostile = rewritten(tmp_path / "short.pt", lambda keys, data: (keys, data[:-cut]))
    assert_refused(refused(hostile), "has 4 elements, but the file does not hold them")


def test_the_untouched_file_reads(run_cli, tmp_path: Path) -> None:
    path = rewritten(tmp_path / "plain.pt", lambda keys, data: (keys, data))
    assert run_cli(path, path).code == 0
