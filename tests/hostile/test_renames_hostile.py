"""Renames a hostile file tries to forge: tensors that share a fingerprint or statistics with
a removed one, built so, must never be paired with it; and a flood of them costs no reads.

Every forgery here is a permutation of the removed tensor's values: the same order-free
hash, the same min, max, mean and std, the same zeros. One also puts the removed tensor's
own values at every sampled position, so the near-equal search nominates it too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from diffai.pairing.fingerprint import sample_positions
from tests.hostile.conftest import run_bounded

RNG = np.random.default_rng(15)
ORIGINAL = (RNG.standard_normal((32, 32)) * 0.1).astype(np.float32)


def permuted(values: np.ndarray) -> np.ndarray:
    return RNG.permutation(values.reshape(-1)).reshape(values.shape)


def sample_forged(values: np.ndarray) -> np.ndarray:
    """The values kept at the sampled positions and shuffled everywhere else."""
    flat = values.reshape(-1).copy()
    others = np.setdiff1d(np.arange(flat.size), sample_positions(flat.size))
    flat[others] = RNG.permutation(flat[others])
    return flat.reshape(values.shape)


def crafted(folder: Path) -> dict[Path, dict[str, np.ndarray]]:
    cases = {
        "permuted": {"decoy.weight": permuted(ORIGINAL)},
        "permuted-beside-the-real-one": {"decoy.weight": permuted(ORIGINAL), "moved": ORIGINAL},
        "sample-forged": {"decoy.weight": sample_forged(ORIGINAL)},
        "flood": {f"decoy.{i}.weight": permuted(ORIGINAL) for i in range(50)},
    }
    for name, tensors in cases.items():
        save_file(tensors, folder / f"{name}.safetensors")
    return {folder / f"{name}.safetensors": tensors for name, tensors in cases.items()}


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every crafted candidate against the original, in one bounded child."""
    tmp_path = tmp_path_factory.mktemp("renames")
    baseline = tmp_path / "original.safetensors"
    save_file({"original.weight": ORIGINAL}, baseline)
    hostiles = list(crafted(tmp_path))
    results = run_bounded(hostiles, lambda _, hostile: [str(baseline), str(hostile)])
    assert all(result.code == 1 and result.report_written for result in results), results
    return {
        hostile.stem: json.loads((tmp_path / f"{hostile.name}.report.json").read_text())
        for hostile in hostiles
    }


def test_forged_fingerprints_and_statistics_never_pair(reports: dict[str, Any]) -> None:
    # The permuted decoy is read once (its exact hash); the sample-forged one twice, as the
    # near-equal search nominates it too: both reads must refuse it.
    for name, reads in (("permuted", 1), ("sample-forged", 2)):
        renamed = reports[name]["renamed"]
        assert (renamed["pairs"], renamed["ambiguous"]) == ([], []), name
        assert renamed["rejected"] == reads, name
        assert reports[name]["summary"]["removed"] == 1, name
    beside = reports["permuted-beside-the-real-one"]
    assert [(p["baseline"], p["candidate"], p["match"]) for p in beside["renamed"]["pairs"]] == [
        ("original.weight", "moved", "exact")
    ]
    assert beside["summary"]["added"] == 1  # the decoy stays added


def test_a_flood_of_forgeries_is_ambiguous_without_a_read(reports: dict[str, Any]) -> None:
    flood = reports["flood"]["renamed"]
    assert (flood["pairs"], flood["confirmations"]) == ([], 0)
    assert flood["ambiguous"][0]["baseline"] == ["original.weight"]
    assert len(flood["ambiguous"][0]["candidate"]) == 50
