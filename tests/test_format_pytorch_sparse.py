"""Sparse tensors saved by torch compare as the dense tensors they stand for (issue 12).

Every layout torch 2.13 saves (COO coalesced or not, hybrid, CSR, CSC, BSR,
BSC, batched), next to a dense neighbour, read without torch, through torch's
fallback for legacy files, and compared: against itself, against a perturbed
copy (the report's float64 statistics against numpy's on ``to_dense()``),
and against a safetensors file of the dense values.
"""

from __future__ import annotations

import json
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from diffai.comparison import Comparison, compare_models
from diffai.formats import open_model
from diffai.model import CHUNK_ELEMENTS
from tests.test_cli import change_records

warnings.filterwarnings("ignore", message=".*[Ss]parse.*")


def _compare(baseline: Path, candidate: Path) -> Comparison:
    return compare_models(open_model(baseline, "pytorch"), open_model(candidate, "pytorch"))


def _masked(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(shape, generator=generator)
    return (values * (torch.rand(shape, generator=generator) > 0.6)).to(dtype)


def _uncoalesced() -> torch.Tensor:
    """Duplicates in no order, summed by to_dense(): as a model's gradient accumulations are."""
    indices = torch.tensor([[2, 0, 2, 1, 2], [1, 3, 1, 0, 1]])
    values = torch.tensor([1e8, 0.5, 1.0, -0.0, -1e8])
    return torch.sparse_coo_tensor(indices, values, (3, 4))


def _batched(layout: str) -> torch.Tensor:
    """A batch of two matrices with the same number of stored values each."""
    mask = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 1]])
    dense = (torch.arange(24.0) + 1).reshape(2, 3, 4) * mask
    return dense.to_sparse_csr() if layout == "csr" else dense.to_sparse_csc()


def sparse_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    return {
        "coo": _masked((6, 5), seed).to_sparse(),
        "coo_uncoalesced": _uncoalesced(),
        "coo_hybrid": _masked((5, 3), seed + 1).to_sparse(sparse_dim=1),
        "coo_f16": _masked((4, 4), seed + 2, torch.float16).to_sparse(),
        "coo_bf16": _masked((4, 4), seed + 3, torch.bfloat16).to_sparse(),
        "coo_i8": (_masked((4, 4), seed + 4) * 20).to(torch.int8).to_sparse(),
        "coo_bool": (_masked((4, 4), seed + 5) != 0).to_sparse(),
        "coo_c64": (_masked((3, 3), seed + 6) * (1 + 2j)).to_sparse(),
        "csr": _masked((6, 5), seed + 7).to_sparse_csr(),
        "csc": _masked((6, 5), seed + 8).to_sparse_csc(),
        "bsr": _masked((4, 6), seed + 9).to_sparse_bsr((2, 3)),
        "bsc": _masked((4, 6), seed + 10).to_sparse_bsc((2, 3)),
        "csr_hybrid": _masked((3, 4, 2), seed + 11).to_sparse_csr(dense_dim=1),
        "csr_batched": _batched("csr"),
        "csc_batched": _batched("csc"),
        "dense": _masked((3, 3), seed + 12),
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sparse")
    tensors = sparse_tensors()
    perturbed = {name: _perturbed(t) for name, t in tensors.items()}
    paths = {kind: folder / f"{kind}.pt" for kind in ("zip", "legacy", "perturbed")}
    torch.save(tensors, paths["zip"])
    torch.save(tensors, paths["legacy"], _use_new_zipfile_serialization=False)
    torch.save(perturbed, paths["perturbed"])
    paths["dense"] = folder / "dense.safetensors"
    save_file({name: _dense_numpy(t) for name, t in tensors.items()}, paths["dense"])
    return paths


def _perturbed(tensor: torch.Tensor) -> torch.Tensor:
    if not tensor.is_floating_point():
        return tensor
    if tensor.layout == torch.strided:
        return tensor * 1.5 + 0.25
    if tensor.layout == torch.sparse_coo:
        return torch.sparse_coo_tensor(tensor._indices(), tensor._values() * 1.5, tensor.shape)
    return tensor * 1.5  # scaling keeps the compressed layout


def _dense_numpy(tensor: torch.Tensor) -> np.ndarray:
    dense = tensor.to_dense() if tensor.layout != torch.strided else tensor
    if dense.dtype == torch.bfloat16:
        import ml_dtypes

        return dense.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return dense.numpy()


@pytest.mark.parametrize("kind", ["zip", "legacy"])
def test_every_layout_reads_as_to_dense_bit_for_bit(saved: dict[str, Path], kind: str) -> None:
    model = open_model(saved[kind], "pytorch")
    for name, tensor in sparse_tensors().items():
        expected = _dense_numpy(tensor)
        values = model.tensors[name].array()
        assert values.shape == expected.shape and values.dtype == expected.dtype, name
        assert values.tobytes() == expected.tobytes(), name


def test_the_report_gives_layout_nnz_and_the_stored_bytes(
    run_cli, saved: dict[str, Path], validate_report, tmp_path: Path
) -> None:
    assert run_cli(saved["zip"], saved["perturbed"], "--report", tmp_path / "r.json").code == 1
    document = json.loads((tmp_path / "r.json").read_text())
    validate_report(document)
    records = {record["name"]: record for record in document["tensors"]}
    for name, tensor in sparse_tensors().items():
        baseline = records[name]["baseline"]
        if tensor.layout == torch.strided:
            assert "layout" not in baseline and "nnz" not in baseline
            continue
        layout = str(tensor.layout).removeprefix("torch.sparse_")
        assert (baseline["layout"], baseline["nnz"]) == (layout, tensor._nnz()), name
        assert baseline["bytes"] == _stored_bytes(tensor), name


def _stored_bytes(tensor: torch.Tensor) -> int:
    if tensor.layout == torch.sparse_coo:
        parts = [tensor._indices(), tensor._values()]
    elif tensor.layout in (torch.sparse_csr, torch.sparse_bsr):
        parts = [tensor.crow_indices(), tensor.col_indices(), tensor.values()]
    else:
        parts = [tensor.ccol_indices(), tensor.row_indices(), tensor.values()]
    return sum(part.numel() * part.element_size() for part in parts)


def test_the_statistics_are_those_of_the_dense_values(saved: dict[str, Path]) -> None:
    comparison = _compare(saved["zip"], saved["perturbed"])
    perturbed = {name: _perturbed(t) for name, t in sparse_tensors().items()}
    for tensor in comparison.tensors:
        base = _dense_numpy(sparse_tensors()[tensor.name]).astype(np.complex128).real
        cand = _dense_numpy(perturbed[tensor.name]).astype(np.complex128).real
        if np.iscomplexobj(_dense_numpy(sparse_tensors()[tensor.name])):
            continue  # complex statistics are the real reader's, checked in test_stats
        for stats, values in ((tensor.baseline, base), (tensor.candidate, cand)):
            expected = (values.mean(), values.std(), values.min(), values.max())
            measured = (stats.mean, stats.std, stats.min, stats.max)
            np.testing.assert_allclose(measured, expected, rtol=1e-6, atol=1e-12)
            assert stats.zeros == np.count_nonzero(values == 0), tensor.name
        if tensor.diff is not None:
            np.testing.assert_allclose(tensor.diff.l2, np.linalg.norm(cand - base), rtol=1e-6)


@pytest.mark.parametrize("other", ["zip", "legacy", "dense"])
def test_sparse_tensors_equal_themselves_and_their_dense_values(
    run_cli, saved: dict[str, Path], other: str
) -> None:
    result = run_cli(saved["zip"], saved[other], "-o", "json")
    assert result.code == 0, result.out
    assert change_records(result.out) == []


def test_sparse_tensors_compare_without_torch(run_without_torch, saved: dict[str, Path]) -> None:
    for other in ("zip", "dense"):
        result = run_without_torch(saved["zip"], saved[other], "-o", "json")
        assert (result.code, change_records(result.out)) == (0, []), result.err
    result = run_without_torch(saved["zip"], saved["perturbed"], "-o", "json")
    assert result.code == 1, result.err


def test_a_large_sparse_tensor_streams_without_its_dense_values(tmp_path: Path) -> None:
    """8192 x 8192 f32 is 256 MiB dense; reading and measuring it holds chunks only."""
    indices = torch.tensor([[0, 4095, 8191], [8191, 1, 0]])
    huge = torch.sparse_coo_tensor(indices, torch.tensor([1.0, -2.0, 3.0]), (8192, 8192))
    torch.save({"w": huge}, tmp_path / "huge.pt")
    tracemalloc.start()
    try:
        comparison = _compare(tmp_path / "huge.pt", tmp_path / "huge.pt")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    stats = comparison.tensors[0].baseline
    assert (stats.elements, stats.zeros, stats.min, stats.max) == (8192 * 8192, 8192**2 - 3, -2, 3)
    assert peak < 64 << 20, peak
    assert CHUNK_ELEMENTS * 4 * 8 < 64 << 20  # so the bound holds chunks, not 256 MiB


def test_the_text_output_says_how_a_sparse_tensor_is_stored(
    run_cli, saved: dict[str, Path], tmp_path: Path
) -> None:
    result = run_cli(saved["zip"], saved["perturbed"])
    line = next(line for line in result.out.splitlines() if line.startswith("  ~ csr:"))
    assert line.endswith(f", layout=csr->csr, nnz={sparse_tensors()['csr']._nnz()}->"
                         f"{sparse_tensors()['csr']._nnz()}"), line  # fmt: skip
    torch.save({"extra": torch.eye(3).to_sparse()}, tmp_path / "added.pt")
    added = run_cli(saved["dense"], tmp_path / "added.pt").out
    assert "  + extra: shape=[3, 3], dtype=f32, layout=coo, nnz=3" in added.splitlines(), added
