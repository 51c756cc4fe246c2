"""``torch.save`` zips read where they live, over the loopback range server.

The remote report must be the local one, the server must send little more than
the tensors' bytes, and a crafted zip the local reader refuses must be refused
remotely in the same words.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import torch

from diffai.errors import MalformedModel
from diffai.formats import open_model, open_models
from tests.hostile.conftest import Call
from tests.hostile.test_pytorch_zip_hostile import ZIP_CASES, good_records, zipped
from tests.remote_servers import RangeServer
from tests.test_format_pytorch import StorageRecord, tensor_call, write_archive
from tests.test_remote import _fast_settings, _report, _serve, _without_paths

#: What a remote read fetches besides tensors: the kept head holds the pickle and the small
#: records, the tail miniz's search window and the directory; each storage's local header.
HEAD_AND_TAIL = 256 * 1024 + 69_584


@pytest.fixture
def server() -> Iterator[RangeServer]:
    running = RangeServer()
    yield running
    running.close()


def _state_dict(shift: float) -> dict[str, Any]:
    """Several storages, an offset view sharing one, a transposed (non-contiguous) view, bf16."""
    generator = torch.Generator().manual_seed(3)
    base = torch.randn(700, 600, generator=generator) + shift
    return {
        "encoder.weight": base,
        "encoder.rows": base[5:],
        "decoder.weight": (torch.randn(500, 300, generator=generator) + shift).t(),
        "head.weight": (torch.randn(800, 400, generator=generator) + shift).to(torch.bfloat16),
        "bn.num_batches_tracked": torch.tensor(7),
        "epoch": 3,
    }


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    paths = tmp_path / "base.pt", tmp_path / "cand.pt"
    for path, shift in zip(paths, (0.0, 1e-3), strict=True):
        torch.save(_state_dict(shift), path)
    return paths


def test_a_torch_zip_pair_reports_as_the_local_pair_fetching_about_its_tensors(
    server: RangeServer, pair: tuple[Path, Path], validate_report: Callable[..., None]
) -> None:
    remote = _report(*_serve(server, *pair), _fast_settings())
    validate_report(remote)
    assert _without_paths(remote) == _without_paths(_report(*pair))
    assert remote["baseline"]["metadata"]["torch_format"] == "zip"
    for path in pair:
        tensors = sum(ref.nbytes for ref in open_model(path).tensors.values())
        assert server.bytes_sent(f"/{path.name}") <= 1.02 * tensors + HEAD_AND_TAIL


def test_a_big_endian_archive_reports_as_the_local_one(
    server: RangeServer, tmp_path: Path
) -> None:
    """Big-endian f32 (a transposed and an offset view of one storage) and bf16 pieces are
    swapped as they stream, as the local reader swaps its mapped views."""
    values = np.linspace(-3, 3, 12, dtype=np.float32)
    halves = values.astype(ml_dtypes.bfloat16).view(np.uint16).astype(">u2")
    records = [StorageRecord(kind, key, 12) for kind, key in
               ((torch.FloatStorage, "0"), (torch.BFloat16Storage, "1"))]  # fmt: skip
    checkpoint = {
        "t": tensor_call(records[0], 0, (4, 3), (1, 4)),
        "rows": tensor_call(records[0], 4, (2, 4), (4, 1)),
        "h": tensor_call(records[1], 2, (10,), (1,)),
    }
    storages = {"0": values.astype(">f4").tobytes(), "1": halves.tobytes()}
    local = write_archive(tmp_path / "big.pt", checkpoint, storages, b"big")
    (url,) = _serve(server, local)
    remote = _report(url, url, _fast_settings())
    assert _without_paths(remote) == _without_paths(_report(local, local))


def _remote_and_local(run_cli: Callable[..., Any], server: RangeServer,
                      baseline: Path, hostile: Path) -> tuple[str, str]:  # fmt: skip
    """Each run's error line without the file's name: the problem alone."""
    (url,) = _serve(server, hostile)
    lines = []
    for named in (url, hostile):
        result = run_cli(baseline, named)
        assert result.code == 2 and result.err.count("\n") == 1, result
        lines.append(result.err.strip().removeprefix(f"diffai: error: {named}: "))
    return lines[0], lines[1]


@pytest.mark.parametrize("name", ZIP_CASES)
def test_a_crafted_zip_refused_locally_is_refused_remotely_in_the_same_words(
    server: RangeServer, run_cli: Callable[..., Any], tmp_path: Path, name: str
) -> None:
    build, problem = ZIP_CASES[name]
    hostile = tmp_path / f"{name}.pt"
    hostile.write_bytes(build())
    baseline = tmp_path / "baseline.pt"
    baseline.write_bytes(zipped(good_records()))
    remote, local = _remote_and_local(run_cli, server, baseline, hostile)
    assert problem in local
    assert remote == local


def _legacy(path: Path) -> None:
    torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=False)


def _deflated(path: Path) -> None:
    path.write_bytes(zipped(good_records(), {"data/0": zipfile.ZIP_DEFLATED}))


def _npz(path: Path) -> None:
    with path.open("wb") as handle:
        np.savez(handle, w=np.ones(3))


def _script(path: Path) -> None:
    torch.jit.script(torch.nn.Linear(3, 2)).save(str(path))


@pytest.mark.parametrize(
    ("write", "problem"),
    [
        pytest.param(_legacy, "a legacy (pre-zip) PyTorch file needs a local copy: download it "
                     "and compare the files", id="legacy"),
        pytest.param(_deflated, "zip member 'archive/data/0' is compressed; it needs a local copy: "
                     "download it and compare the files", id="deflated-storage"),
        pytest.param(_npz, "diffai reads only safetensors, GGUF, .npy and uncompressed PyTorch "
                     "zip files (and folders and indexes of safetensors shards) remotely; this one "
                     "needs a local copy", id="npz"),
        pytest.param(_script, "diffai reads only safetensors, GGUF, .npy and uncompressed "
                     "PyTorch zip files", id="torchscript"),
    ],
)  # fmt: skip
def test_what_needs_more_than_ranges_says_it_needs_a_local_copy(
    server: RangeServer, run_cli: Callable[..., Any], tmp_path: Path,
    write: Callable[[Path], None], problem: str,
) -> None:  # fmt: skip
    model = tmp_path / "model.pt"
    write(model)
    (url,) = _serve(server, model)
    result = run_cli(url, url)
    assert result.code == 2
    assert result.err.startswith(f"diffai: error: {url}: {problem}"), result.err


def test_a_pickle_that_reaches_code_is_refused_remotely_and_nothing_runs(
    server: RangeServer, run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    sentinel = tmp_path / "PWNED"
    hostile = tmp_path / "hostile.pt"
    torch.save({"w": torch.ones(3), "x": Call(os.system, f"touch {sentinel}")}, hostile)
    (url,) = _serve(server, hostile)
    result = run_cli(url, url)
    assert result.code == 2 and result.err.count("\n") == 1
    assert result.err.strip().endswith(
        "refused to load pickled global 'posix.system' (not on the allow-list): loading it would "
        "run code; nothing was executed; torch.load(weights_only=True) is tried only on a local "
        "copy"
    ), result.err
    assert not sentinel.exists()


def test_a_remote_torch_zip_is_read_without_torch(
    server: RangeServer, pair: tuple[Path, Path], run_without_torch: Callable[..., Any]
) -> None:
    result = run_without_torch(*_serve(server, *pair), "--output", "json")
    assert result.code in (0, 1), result.err
    assert '"head.weight"' in result.out and '"decoder.weight"' in result.out


def test_a_directory_of_too_many_members_is_refused_before_their_headers_are_fetched(
    server: RangeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each member costs a header request; the cap (lowered here from 200,016) comes first."""
    import diffai.formats.pytorch.remote as remote_pytorch

    monkeypatch.setattr(remote_pytorch, "MAX_MEMBERS", 8)
    path = tmp_path / "many.pt"
    torch.save({f"t{i}": torch.full((4,), float(i)) for i in range(12)}, path)
    (url,) = _serve(server, path)
    with pytest.raises(MalformedModel, match=r"lists 1[0-9] members, over the 8 a checkpoint"):
        open_models(url, url, settings=_fast_settings())
    assert server.requests <= 2  # the head and the tail, no header of a member
