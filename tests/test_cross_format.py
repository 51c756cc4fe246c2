"""Across readers: the same weights compare as identical; checkpoints compare scalars too."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from tests.test_cli import change_records

torch.manual_seed(0)
STATE = {
    "embed.weight": torch.randn(50, 16),
    "encoder.0.weight": torch.randn(16, 16),
    "encoder.0.bias": torch.randn(16),
    "head.weight": torch.randn(4, 16).half(),
    "steps": torch.tensor([3, 1, 2], dtype=torch.int64),
}


@pytest.fixture
def same_weights(tmp_path: Path) -> dict[str, Path]:
    arrays = {name: tensor.numpy() for name, tensor in STATE.items()}
    paths = {fmt: tmp_path / f"model.{fmt}" for fmt in ("pt", "safetensors", "npz")}
    torch.save(STATE, paths["pt"])
    save_file(arrays, paths["safetensors"])
    np.savez(paths["npz"], **arrays)
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file(arrays, folder / "model.safetensors")
    paths["folder"] = folder
    return paths


@pytest.mark.parametrize("other", ["safetensors", "npz", "folder"])
def test_same_weights_in_another_format_are_identical(run_cli, same_weights, other) -> None:
    result = run_cli(same_weights["pt"], same_weights[other], "-o", "json")
    assert result.code == 0, result.out
    assert change_records(result.out) == []


def test_a_torch_file_compares_in_a_process_without_torch(run_without_torch, same_weights) -> None:
    result = run_without_torch(same_weights["pt"], same_weights["safetensors"], "-o", "json")
    assert result.code == 0, result.err
    assert change_records(result.out) == []


def test_a_transposed_view_saved_by_torch_equals_its_contiguous_copy(run_cli, tmp_path) -> None:
    weight = torch.randn(8, 5)
    torch.save({"w": weight.t(), "row": weight[2]}, tmp_path / "views.pt")
    save_file({"w": weight.t().contiguous().numpy(), "row": weight[2].numpy()}, tmp_path / "c.st")
    assert run_cli(tmp_path / "views.pt", tmp_path / "c.st").code == 0


def checkpoint(epoch: int, lr: float, loss: float, scale: float) -> dict:
    weights = {"fc.weight": torch.ones(4, 4) * scale, "fc.bias": torch.zeros(4)}
    return {
        "epoch": epoch,
        "model_state_dict": weights,
        "optimizer_state_dict": {
            "state": {0: {"step": torch.tensor(float(epoch)), "exp_avg": torch.ones(4, 4) * lr}},
            "param_groups": [{"lr": lr, "betas": (0.9, 0.999), "params": [0, 1]}],
        },
        "loss": loss,
    }


def test_training_checkpoints_report_scalars_and_the_learning_rate_story(
    run_cli, tmp_path, validate_report
) -> None:
    torch.save(checkpoint(1, 1e-3, 0.9, 1.0), tmp_path / "epoch1.pt")
    torch.save(checkpoint(10, 5e-4, 0.3, 1.1), tmp_path / "epoch10.pt")
    report = tmp_path / "r.json"
    result = run_cli(tmp_path / "epoch1.pt", tmp_path / "epoch10.pt", "--report", report)
    assert result.code == 1
    assert "  ~ epoch: 1->10" in result.out
    assert "  ~ optimizer_state_dict.param_groups.0.lr: 0.001->0.0005" in result.out
    story = (
        "training_progress: epoch 1->10, optimizer_state_dict.param_groups.0.lr 0.001->0.0005 "
        "(-50%), loss 0.9->0.3 (-67%)"
    )
    assert story in result.out.splitlines()
    document = json.loads(report.read_text())
    validate_report(document)
    assert {s["name"]: (s["baseline"], s["candidate"]) for s in document["scalars"]} == {
        "epoch": (1, 10),
        "optimizer_state_dict.param_groups.0.lr": (0.001, 0.0005),
        "loss": (0.9, 0.3),
    }
    by_name = {t["name"]: t for t in document["tensors"]}
    assert by_name["model_state_dict.fc.weight"]["diff"]["relative_l2"] == pytest.approx(0.1)
    assert document["analyses"]["gradient_analysis"]["source"] == "optimizer_state (Adam exp_avg)"


class _RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_calls_os_system_is_refused_and_never_runs(run_cli, tmp_path) -> None:
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.pt"
    with zipfile.ZipFile(hostile, "w") as archive:
        archive.writestr("hostile/data.pkl", pickle.dumps({"w": _RunsACommand(marker)}, protocol=2))
        archive.writestr("hostile/version", "3\n")
    report = tmp_path / "report.json"
    result = run_cli(hostile, hostile, "--report", report)
    assert result.code == 2
    assert result.err.startswith(f"diffai: error: {hostile}: refused to load pickled global ")
    assert "system" in result.err and result.err.count("\n") == 1
    assert not marker.exists() and not report.exists()
    pickle.loads(
        io.BytesIO(pickle.dumps(_RunsACommand(marker))).read()
    )  # the same bytes, unguarded
    assert marker.exists()
