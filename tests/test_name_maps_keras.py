"""``keras-layout``: one Keras model saved as ``.keras`` and as legacy ``.h5`` pairs by name.

Keras saves both in a child process (torch backend), the layers named by Keras itself
(``dense``, ``dense_1`` ...), as most models are; one layer named by hand (``head``)
is named ``dense_2`` in the ``.keras`` paths and ``head`` in the legacy file: the map
leaves it alone rather than guess, and rename detection pairs it by its values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_SAVE = r"""
import sys
import keras
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), keras.layers.Dense(8),
                          keras.layers.BatchNormalization(), keras.layers.Dense(3, name="head")])
model.save(sys.argv[1] + "/model.keras")
model.save(sys.argv[1] + "/legacy.h5")
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("keras-layout")
    environment = {**os.environ, "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", _SAVE, str(folder)], env=environment, check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    return folder


def test_a_keras3_file_pairs_with_its_legacy_h5_by_the_legacy_names(
    run_cli, validate_report, tmp_path, saved
) -> None:
    path = tmp_path / "report.json"
    run_cli(saved / "model.keras", saved / "legacy.h5", "--report", path)
    report = json.loads(path.read_text())
    validate_report(report)
    statuses = {t["name"]: t["status"] for t in report["tensors"]}
    paired = ["dense.kernel", "dense.bias", "dense_1.kernel", "dense_1.bias",
              "batch_normalization.gamma", "batch_normalization.beta",
              "batch_normalization.moving_mean", "batch_normalization.moving_variance"]  # fmt: skip
    assert {name: statuses[name] for name in paired} == dict.fromkeys(paired, "unchanged")
    assert statuses["head.kernel"] == "renamed"  # by content (its zero bias matches no one way)
    (applied,) = report["mapping"]["maps"]
    assert (applied["source"], applied["side"], applied["chosen"]) == (
        "keras-layout",
        "baseline",
        "automatic",
    )
    assert {"name": "dense_1.kernel", "stored_name": "dense_1.0", "transform": None} in (
        applied["tensors"]
    )
    assert not any(t["stored_name"].startswith("dense_2.") for t in applied["tensors"])
