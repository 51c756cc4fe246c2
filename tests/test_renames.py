"""Rename detection on real files: exact, transposed and near-equal pairs, the policy, merge."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import diffai
from diffai.renderers.markdown import code
from tests.conftest import CliResult

LOOK_ALIKES = 5_000  # per side: 10,000 removed and added tensors that must not pair
SHAPE = (16, 16)


def init(rng: np.random.Generator, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """One draw of the initialisation every look-alike shares."""
    return (rng.standard_normal(shape) * 0.1).astype(np.float32)


def renamed_pairs(document: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(p["baseline"], p["candidate"]): p["match"] for p in document["renamed"]["pairs"]}


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in document["tensors"]}


def test_three_renamed_modules_pair_and_10000_look_alikes_do_not(
    write_safetensors: Callable[..., Path], validate_report: Callable[[dict[str, Any]], None]
) -> None:
    rng = np.random.default_rng(15)
    modules = [init(rng) for _ in range(3)]
    tuned = modules[2] + (0.003 * rng.standard_normal(SHAPE)).astype(np.float32)
    baseline = {f"encoder.layer.{i}.dense.weight": w for i, w in enumerate(modules)}
    candidate = {"layers.0.proj.weight": modules[0], "layers.1.proj.weight": modules[1],
                 "layers.2.proj.weight": tuned}  # fmt: skip
    baseline |= {f"old.{i}.weight": init(rng) for i in range(LOOK_ALIKES)}
    candidate |= {f"new.{i}.weight": init(rng) for i in range(LOOK_ALIKES)}
    base = write_safetensors("base.safetensors", baseline)
    cand = write_safetensors("cand.safetensors", candidate)
    started = time.monotonic()
    document = diffai.compare(base, cand).document
    assert time.monotonic() - started < 20
    validate_report(document)
    assert renamed_pairs(document) == {
        ("encoder.layer.0.dense.weight", "layers.0.proj.weight"): "exact",
        ("encoder.layer.1.dense.weight", "layers.1.proj.weight"): "exact",
        ("encoder.layer.2.dense.weight", "layers.2.proj.weight"): "near",
    }
    summary = document["summary"]
    counts = summary["renamed"], summary["removed"], summary["added"]
    assert counts == (3, LOOK_ALIKES, LOOK_ALIKES)
    tensors = by_name(document)
    for exact in ("layers.0.proj.weight", "layers.1.proj.weight"):
        assert tensors[exact]["diff"]["changed"] == 0 and tensors[exact]["diff"]["l2"] == 0
    near = tensors["layers.2.proj.weight"]
    change = tuned.astype(np.float64) - modules[2]
    expected = np.linalg.norm(change) / np.linalg.norm(modules[2].astype(np.float64))
    assert near["diff"]["relative_l2"] == pytest.approx(expected, rel=1e-6)
    assert near["rename"]["from"] == "encoder.layer.2.dense.weight"
    assert 0.99 < near["rename"]["confidence"] < 1
    assert near["baseline"]["mean"] == pytest.approx(float(modules[2].astype(np.float64).mean()))


def save_state_dict(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    torch.save({name: torch.from_numpy(value) for name, value in tensors.items()}, path)
    return path


def test_an_onnx_style_transposed_initializer_pairs_with_the_linear_weight(
    tmp_path: Path,
    write_safetensors: Callable[..., Path],
    run_cli: Callable[..., CliResult],
    validate_report: Callable[[dict[str, Any]], None],
) -> None:
    """An ONNX export keeps ``fc.weight`` (out, in) as ``onnx::MatMul_9`` (in, out)."""
    rng = np.random.default_rng(9)
    weight, square = init(rng, (32, 48)), init(rng, (24, 24))
    base = save_state_dict(tmp_path / "model.pt", {"fc.weight": weight, "proj.weight": square})
    cand = write_safetensors("export.safetensors", {
        "onnx::MatMul_9": np.ascontiguousarray(weight.T),
        "onnx::MatMul_12": np.ascontiguousarray(square.T),
    })  # fmt: skip
    result = run_cli(base, cand, "--report", tmp_path / "report.json")
    document = json.loads((tmp_path / "report.json").read_text())
    validate_report(document)
    assert renamed_pairs(document) == {
        ("fc.weight", "onnx::MatMul_9"): "transposed",
        ("proj.weight", "onnx::MatMul_12"): "transposed",
    }
    assert by_name(document)["onnx::MatMul_9"]["diff"]["max_abs"] == 0
    assert "  ~ fc.weight -> onnx::MatMul_9: renamed (transposed, confidence 1)" in result.out
    assert "renamed=2" in result.out


def test_no_renames_keeps_removed_and_added(
    write_safetensors: Callable[..., Path], run_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    weight = init(np.random.default_rng(1))
    base = write_safetensors("a.safetensors", {"a.weight": weight})
    cand = write_safetensors("b.safetensors", {"b.weight": weight})
    run_cli(base, cand, "--no-renames", "--report", tmp_path / "r.json")
    document = json.loads((tmp_path / "r.json").read_text())
    assert (document["summary"]["removed"], document["summary"]["added"]) == (1, 1)
    assert document["renamed"]["enabled"] is False and document["renamed"]["pairs"] == []


def policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\nregression_test:\n" + text)
    return path


def test_allow_rename_false_fails_the_gate_naming_the_pair(
    write_safetensors: Callable[..., Path], run_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    weight = init(np.random.default_rng(2))
    base = write_safetensors("a.safetensors", {"fc.weight": weight})
    cand = write_safetensors("b.safetensors", {"head.weight": weight})
    strict = run_cli(base, cand, "--policy", policy(tmp_path, "  allow_rename: false\n"))
    assert strict.code == 1
    assert (
        "error regression_test.allow_rename: 1 tensor was renamed: "
        "fc.weight → head.weight (exact)"
    ) in strict.out
    assert run_cli(base, cand, "--policy", policy(tmp_path, "  allow_removed: false\n")).code == 0


def test_a_renamed_pair_is_judged_by_the_drift_rules(
    write_safetensors: Callable[..., Path], run_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    weight = init(rng)
    tuned = weight + (0.01 * rng.standard_normal(SHAPE)).astype(np.float32)
    base = write_safetensors("a.safetensors", {"fc.weight": weight})
    cand = write_safetensors("b.safetensors", {"head.weight": tuned})
    result = run_cli(base, cand, "--policy", policy(tmp_path, "  max_relative_change: 0.01\n"))
    assert result.code == 1
    assert "regression_test.max_relative_change: 1 tensor changed by more than 1%" in result.out
    assert "worst: head.weight" in result.out


def test_identical_look_alikes_are_ambiguous_not_guessed(
    write_safetensors: Callable[..., Path],
) -> None:
    """Two zero-initialised heads renamed at once: either pairing fits, so neither is made."""
    zeros = np.zeros((8, 8), np.float32)
    base = write_safetensors("a.safetensors", {"a.weight": zeros, "b.weight": zeros})
    cand = write_safetensors("b.safetensors", {"x.weight": zeros, "y.weight": zeros})
    document = diffai.compare(base, cand).document
    assert document["renamed"]["pairs"] == []
    (ambiguous,) = document["renamed"]["ambiguous"]
    assert ambiguous == {
        "baseline": ["a.weight", "b.weight"], "candidate": ["x.weight", "y.weight"],
        "match": "exact",
    }  # fmt: skip


def shard_reports(
    run_cli: Callable[..., CliResult], base: Path, cand: Path, folder: Path
) -> list[Path]:
    parts = [folder / f"part-{index}.json" for index in (1, 2)]
    for index, part in enumerate(parts, 1):
        run_cli(base, cand, "--shard", f"{index}/2", "--report", part)
    return parts


def test_merge_pairs_renames_across_shards_and_confirms_them_from_the_files(
    write_safetensors: Callable[..., Path],
    run_cli: Callable[..., CliResult],
    validate_report: Callable[[dict[str, Any]], None],
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(4)
    big, small = init(rng, (64, 64)), init(rng, (8, 16))
    base = write_safetensors("a.safetensors", {"old.weight": big, "kept": small})
    cand = write_safetensors("b.safetensors", {"new.weight": big, "kept": small})
    parts = shard_reports(run_cli, base, cand, tmp_path)
    shard_views = [json.loads(part.read_text())["shard"]["fingerprints"] for part in parts]
    assert sorted(sorted(view) for view in shard_views) == [["new.weight"], ["old.weight"]]
    run_cli("merge", *parts, "--report", tmp_path / "merged.json")
    merged = json.loads((tmp_path / "merged.json").read_text())
    validate_report(merged)
    assert renamed_pairs(merged) == {("old.weight", "new.weight"): "exact"}
    assert merged["summary"]["renamed"] == 1

    cand.unlink()  # a merge job with only the reports: it cannot confirm, so it pairs nothing
    run_cli("merge", *parts, "--report", tmp_path / "unread.json")
    unread = json.loads((tmp_path / "unread.json").read_text())
    validate_report(unread)
    assert unread["renamed"]["pairs"] == []
    assert unread["renamed"]["unconfirmed"] == [
        {"baseline": ["old.weight"], "candidate": ["new.weight"], "match": "exact"}
    ]
    assert (unread["summary"]["removed"], unread["summary"]["added"]) == (1, 1)


def test_merge_confirms_a_rename_of_a_mapped_run_under_the_mapped_names(
    write_safetensors: Callable[..., Path], run_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    """The shards measured the names after the map; reopening the files must map them too."""
    rng = np.random.default_rng(6)
    big, small = init(rng, (64, 64)), init(rng, (8, 16))
    base = write_safetensors("a.safetensors", {"old.weight": big, "kept": small})
    cand = write_safetensors("b.safetensors", {"net.new.weight": big, "net.kept": small})
    names = tmp_path / "names.yaml"
    names.write_text('version: 1\nrules:\n  - pattern: "net\\\\.(.*)"\n    replacement: "\\\\1"\n')
    parts = [tmp_path / f"part-{index}.json" for index in (1, 2)]
    for index, part in enumerate(parts, 1):
        run_cli(base, cand, "--map", names, "--shard", f"{index}/2", "--report", part)
    run_cli("merge", *parts, "--report", tmp_path / "merged.json")
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert renamed_pairs(merged) == {("old.weight", "new.weight"): "exact"}
    assert merged["renamed"]["unconfirmed"] == []


def test_markdown_and_html_show_the_rename(
    write_safetensors: Callable[..., Path], run_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    weight = init(np.random.default_rng(5))
    base = write_safetensors("a.safetensors", {"fc.weight": weight})
    cand = write_safetensors("b.safetensors", {"head.weight": weight})
    run_cli(base, cand, "--markdown", tmp_path / "c.md", "--html", tmp_path / "r.html")
    markdown = (tmp_path / "c.md").read_text()
    assert f"| {code('fc.weight')} → {code('head.weight')} | renamed (exact) |" in markdown
    assert "1 renamed" in markdown
    assert "fc.weight → head.weight" in (tmp_path / "r.html").read_text()


@pytest.mark.parametrize("dtype", ["f64", "f32", "f16", "bf16", "i8", "bool", "c64", "c128"])
def test_the_fingerprint_ignores_order_chunking_and_byte_order(dtype: str) -> None:
    from diffai.dtypes import numpy_dtype
    from diffai.model import TensorRef
    from diffai.pairing.fingerprint import Fingerprinter

    values = (np.random.default_rng(6).standard_normal((40, 30)) * 4).astype(numpy_dtype(dtype))

    def hashed(array: np.ndarray, chunk: int = 1 << 18) -> int:
        ref = TensorRef("t", array.shape, dtype, load=lambda: array)
        printer = Fingerprinter(ref)
        for piece in ref.chunks(chunk):
            printer(piece)
        return printer.result().hash

    swapped = values.astype(values.dtype.newbyteorder(">")) if values.dtype.itemsize > 1 else values
    assert hashed(values) == hashed(values.T) == hashed(values, 70) == hashed(swapped)
    assert hashed(values) != hashed(np.zeros_like(values))
