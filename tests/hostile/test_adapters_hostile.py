"""Hostile PEFT adapter folders: each refused in one line naming the file and key, bounded.

Before diffai read adapters, such a folder was a plain safetensors model whose config
nobody checked; now the config decides ΔW, so every key it reads is checked first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.hostile.conftest import Refusal, assert_refused, run_bounded

CONFIG = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["fc"]}


def adapter(folder: Path, config: Any = None, tensors: dict[str, np.ndarray] | None = None,
            raw: str | None = None) -> Path:  # fmt: skip
    folder.mkdir()
    text = raw if raw is not None else json.dumps({**CONFIG, **(config or {})})
    (folder / "adapter_config.json").write_text(text)
    rank = (config or {}).get("r", 4) if isinstance((config or {}).get("r"), int) else 4
    factors = tensors or {
        "base_model.model.fc.lora_A.weight": np.ones((min(rank, 4), 4), np.float32),
        "base_model.model.fc.lora_B.weight": np.ones((4, min(rank, 4)), np.float32),
    }
    save_file(factors, folder / "adapter_model.safetensors")
    return folder


@pytest.mark.parametrize(
    ("config", "raw", "problem"),
    [
        ({"r": 10**12}, None, "key 'r' must be an integer from 1 to 4096, got 1000000000000"),
        ({"r": "4"}, None, "key 'r' must be an integer from 1 to 4096, got '4'"),
        ({"lora_alpha": None}, None, "key 'lora_alpha' is missing"),
        (None, '{"peft_type": "LORA", "r": 4, "lora_alpha": NaN}', "key 'lora_alpha' must be"),
        (None, '{"peft_type": "LORA", "r": 4, "r": 4000, "lora_alpha": 8}', "repeats the key 'r'"),
        (None, '{"peft_type": "LORA", ', "is not valid JSON"),
        ({"rank_pattern": {"(a+)+$": 2}}, None, "key 'rank_pattern' must be an object whose keys"),
        ({"alpha_pattern": {"fc": 1e300}}, None, "key 'alpha_pattern' must be"),
        ({"use_dora": True}, None, "key 'use_dora': DoRA adapters"),
        ({"peft_type": "IA3"}, None, "key 'peft_type': 'IA3' is not 'LORA'"),
        ({"modules_to_save": "head"}, None, "key 'modules_to_save' must be a list"),
    ],
)
def test_a_bad_config_is_one_line_naming_the_key(
    refused: Callable[..., Refusal], tmp_path: Path, config: Any, raw: str | None, problem: str
) -> None:
    folder = adapter(tmp_path / "adapter", config, raw=raw)
    assert_refused(refused(folder), problem, named=folder / "adapter_config.json")


A, B = "base_model.model.fc.lora_A.weight", "base_model.model.fc.lora_B.weight"


@pytest.mark.parametrize(
    ("tensors", "problem"),
    [
        ({A: np.ones((4, 8)), B: np.ones((16, 3))}, "lora_A has shape [4, 8] and lora_B [16, 3]: "
         "their ranks differ"),
        ({A: np.ones((3, 8)), B: np.ones((16, 3))}, "but the config gives it rank 4"),
        ({A: np.ones((4, 8))}, "module 'fc' has no lora_B tensor"),
        ({"base_model.model.other.lora_A.weight": np.ones((4, 8)),
          "base_model.model.other.lora_B.weight": np.ones((8, 4))},
         "module 'other' has LoRA tensors but the config's target_modules does not name it"),
        ({A: np.ones((4, 8, 1)), B: np.ones((16, 4, 3))}, "not the factors of one update"),
        ({A: np.ones((4, 8)), "base_model.model.fc.lora_magnitude_vector": np.ones(8),
          B: np.ones((8, 4))}, "is a LoRA tensor diffai does not read"),
    ],
)  # fmt: skip
def test_factors_that_do_not_fit_are_one_line(
    refused: Callable[..., Refusal], tmp_path: Path, tensors: dict[str, np.ndarray], problem: str
) -> None:
    typed = {name: value.astype(np.float32) for name, value in tensors.items()}
    folder = adapter(tmp_path / "adapter", tensors=typed)
    assert_refused(refused(folder), problem, named=folder / "adapter_model.safetensors")


def test_tiny_factors_of_a_huge_update_are_refused_in_bounded_memory(tmp_path: Path) -> None:
    """A few hundred KB of rank-1 factors declaring a 70,000 x 70,000 update (39 GB)."""
    folder = adapter(
        tmp_path / "adapter",
        {"r": 1},
        {A: np.ones((1, 70_000), np.float32), B: np.ones((70_000, 1), np.float32)},
    )
    twin = tmp_path / "twin"
    twin.mkdir()
    for file in folder.iterdir():
        (twin / file.name).write_bytes(file.read_bytes())
    (refusal,) = run_bounded([folder], lambda _, hostile: [str(twin), str(hostile)])
    problem = "its update would have shape [70000, 70000], 4,900,000,000 values, over the limit"
    assert_refused(refusal, problem, named=twin / "adapter_model.safetensors")
