"""PEFT adapters made by ``peft``: adapter vs adapter, base vs adapter, merged vs base + adapter."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("peft")

import torch

from tests.peft_models import Stack, deltas, lora_model, save_state, train


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two checkpoints of one run, a run of another rank with rsLoRA, their merges."""
    folder = tmp_path_factory.mktemp("adapters")
    torch.manual_seed(0)
    base = Stack()
    save_state(base, folder / "base.safetensors")
    first = lora_model(base, modules_to_save=["head"])
    train(first, 3)
    first.save_pretrained(folder / "step3")
    step3 = deltas(first)
    train(first, 4, seed=2)
    first.save_pretrained(folder / "step7")
    step7 = deltas(first)
    merged = first.merge_and_unload()
    save_state(merged, folder / "merged.safetensors")
    return {"folder": folder, "step3": step3, "step7": step7}


def report(run_cli: Callable[..., Any], tmp_path: Path, *argv: Any) -> tuple[Any, dict[str, Any]]:
    path = tmp_path / "report.json"
    result = run_cli(*argv, "--report", path)
    assert result.code in (0, 1), result.err
    return result, json.loads(path.read_text())


def close(value: float, expected: float) -> None:
    assert value == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_adapter_vs_adapter_matches_a_float64_materialisation(
    runs: dict[str, Any], run_cli: Callable[..., Any], tmp_path: Path, validate_report: Any
) -> None:
    folder = runs["folder"]
    result, document = report(run_cli, tmp_path, folder / "step3", folder / "step7")
    validate_report(document)
    section = document["adapter"]
    assert section["mode"] == "adapter_vs_adapter"
    assert section["saved_modules"] == ["head.bias", "head.weight"]
    assert {m["weight"] for m in section["modules"]} == set(runs["step3"])
    for module in section["modules"]:
        old, new = runs["step3"][module["weight"]], runs["step7"][module["weight"]]
        close(module["baseline"]["norm"], np.linalg.norm(old))
        close(module["candidate"]["mean"], new.mean())
        close(module["candidate"]["std"], new.std())
        close(module["inner"], float((old * new).sum()))
        close(
            module["cosine"], float((old * new).sum() / np.linalg.norm(old) / np.linalg.norm(new))
        )
        close(module["relative_l2"], np.linalg.norm(new - old) / np.linalg.norm(old))
    streamed = {t["name"]: t for t in document["tensors"]}
    for name, new in runs["step7"].items():  # the tensors section streams ΔW exactly
        close(streamed[name]["candidate"]["max"], new.max())
        close(streamed[name]["diff"]["max_abs"], np.abs(new - runs["step3"][name]).max())
    assert "adapter: mode=adapter_vs_adapter, modules=7, saved=2" in result.out


def test_adapters_of_different_ranks_compare(
    runs: dict[str, Any], run_cli: Callable[..., Any], tmp_path: Path, validate_report: Any
) -> None:
    folder = runs["folder"]
    torch.manual_seed(0)
    other = lora_model(Stack(), r=2, lora_alpha=4, use_rslora=True, seed=5)
    train(other, 3)
    other.save_pretrained(tmp_path / "rank2")
    _, document = report(run_cli, tmp_path, folder / "step3", tmp_path / "rank2")
    validate_report(document)
    expected = deltas(other)
    for module in document["adapter"]["modules"]:
        assert module["baseline"]["rank"] == 4 and module["candidate"]["rank"] == 2
        close(module["candidate"]["scale"], 4 / np.sqrt(2))
        new, old = expected[module["weight"]], runs["step3"][module["weight"]]
        close(module["l2"], np.linalg.norm(new - old))
    assert document["summary"]["shape_changed"] == 0


def test_base_and_adapter_sizes_every_update(
    runs: dict[str, Any], run_cli: Callable[..., Any], tmp_path: Path, validate_report: Any
) -> None:
    folder = runs["folder"]
    _, document = report(run_cli, tmp_path, folder / "base.safetensors", folder / "step7")
    validate_report(document)
    from safetensors.numpy import load_file

    base = load_file(folder / "base.safetensors")
    tensors = {t["name"]: t for t in document["tensors"]}
    for module in document["adapter"]["modules"]:
        delta = runs["step7"][module["weight"]]
        size = np.linalg.norm(delta) / np.linalg.norm(base[module["weight"]].astype(np.float64))
        close(module["candidate"]["relative_size"], size)
        assert tensors[module["weight"]]["diff"]["relative_l2"] == pytest.approx(size, rel=1e-5)
    depth = {row["block"]: row for row in document["adapter"]["depth"]}
    assert sorted(depth, key=str) == [0, 1, 2, None]
    _, both = report(run_cli, tmp_path, folder / "step3", folder / "step7", "--base",
                     folder / "base.safetensors")  # fmt: skip
    validate_report(both)
    assert all(row["relative_size_baseline"] > 0 for row in both["adapter"]["depth"])


def test_a_merge_that_took_effect_passes(
    runs: dict[str, Any], run_cli: Callable[..., Any], tmp_path: Path, validate_report: Any
) -> None:
    folder = runs["folder"]
    argv = [
        folder / "base.safetensors",
        folder / "merged.safetensors",
        "--adapter",
        folder / "step7",
    ]
    result, document = report(run_cli, tmp_path, *argv, "--verdict")
    validate_report(document)
    merge = document["adapter"]["merge"]
    assert merge == {"checked": 9, "merged": 9, "failed": [], "unverifiable": []}
    assert result.code == 0 and document["verdict"] == "pass"


def test_a_module_left_unmerged_fails_naming_it(
    runs: dict[str, Any], run_cli: Callable[..., Any], tmp_path: Path, validate_report: Any
) -> None:
    from safetensors.numpy import load_file, save_file

    folder = runs["folder"]
    merged = load_file(folder / "merged.safetensors")
    merged["layers.1.up.weight"] = load_file(folder / "base.safetensors")["layers.1.up.weight"]
    save_file(merged, tmp_path / "broken.safetensors")
    argv = [
        folder / "base.safetensors",
        tmp_path / "broken.safetensors",
        "--adapter",
        folder / "step7",
    ]
    outputs = ["--markdown", tmp_path / "comment.md", "--html", tmp_path / "page.html"]
    result, document = report(run_cli, tmp_path, *argv, "--verdict", *outputs)
    validate_report(document)
    assert result.code == 1 and document["verdict"] == "fail"
    comment = (tmp_path / "comment.md").read_text()
    assert "### Adapter" in comment and "| FAIL | <code>layers.<wbr>1.<wbr>up.<wbr>" in comment
    page = (tmp_path / "page.html").read_text()
    assert '"rows":[["FAIL","layers.1.up.weight","not_merged — the merged weight equals' in page
    assert document["adapter"]["merge"]["failed"] == ["layers.1.up.weight"]
    assert (
        "FAIL layers.1.up.weight: not_merged" in result.out
        and "the merge did not take effect" in result.out
    )
    assert (
        "error regression_test.adapter_merge: 1 tensor of the merged model does not hold "
        "BASE + ΔW: layers.1.up.weight" in result.out
    )


def test_fan_in_fan_out_and_patterns_follow_peft(
    run_cli: Callable[..., Any], tmp_path: Path, validate_report: Any
) -> None:
    from transformers.pytorch_utils import Conv1D

    class Gpt2Like(torch.nn.Module):  # Conv1D stores its weight as (in, out)
        def __init__(self) -> None:
            super().__init__()
            self.blocks = torch.nn.ModuleList(Conv1D(6, 4) for _ in range(2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.blocks[1](self.blocks[0](x)[..., :4])

    torch.manual_seed(3)
    base = Gpt2Like()
    save_state(base, tmp_path / "base.safetensors")
    model = lora_model(base, target_modules=["blocks.0", "blocks.1"], fan_in_fan_out=True,
                       rank_pattern={"blocks.1": 3}, alpha_pattern={"blocks.1": 5})  # fmt: skip
    for parameter in model.parameters():  # B starts at zero: give both factors values
        if parameter.requires_grad:
            torch.nn.init.normal_(parameter)
    model.save_pretrained(tmp_path / "adapter")
    expected = deltas(model)
    save_state(model.merge_and_unload(), tmp_path / "merged.safetensors")
    _, document = report(run_cli, tmp_path, tmp_path / "base.safetensors", tmp_path / "adapter")
    validate_report(document)
    for module in document["adapter"]["modules"]:
        close(module["candidate"]["norm"], np.linalg.norm(expected[module["weight"]]))
        assert module["candidate"]["shape"] == [4, 6]
    assert document["adapter"]["modules"][1]["candidate"]["scale"] == pytest.approx(5 / 3)
    argv = [tmp_path / "base.safetensors", tmp_path / "merged.safetensors", "--adapter"]
    _, merged = report(run_cli, tmp_path, *argv, tmp_path / "adapter")
    assert merged["adapter"]["merge"]["merged"] == 2


def test_an_adapter_reads_without_torch(
    runs: dict[str, Any], run_without_torch: Callable[..., Any]
) -> None:
    folder = runs["folder"]
    result = run_without_torch(folder / "step3", folder / "step7")
    assert result.code == 1, result.err
    assert "adapter: mode=adapter_vs_adapter" in result.out


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        pytest.param(["base.safetensors", "step7", "--base", "base.safetensors"], "--base sizes",
                     id="base-with-one-adapter"),
        pytest.param(["step7", "base.safetensors"], "diffai BASE_MODEL ADAPTER_DIR", id="order"),
        pytest.param(["step3", "step7", "--adapter", "step7"], "--adapter takes", id="merge"),
    ],
)  # fmt: skip
def test_adapter_usage_errors(
    runs: dict[str, Any], run_cli: Callable[..., Any], argv: list[str], problem: str
) -> None:
    folder = runs["folder"]
    result = run_cli(*(folder / a if not a.startswith("--") else a for a in argv))
    assert result.code == 2 and problem in result.err and result.err.count("\n") == 1


def test_conv_and_bin_adapters_follow_peft(
    run_cli: Callable[..., Any], tmp_path: Path, validate_report: Any
) -> None:
    """A conv LoRA (B: out x r x 1 x 1, A: r x in x kh x kw), saved as adapter_model.bin."""

    class Convs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 5, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    torch.manual_seed(4)
    base = Convs()
    save_state(base, tmp_path / "base.safetensors")
    model = lora_model(base, target_modules=["conv"], r=2)
    for parameter in model.parameters():
        if parameter.requires_grad:
            torch.nn.init.normal_(parameter)
    model.save_pretrained(tmp_path / "adapter", safe_serialization=False)
    assert (tmp_path / "adapter" / "adapter_model.bin").is_file()
    expected = deltas(model)["conv.weight"]
    save_state(model.merge_and_unload(), tmp_path / "merged.safetensors")
    _, document = report(run_cli, tmp_path, tmp_path / "base.safetensors", tmp_path / "adapter")
    validate_report(document)
    (module,) = document["adapter"]["modules"]
    close(module["candidate"]["norm"], np.linalg.norm(expected))
    close(module["candidate"]["mean"], expected.mean())
    argv = [tmp_path / "base.safetensors", tmp_path / "merged.safetensors", "--adapter"]
    _, merged = report(run_cli, tmp_path, *argv, tmp_path / "adapter")
    assert merged["adapter"]["merge"]["merged"] == 1


def hand_made_adapter(folder: Path, delta_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A rank-1 adapter of one 4 x 6 module ``fc``, scale 2; returns its base weight and ΔW."""
    from safetensors.numpy import save_file

    folder.mkdir()
    config = {"peft_type": "LORA", "r": 1, "lora_alpha": 2, "target_modules": ["fc"]}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    a = np.linspace(-1, 1, 6, dtype=np.float32).reshape(1, 6) * delta_scale
    b = np.linspace(1, 2, 4, dtype=np.float32).reshape(4, 1)
    save_file({"base_model.model.fc.lora_A.weight": a, "base_model.model.fc.lora_B.weight": b},
              folder / "adapter_model.safetensors")  # fmt: skip
    base = np.arange(24, dtype=np.float32).reshape(4, 6) / 10 + 1
    return base, 2 * b.astype(np.float64) @ a.astype(np.float64)


@pytest.mark.parametrize(
    ("scale", "merge", "dtype", "status", "verdict"),
    [
        pytest.param(1.0, 2.0, np.float32, "mismatch", "fail", id="merged-twice"),
        pytest.param(1e-4, 1.0, "bf16", "unverifiable", "warn", id="below-bf16-rounding"),
        pytest.param(1.0, 1.0, "bf16", "merged", "pass", id="bf16-merge"),
    ],
)
def test_merge_statuses(
    run_cli: Callable[..., Any], tmp_path: Path, validate_report: Any, scale: float,
    merge: float, dtype: Any, status: str, verdict: str,
) -> None:  # fmt: skip
    import ml_dtypes
    from safetensors.numpy import save_file

    base, delta = hand_made_adapter(tmp_path / "adapter", scale)
    stored = ml_dtypes.bfloat16 if dtype == "bf16" else dtype
    save_file({"fc.weight": base.astype(stored)}, tmp_path / "base.safetensors")
    merged = (base.astype(np.float64) + merge * delta).astype(stored)
    save_file({"fc.weight": merged}, tmp_path / "merged.safetensors")
    argv = [tmp_path / "base.safetensors", tmp_path / "merged.safetensors", "--adapter"]
    _, document = report(run_cli, tmp_path, *argv, tmp_path / "adapter", "--verdict")
    validate_report(document)
    assert document["adapter"]["modules"][0]["status"] == status
    assert document["verdict"] == verdict


def test_a_merge_below_the_rounding_is_not_called_merged(
    run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    """The passing merge check must not claim what the warning says cannot be shown."""
    import ml_dtypes
    from safetensors.numpy import save_file

    base, delta = hand_made_adapter(tmp_path / "adapter", 1e-4)
    stored = ml_dtypes.bfloat16
    save_file({"fc.weight": base.astype(stored)}, tmp_path / "base.safetensors")
    save_file({"fc.weight": (base + delta).astype(stored)}, tmp_path / "merged.safetensors")
    argv = [tmp_path / "base.safetensors", tmp_path / "merged.safetensors", "--adapter"]
    _, document = report(run_cli, tmp_path, *argv, tmp_path / "adapter", "--verdict")
    checks = {check["rule"]: check for check in document["regression_test"]["checks"]}
    merged = checks["regression_test.adapter_merge"]
    assert merged["status"] == "pass"
    assert merged["message"] == (
        "0 of 1 adapter tensors are merged, 1 unverifiable (an update below the merged dtype's "
        "rounding)"
    )
    warning = checks["regression_test.adapter_merge_verifiable"]
    assert (warning["severity"], warning["status"], warning["tensors"]) == (
        "warning", "fail", ["fc.weight"]
    )
