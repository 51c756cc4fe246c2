"""A training checkpoint's plain contents read without torch, as data (issue 12).

A Lightning-like checkpoint saved by torch 2.13: hyper_parameters in an
``AttributeDict`` (under the module Lightning pickles it from, made here
without Lightning), ``np.random.get_state()``, ``random.getstate()``, an
``argparse.Namespace``, paths, datetimes, a device, a dtype, a Size, a deque
and a Counter. Read against ``torch.load(weights_only=False)`` on this trusted
file, compared against itself, a perturbed copy and safetensors, without torch.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import pathlib
import random
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from diffai.formats import open_model
from diffai.formats.flatten import flatten_checkpoint
from diffai.text import MAX_SCALAR_CHARS
from tests.test_cli import change_records

LIGHTNING = "lightning.fabric.utilities.data"


class AttributeDict(dict):
    """Lightning's, as ``lightning.fabric.utilities.data`` defines it."""

    def __getattr__(self, key: str) -> Any:
        return self[key]

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


@pytest.fixture(scope="module", autouse=True)
def lightning_module() -> Iterator[None]:
    """Pickle finds the class under Lightning's module name, as a real checkpoint names it."""
    names = [".".join(LIGHTNING.split(".")[:n]) for n in range(1, 5)]
    saved = {name: sys.modules.get(name) for name in names}
    for name in names:
        sys.modules[name] = types.ModuleType(name)
    AttributeDict.__module__ = LIGHTNING
    sys.modules[LIGHTNING].AttributeDict = AttributeDict  # type: ignore[attr-defined]
    yield
    for name, module in saved.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module


def checkpoint(seed: int, scale: float = 1.0) -> dict[str, Any]:
    np.random.seed(seed)
    random.seed(seed)
    generator = torch.Generator().manual_seed(0)
    args = argparse.Namespace(lr=0.1 * scale, data=pathlib.PurePosixPath("/data/train"))
    return {
        "epoch": 3,
        "state_dict": {"fc.weight": torch.randn(4, 3, generator=generator) * scale},
        "hyper_parameters": AttributeDict(hidden=16, args=args),
        "numpy_rng_state": np.random.get_state(),
        "python_rng_state": random.getstate(),
        "class_weights": np.array([0.5, 2.0], dtype=np.float64) * scale,
        "logdir": pathlib.PosixPath("/runs/7"),
        "windows_logdir": pathlib.PureWindowsPath("C:/runs/7"),
        "saved_at": datetime.datetime(2026, 12, 1, 9, 30, 5, 123, tzinfo=datetime.UTC),
        "started": datetime.date(2026, 11, 30),
        "took": datetime.timedelta(hours=3, microseconds=5),
        "device": torch.device("cuda", 1),
        "dtype": torch.bfloat16,
        "input_size": torch.Size([1, 3, 224, 224]),
        "recent_losses": collections.deque([0.9, 0.7, 0.5, 0.4], maxlen=3),
        "label_counts": collections.Counter({"cat": 3, "dog": 5}),
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, lightning_module: None) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("harmless")
    paths = {"base": folder / "base.ckpt", "other": folder / "other.ckpt"}
    torch.save(checkpoint(1), paths["base"])
    torch.save(checkpoint(2, scale=1.5), paths["other"])
    tensors = {name: ref.array() for name, ref in open_model(paths["base"]).tensors.items()}
    paths["safetensors"] = folder / "weights.safetensors"
    save_file({name: np.ascontiguousarray(array) for name, array in tensors.items()},
              paths["safetensors"])  # fmt: skip
    return paths


#: How diffai reads each harmless value that torch.load(weights_only=False) gives back.
_AS_DATA: list[tuple[type | tuple[type, ...], Any]] = [
    ((argparse.Namespace,), vars),
    ((collections.Counter,), dict),
    ((collections.deque,), list),
    ((pathlib.PurePath,), str),
    ((datetime.datetime, datetime.date), lambda when: when.isoformat()),
    ((torch.device,), str),
    ((torch.Size,), tuple),
]


def _as_data(obj: Any) -> Any:
    for types_, convert in _AS_DATA:
        if isinstance(obj, types_):
            return _as_data(convert(obj))
    if isinstance(obj, dict):
        return {key: _as_data(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_as_data(value) for value in obj)
    return obj


def test_it_reads_what_an_unrestricted_torch_load_gives_on_this_trusted_file(saved) -> None:
    trusted = torch.load(saved["base"], weights_only=False)  # written by this test just now
    is_tensor = lambda obj: isinstance(obj, (torch.Tensor, np.ndarray))  # noqa: E731
    tensors, scalars = flatten_checkpoint(_as_data(trusted), is_tensor)
    model = open_model(saved["base"])
    assert model.scalars == scalars
    assert set(model.tensors) == set(tensors)
    for name, expected in tensors.items():
        values = np.asarray(expected)
        assert model.tensors[name].array().tobytes() == values.tobytes(), name


def test_the_plain_values_read_as_expected(saved) -> None:
    model = open_model(saved["base"])
    assert model.scalars["hyper_parameters.args.data"] == "/data/train"
    assert model.scalars["saved_at"] == "2026-12-01T09:30:05.000123+00:00"
    assert (model.scalars["device"], model.scalars["dtype"]) == ("cuda:1", "torch.bfloat16")
    assert model.scalars["recent_losses"] == [0.7, 0.5, 0.4]
    assert model.tensors["numpy_rng_state.1"].dtype == "u32"


def test_it_compares_unchanged_with_itself_and_its_tensors_in_safetensors(run_cli, saved) -> None:
    assert change_records(run_cli(saved["base"], saved["base"], "-o", "json").out) == []
    result = run_cli(saved["base"], saved["safetensors"], "-o", "json")
    assert [r for r in change_records(result.out) if "TensorChanged" in r] == []


def test_a_changed_checkpoint_reports_roles_values_and_short_lines(
    run_cli, saved, validate_report, tmp_path: Path
) -> None:
    report = tmp_path / "r.json"
    result = run_cli(saved["base"], saved["other"], "--report", report)
    document = json.loads(report.read_text())
    validate_report(document)
    roles = {record["name"]: record["role"] for record in document["tensors"]}
    assert roles["numpy_rng_state.1"] == "rng_state"
    weights = {r["name"]: r for r in document["tensors"]}["class_weights"]
    assert (weights["candidate"]["mean"], weights["candidate"]["max"]) == (1.875, 3.0)
    scalars = {s["name"]: s for s in document["scalars"]}
    assert len(scalars["python_rng_state.1"]["baseline"]) == 625  # the report keeps it whole
    line = next(line for line in result.out.splitlines() if "python_rng_state.1" in line)
    assert len(line) < 3 * MAX_SCALAR_CHARS and "more]" in line, line


def test_it_compares_in_a_process_without_torch(run_without_torch, saved) -> None:
    result = run_without_torch(saved["base"], saved["base"], "-o", "json")
    assert (result.code, change_records(result.out)) == (0, []), result.err
    result = run_without_torch(saved["base"], saved["other"])
    assert result.code == 1 and "hyper_parameters.args.lr" in result.out, result.err
