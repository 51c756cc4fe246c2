"""Real PEFT adapters, made by ``peft`` on a small torch model, and their float64 updates."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file


class Stack(torch.nn.Module):
    """An embedding, three blocks of two linears (``layers.N.up/down``), a head."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(12, width)
        self.layers = torch.nn.ModuleList(_Block(width) for _ in range(3))
        self.head = torch.nn.Linear(width, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.emb(tokens)
        for layer in self.layers:
            hidden = layer(hidden)
        return self.head(hidden)


class _Block(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.up = torch.nn.Linear(width, 2 * width)
        self.down = torch.nn.Linear(2 * width, width)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.down(torch.relu(self.up(hidden)))


def save_state(model: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, path)
    return path


def lora_model(base: torch.nn.Module, seed: int = 0, **config: Any) -> Any:
    torch.manual_seed(seed)
    options = {"r": 4, "lora_alpha": 8, "target_modules": ["up", "down", "emb"]}
    return get_peft_model(base, LoraConfig(**{**options, **config}))


def train(peft_model: Any, steps: int, seed: int = 1) -> None:
    """Real Adam steps on a toy task, so both factors move away from their init."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 12, (32,), generator=generator)
    labels = torch.randint(0, 3, (32,), generator=generator)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=2e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(peft_model(tokens), labels).backward()
        optimizer.step()


def deltas(peft_model: Any) -> dict[str, np.ndarray]:
    """Every LoRA layer's ΔW as PEFT computes it, from the factors cast to float64 (exactly)."""
    found = {}
    in_float64 = copy.deepcopy(peft_model).double()
    for name, module in in_float64.base_model.model.named_modules():
        if hasattr(module, "get_delta_weight") and module.active_adapters:
            delta = module.get_delta_weight("default").detach().double().numpy()
            found[f"{name}.weight"] = delta
    return found
