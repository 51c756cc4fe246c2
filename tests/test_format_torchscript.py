"""TorchScript archives read as ``torch.jit.load(path).state_dict()`` sees them, without torch.

The modules are saved here with ``torch.jit.save``, scripted and traced: nested
submodules, buffers (a non-persistent one and a ``None`` one among them), a
parameter shared by two submodules, a plain tensor attribute (not in a
``state_dict``), a ``Sequential``, and a tensor the traced code holds as a
constant. Each compares with itself, with a perturbed copy (the report's
statistics against float64 ones computed here) and with a safetensors file of
its ``state_dict()``; the real ``silero_vad.jit`` against one of its own.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from torch import nn

import diffai
from tests.real_models import REAL
from tests.test_cli import change_records

SILERO = REAL / "silero_vad.jit"
#: torch 2.13 deprecates TorchScript; the archives it writes are what this reader is for.
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:torch.tensor results are registered as constants"),
]


class Block(nn.Module):
    def __init__(self, shared: nn.Parameter) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)
        self.shared = shared
        self.register_buffer("running", torch.arange(3.0))
        self.register_buffer("scratch", torch.ones(3), persistent=False)
        self.register_buffer("absent", None)
        self.plain = torch.full((3,), 7.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = torch.tensor([1.0, 2.0, 3.0])  # a constant of the traced code
        return self.linear(x) * self.shared + self.running + self.plain + offset


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        shared = nn.Parameter(torch.randn(3))
        self.first = Block(shared)
        self.second = Block(shared)
        self.norm = nn.BatchNorm1d(3)
        self.head = nn.Sequential(nn.Linear(3, 2), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.second(self.first(x))))


def save_jit(net: nn.Module, how: str, path: Path) -> Path:
    net.eval()
    if how == "scripted":
        compiled = torch.jit.script(net)
    else:
        compiled = torch.jit.trace(net, torch.randn(4, 3), check_trace=False)
    torch.jit.save(compiled, path)
    return path


def state_dict_of(path: Path) -> dict[str, np.ndarray]:
    """The reference: torch's own loader, on files this test made."""
    return {name: t.detach().numpy() for name, t in torch.jit.load(path).state_dict().items()}


def save_state_dict(path: Path, jit: Path) -> Path:
    save_file({name: np.array(a, order="C") for name, a in state_dict_of(jit).items()}, path)
    return path


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``<how>`` and ``<how>-perturbed`` for both ways, plus each one's state dict."""
    folder = tmp_path_factory.mktemp("jit")
    torch.manual_seed(0)
    net = Net()
    net.norm.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3]))
    paths = {}
    for how in ("scripted", "traced"):
        paths[how] = save_jit(net, how, folder / f"{how}.jit")
        paths[f"{how}.safetensors"] = save_state_dict(folder / f"{how}.safetensors", paths[how])
    with torch.no_grad():
        net.first.linear.weight.add_(0.01 * torch.randn(3, 3))
        net.first.shared.mul_(1.5)
    for how in ("scripted", "traced"):
        paths[f"{how}-perturbed"] = save_jit(net, how, folder / f"{how}-perturbed.jit")
    return paths


HOW = ["scripted", "traced"]


@pytest.mark.parametrize("how", HOW)
def test_names_and_values_are_those_of_the_loaded_state_dict(archives, how) -> None:
    model = diffai.open_model(archives[how])
    reference = state_dict_of(archives[how])
    assert model.format == "torchscript"
    assert list(model.tensors) == list(reference)
    assert {"first.shared", "second.shared", "first.scratch", "head.0.weight"} <= set(reference)
    assert not {"first.plain", "first.absent"} & set(reference)
    for name, expected in reference.items():
        assert model.tensors[name].array().tobytes() == expected.tobytes(), name


def test_the_traced_archive_holds_a_constant_tensor_that_is_not_read(archives) -> None:
    names = zipfile.ZipFile(archives["traced"]).namelist()
    assert any("/constants/" in name for name in names)
    assert "offset" not in str(list(diffai.open_model(archives["traced"]).tensors))


@pytest.mark.parametrize("how", HOW)
def test_an_archive_compared_with_itself_is_unchanged(run_cli, archives, how) -> None:
    result = run_cli(archives[how], archives[how], "-o", "json")
    assert result.code == 0, result.err
    assert change_records(result.out) == []


@pytest.mark.parametrize("how", HOW)
def test_an_archive_equals_the_safetensors_of_its_state_dict(run_cli, archives, how) -> None:
    result = run_cli(archives[how], archives[f"{how}.safetensors"], "-o", "json")
    assert result.code == 0, result.err
    assert change_records(result.out) == []


@pytest.mark.parametrize("how", HOW)
def test_a_perturbed_copy_has_the_exact_float64_statistics(
    run_cli, archives, how, tmp_path, validate_report
) -> None:
    report_path = tmp_path / "report.json"
    result = run_cli(archives[how], archives[f"{how}-perturbed"], "--report", report_path)
    assert result.code == 1, result.err
    report = json.loads(report_path.read_text())
    validate_report(report)
    records = {record["name"]: record for record in report["tensors"]}
    base, cand = state_dict_of(archives[how]), state_dict_of(archives[f"{how}-perturbed"])
    changed = {name for name, record in records.items() if record["status"] == "changed"}
    assert changed == {"first.linear.weight", "first.shared", "second.shared"}
    for name in changed:
        assert_exact_statistics(records[name], base[name], cand[name])


def assert_exact_statistics(record: dict, base: np.ndarray, cand: np.ndarray) -> None:
    b, c = base.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
    for side, values in (("baseline", b), ("candidate", c)):
        expected = {"mean": values.mean(), "std": values.std(), "min": values.min()}
        for key, value in expected.items():
            assert record[side][key] == pytest.approx(value, rel=1e-6, abs=1e-12), (side, key)
    delta = c - b
    l2 = np.sqrt(np.sum(delta * delta))
    diff = record["diff"]
    assert diff["max_abs"] == pytest.approx(np.abs(delta).max(), rel=1e-6)
    assert diff["l2"] == pytest.approx(l2, rel=1e-6)
    assert diff["relative_l2"] == pytest.approx(l2 / np.sqrt(np.sum(b * b)), rel=1e-6)
    cosine = np.sum(b * c) / np.sqrt(np.sum(b * b) * np.sum(c * c))
    assert diff["cosine"] == pytest.approx(cosine, rel=1e-6)


@pytest.mark.parametrize("how", HOW)
def test_archives_compare_in_a_process_without_torch(run_without_torch, archives, how) -> None:
    same = run_without_torch(archives[how], archives[f"{how}.safetensors"], "-o", "json")
    assert same.code == 0, same.err
    assert change_records(same.out) == []
    perturbed = run_without_torch(archives[how], archives[f"{how}-perturbed"])
    assert perturbed.code == 1, perturbed.err


# --- the real silero_vad.jit --------------------------------------------------------------


@pytest.fixture(scope="module")
def silero_state_dict(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_state_dict(tmp_path_factory.mktemp("silero") / "silero.safetensors", SILERO)


def test_silero_reads_as_its_30_tensor_state_dict_in_two_submodules() -> None:
    model = diffai.open_model(SILERO)
    assert len(model.tensors) == 30
    assert {name.partition(".")[0] for name in model.tensors} == {"_model", "_model_8k"}


def test_silero_equals_the_safetensors_of_its_state_dict(run_cli, silero_state_dict) -> None:
    result = run_cli(SILERO, silero_state_dict, "-o", "json")
    assert result.code == 0, result.err
    assert change_records(result.out) == []


def test_silero_compares_without_torch(run_without_torch, silero_state_dict) -> None:
    result = run_without_torch(SILERO, silero_state_dict, "-o", "json")
    assert result.code == 0, result.err
    assert change_records(result.out) == []


def test_format_can_be_forced_and_the_checkpoint_reader_refuses_the_archive(run_cli) -> None:
    assert run_cli(SILERO, SILERO, "--format", "torchscript").code == 0
    refused = run_cli(SILERO, SILERO, "--format", "pytorch")
    assert refused.code == 2
    assert "'__torch__.vad.model.vad_annotator.VADRNNJITMerge'" in refused.err


def test_detection_is_by_content_whatever_the_name(run_cli, tmp_path, silero_state_dict) -> None:
    renamed = tmp_path / "silero.pt"
    renamed.write_bytes(SILERO.read_bytes())
    assert diffai.open_model(renamed).format == "torchscript"
    assert run_cli(renamed, silero_state_dict).code == 0


def test_a_plain_checkpoint_is_not_taken_for_torchscript(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(2)}, tmp_path / "plain.pt")
    assert diffai.open_model(tmp_path / "plain.pt").format == "pytorch"
