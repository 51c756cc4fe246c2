"""--shard I/N slices a run for CI matrix jobs; diffai merge rebuilds exactly the unsplit report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffai.errors import UsageError
from diffai.shard import parse_shard, shard_members

POLICY = "version: 1\nregression_test:\n  max_relative_change: 0.05\n"


@pytest.mark.parametrize("text", ["0/3", "4/3", "1/0", "a/b", "2", "-1/2"])
def test_bad_shard_specs_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="--shard takes I/N"):
        parse_shard(text)


def test_shards_partition_the_tensors_and_balance_the_bytes() -> None:
    sizes = [(f"t{i}", (i * 7919) % 1000 + 1) for i in range(200)]
    parts = [shard_members(sizes, index, 4) for index in range(1, 5)]
    assert set().union(*parts) == {name for name, _ in sizes}
    assert sum(len(part) for part in parts) == len(sizes)
    loads = [sum(size for name, size in sizes if name in part) for part in parts]
    assert max(loads) - min(loads) <= max(size for _, size in sizes)


@pytest.fixture
def checkpoints(tmp_path: Path) -> tuple[Path, Path, Path]:
    torch.manual_seed(1)
    base = {f"layers.{i}.weight": torch.randn(8 * (i + 1), 16) for i in range(6)}
    base |= {"layers.0.bias": torch.zeros(8), "old.weight": torch.ones(3)}
    cand = {name: value + 0.01 * torch.randn_like(value) for name, value in base.items()}
    cand["layers.3.weight"] = torch.randn(32, 16)  # retrained: fails the 5% rule
    cand["layers.5.weight"] = base["layers.5.weight"].half()
    del cand["old.weight"]
    cand["new.weight"] = torch.ones(2, 2)
    torch.save({"epoch": 1, "model": base}, tmp_path / "a.pt")
    torch.save({"epoch": 2, "model": cand}, tmp_path / "b.pt")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return tmp_path / "a.pt", tmp_path / "b.pt", policy


def test_merged_shards_equal_the_unsplit_run(run_cli, checkpoints, tmp_path, validate_report):
    base, cand, policy = checkpoints
    common = ("--policy", policy, "--exclude", "*.bias")
    whole = run_cli(base, cand, *common, "--report", tmp_path / "whole.json")
    parts = [tmp_path / f"part-{i}.json" for i in (1, 2, 3)]
    for index, part in enumerate(parts, start=1):
        assert (
            run_cli(base, cand, *common, "--shard", f"{index}/3", "--report", part, "-q").code == 1
        )
    sizes = [len(json.loads(p.read_text())["tensors"]) for p in parts]
    assert sum(sizes) == 8 and all(sizes)  # 8 base tensors - 1 excluded + 1 added
    merged = run_cli("merge", *reversed(parts), "--policy", policy, "--report", tmp_path / "m.json")
    assert (merged.code, merged.out) == (whole.code, whole.out) == (1, merged.out)
    merged_document = json.loads((tmp_path / "m.json").read_text())
    validate_report(merged_document)
    for part in parts:
        validate_report(json.loads(part.read_text()))
    assert merged_document == json.loads((tmp_path / "whole.json").read_text())
    assert merged_document["verdict"] == "fail"


def test_merge_refuses_incomplete_or_foreign_parts(run_cli, checkpoints, tmp_path) -> None:
    base, cand, _ = checkpoints
    for index in (1, 2):
        run_cli(base, cand, "--shard", f"{index}/2", "--report", tmp_path / f"p{index}.json", "-q")
    run_cli(base, base, "--shard", "2/2", "--report", tmp_path / "other.json", "-q")
    run_cli(base, cand, "--report", tmp_path / "plain.json", "-q")
    cases = {
        (tmp_path / "p1.json",): "merge needs shards 1..2 exactly once each, got [1]",
        (tmp_path / "p1.json", tmp_path / "other.json"): "differs from",
        (tmp_path / "plain.json",): "not a shard report",
        (tmp_path / "missing.json",): "cannot read the shard report",
    }
    for parts, message in cases.items():
        result = run_cli("merge", *parts)
        assert result.code == 2 and message in result.err, result.err
    assert run_cli("merge", tmp_path / "p1.json", tmp_path / "p2.json", "-q").code == 1


def test_a_shard_reads_only_its_own_tensors(checkpoints) -> None:
    import diffai

    base, cand, _ = checkpoints
    whole = diffai.compare(base, cand).document
    first = diffai.compare(base, cand, shard=(1, 2)).document
    second = diffai.compare(base, cand, shard=(2, 2)).document
    names = [t["name"] for t in whole["tensors"]]
    assert sorted(t["name"] for t in first["tensors"] + second["tensors"]) == sorted(names)
    assert first["shard"]["names"] == names
    assert not {t["name"] for t in first["tensors"]} & {t["name"] for t in second["tensors"]}


def test_a_norm_past_the_float_range_in_a_shard_report_is_no_crash(
    run_cli, checkpoints, tmp_path, validate_report
) -> None:
    """A shard report is a file like any other: squaring its norm must not raise."""
    base, cand, _ = checkpoints
    parts = [tmp_path / f"p{index}.json" for index in (1, 2)]
    for index, part in enumerate(parts, start=1):
        run_cli(base, cand, "--shard", f"{index}/2", "--report", part, "-q")
    document = json.loads(parts[0].read_text())
    diff = next(t["diff"] for t in document["tensors"] if t["diff"])
    diff["l2"] = diff["baseline_l2"] = 1e200
    parts[0].write_text(json.dumps(document))
    merged = run_cli("merge", *parts, "--report", tmp_path / "m.json", "-q")
    assert merged.code == 1, merged.err
    validate_report(json.loads((tmp_path / "m.json").read_text()))


def test_an_optimizer_moment_past_the_float_range_in_a_shard_report_is_no_crash(
    run_cli, tmp_path, validate_report
) -> None:
    """The gradient analysis squares Adam's moment norms too (``_from_optimizer_state``)."""
    torch.manual_seed(2)
    leaves = ("exp_avg", "exp_avg_sq")
    base = {f"state.{i}.{leaf}": torch.rand(16) for i in range(4) for leaf in leaves}
    cand = {name: value * 1.5 for name, value in base.items()}
    torch.save(base, tmp_path / "a.pt")
    torch.save(cand, tmp_path / "b.pt")
    parts = [tmp_path / f"p{index}.json" for index in (1, 2)]
    for index, part in enumerate(parts, start=1):
        shard = ("--shard", f"{index}/2", "--report", part, "-q")
        run_cli(tmp_path / "a.pt", tmp_path / "b.pt", *shard)
    document = json.loads(parts[0].read_text())
    moment = next(t for t in document["tensors"] if t["name"].endswith(".exp_avg"))
    moment["diff"]["candidate_l2"] = moment["diff"]["baseline_l2"] = 1e200
    parts[0].write_text(json.dumps(document))
    merged = run_cli("merge", *parts, "--report", tmp_path / "m.json", "-q")
    assert merged.code == 1, merged.err
    document = json.loads((tmp_path / "m.json").read_text())
    validate_report(document)
    assert document["analyses"]["gradient_analysis"]["source"].startswith("optimizer_state")


def _changed(document: dict) -> dict:
    return next(t for t in document["tensors"] if t["status"] == "changed")


#: A shard report edited by hand or cut short, and what the merge must say about it.
MALFORMED = {
    "no diff": (lambda d: _changed(d).pop("diff"), "diff is not present for a changed tensor"),
    "a word for a mean": (
        lambda d: _changed(d)["baseline"].update(mean="x"),
        "baseline.mean is not a number or null",
    ),
    "a negative count": (
        lambda d: _changed(d)["candidate"].update(nan=-1),
        "candidate.nan is not a count",
    ),
    "a bool for a count": (
        lambda d: _changed(d)["diff"].update(changed=True),
        "diff.changed is not a count",
    ),
    "a negative size": (
        lambda d: _changed(d)["baseline"].update(shape=[2, -1]),
        "baseline.shape is not a list of sizes",
    ),
    "no mean": (lambda d: _changed(d)["baseline"].pop("mean"), "baseline.mean is not present"),
    "an unknown status": (lambda d: _changed(d).update(status="exploded"), "status is not one of"),
    "a rename in a shard": (lambda d: _changed(d).update(status="renamed"), "status is not one of"),
    "no name": (lambda d: d["tensors"][0].pop("name"), "tensors[0] is not a tensor record"),
    "names not a list": (lambda d: d["shard"].update(names=5), "shard.names is not a list"),
    "tensors not a list": (lambda d: d.update(tensors={}), "tensors is not a list"),
    "a bad inventory row": (
        lambda d: d["shard"]["inventory"]["baseline"].append(["x", "4", "f32"]),
        "shard.inventory.baseline is not a list of [name, shape, dtype]",
    ),
    "a bad fingerprint": (
        lambda d: d["shard"].update(fingerprints={"x": {"hash": "zz"}}),
        "shard.fingerprints is not as diffai writes it",
    ),
    "an unknown option": (
        lambda d: d["options"].update(bogus=1),
        "options is not made of",
    ),
    "bytes as text": (
        lambda d: d["baseline"].update(bytes="12"),
        "baseline is not an artifact with path, format and bytes",
    ),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_shard_report_is_refused_by_name(run_cli, checkpoints, tmp_path, case) -> None:
    """Not an internal error later: one line naming the file and the value, exit 2."""
    base, cand, _ = checkpoints
    parts = [tmp_path / f"p{index}.json" for index in (1, 2)]
    for index, part in enumerate(parts, start=1):
        run_cli(base, cand, "--shard", f"{index}/2", "--report", part, "-q")
    document = json.loads(parts[0].read_text())
    edit, message = MALFORMED[case]
    edit(document)
    parts[0].write_text(json.dumps(document))
    merged = run_cli("merge", *parts, "--report", tmp_path / "m.json")
    assert merged.code == 2, merged.err
    assert merged.err.startswith(f"diffai: error: {parts[0]}: not a shard report diffai can merge")
    assert message in merged.err and merged.err.count("\n") == 1, merged.err
    assert not (tmp_path / "m.json").exists()
