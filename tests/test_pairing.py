"""Pairing names across training wrappers: DDP's ``module.``, ``torch.compile``'s
``_orig_mod.``, Lightning's ``model.``, and prefixes the user names."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import save_file

from tests.test_cli import change_records


def network() -> torch.nn.Module:
    torch.manual_seed(0)
    layers = torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2)
    return torch.nn.Sequential(*layers)


@pytest.fixture(scope="module")
def ddp_state() -> dict[str, torch.Tensor]:
    """The state dict of a real DistributedDataParallel wrapper (gloo, one rank, loopback)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        return dict(torch.nn.parallel.DistributedDataParallel(network()).state_dict())
    finally:
        dist.destroy_process_group()


def report_of(run_cli, tmp_path: Path, *argv: object) -> tuple[int, dict]:
    path = tmp_path / "report.json"
    result = run_cli(*argv, "--report", path)
    assert result.code in (0, 1), result.err
    return result.code, json.loads(path.read_text())


def test_a_ddp_checkpoint_pairs_with_its_plain_counterpart(
    run_cli, validate_report, tmp_path, ddp_state
) -> None:
    assert all(name.startswith("module.") for name in ddp_state)  # the wrapper's own keys
    torch.save(ddp_state, tmp_path / "ddp.pt")
    torch.save(network().state_dict(), tmp_path / "plain.pt")
    code, report = report_of(run_cli, tmp_path, tmp_path / "ddp.pt", tmp_path / "plain.pt")
    validate_report(report)
    assert code == 0 and report["summary"]["unchanged"] == len(ddp_state)
    assert report["mapping"]["detected"] == {"baseline": ["module."], "candidate": []}
    assert {t["name"] for t in report["tensors"]} == set(network().state_dict())
    text = run_cli(tmp_path / "ddp.pt", tmp_path / "plain.pt").out
    assert "names: took 'module.' off every baseline tensor name (detected)" in text


@pytest.mark.parametrize(
    ("wrap", "prefixes"),
    [
        pytest.param(torch.compile, ["_orig_mod."], id="compiled"),
        pytest.param(lambda net: torch.compile(torch.nn.DataParallel(net)),
                     ["_orig_mod.", "module."], id="compiled-data-parallel"),
    ],
)  # fmt: skip
def test_nested_wrappers_come_off_in_turn(run_cli, tmp_path, wrap, prefixes) -> None:
    wrapped = wrap(network()).state_dict()
    assert all(name.startswith("".join(prefixes)) for name in wrapped)
    save_file(dict(network().state_dict()), tmp_path / "plain.safetensors")
    torch.save(wrapped, tmp_path / "wrapped.pt")
    code, report = report_of(run_cli, tmp_path, tmp_path / "plain.safetensors",
                             tmp_path / "wrapped.pt")  # fmt: skip
    assert code == 0 and report["mapping"]["detected"]["candidate"] == prefixes


def test_a_prefix_on_only_some_names_is_left_alone(run_cli, tmp_path) -> None:
    """A Hugging Face model: ``model.layers...`` and ``lm_head`` outside it, on both sides."""
    weights = {"model.embed.weight": torch.ones(4, 2), "lm_head.weight": torch.ones(2, 4)}
    save_file(weights, tmp_path / "a.safetensors")
    save_file({**weights, "lm_head.weight": torch.zeros(2, 4)}, tmp_path / "b.safetensors")
    _, report = report_of(run_cli, tmp_path, tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert report["mapping"]["detected"] == {"baseline": [], "candidate": []}
    assert {t["name"] for t in report["tensors"]} == set(weights)


def test_keep_prefixes_pairs_names_as_they_are(run_cli, tmp_path, ddp_state) -> None:
    torch.save(ddp_state, tmp_path / "ddp.pt")
    torch.save(network().state_dict(), tmp_path / "plain.pt")
    argv = (tmp_path / "ddp.pt", tmp_path / "plain.pt", "--keep-prefixes", "-o", "json")
    result = run_cli(*argv, "--no-renames")
    kinds = {next(iter(record)) for record in change_records(result.out)}
    assert result.code == 1 and kinds == {"TensorAdded", "TensorRemoved"}
    # Without --no-renames, content still pairs the weights: the same values, other names.
    assert "TensorRenamed" in {next(iter(record)) for record in change_records(run_cli(*argv).out)}


def test_a_given_prefix_comes_off_both_sides(run_cli, tmp_path) -> None:
    save_file({"encoder.w": torch.ones(3), "head.b": torch.ones(1)}, tmp_path / "a.safetensors")
    save_file({"w": torch.ones(3), "head.b": torch.ones(1)}, tmp_path / "b.safetensors")
    code, report = report_of(run_cli, tmp_path, tmp_path / "a.safetensors",
                             tmp_path / "b.safetensors", "--strip-prefix", "encoder.")  # fmt: skip
    assert code == 0 and report["mapping"]["strip_prefixes"] == ["encoder."]
    assert sorted(t["name"] for t in report["tensors"]) == ["head.b", "w"]


def test_two_names_that_become_one_are_refused(run_cli, tmp_path) -> None:
    save_file({"a.w": torch.ones(3), "w": torch.zeros(3)}, tmp_path / "a.safetensors")
    result = run_cli(tmp_path / "a.safetensors", tmp_path / "a.safetensors", "--strip-prefix", "a.")
    assert result.code == 2
    assert "taking 'a.' off the names makes tensors 'a.w' and 'w' both 'w'" in result.err


def test_shards_merge_with_the_mapping_of_one_run(run_cli, tmp_path, ddp_state) -> None:
    torch.save(ddp_state, tmp_path / "ddp.pt")
    base = network()
    with torch.no_grad():
        base[0].weight.mul_(1.5)
    torch.save(base.state_dict(), tmp_path / "tuned.pt")
    pair = (tmp_path / "ddp.pt", tmp_path / "tuned.pt")
    _, whole = report_of(run_cli, tmp_path, *pair)
    assert_shards_merge_to(whole, run_cli, tmp_path, pair)


def assert_shards_merge_to(whole: dict, run_cli, tmp_path: Path, pair: tuple[Path, Path]) -> None:
    """Two shards of the pair, merged, give the unsplit run's mapping and summary."""
    parts = [tmp_path / f"part-{index}.json" for index in (1, 2)]
    for index, part in enumerate(parts, start=1):
        assert run_cli(*pair, "--shard", f"{index}/2", "--report", part).code in (0, 1)
    merged_path = tmp_path / "merged.json"
    assert run_cli("merge", *parts, "--report", merged_path).code in (0, 1)
    merged = json.loads(merged_path.read_text())
    assert merged["mapping"] == whole["mapping"] and merged["summary"] == whole["summary"]
