"""Build the benchmark models: a BERT-like checkpoint, its candidates and two training checkpoints.

    python bench/make_models.py [--out bench/out] [--size-mb 90]

The baseline is a sequence classifier shaped like a real Hugging Face
checkpoint (``bert.encoder.layer.3.attention.self.query.weight`` ...), built from
real ``torch.nn`` modules so its ``.pt`` pickle is what ``model.state_dict()``
really writes. At the default 90 MB it has the shape of all-MiniLM-L6
(hidden 384, 6 layers, a 30,522-token vocabulary). Everything is seeded, so
the files are identical from run to run.

Written to ``--out``:

- ``base.safetensors``, ``base.pt``, ``base.npz``: the same weights in three formats;
- ``finetuned.safetensors`` and ``finetuned.pt``: every float tensor moved by a
  relative L2 of ``update_scale(name)``, from 2e-4 (embeddings) through 1e-3..1e-2
  (bottom to top layer) to 5e-2 (the classifier);
- ``f16.safetensors``, ``bf16.safetensors``: every float tensor re-typed;
- ``pruned.safetensors``: the smallest half (by magnitude) of every linear weight
  zeroed, and the top encoder layer removed;
- ``permuted.safetensors``: the feed-forward neurons of the bottom and top layers
  permuted (rows of ``intermediate.dense``, columns of ``output.dense``), which keeps
  each tensor's mean, std, min and max and even the network's function;
- ``checkpoint_epoch1.pt``, ``checkpoint_epoch2.pt``: a small model after one and
  two epochs of Adam, as ``{"epoch", "model_state_dict", "optimizer_state_dict", "loss"}``.
"""

from __future__ import annotations

import argparse
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

SEED = 20261126
DEFAULT_OUT = Path(__file__).parent / "out"
DEFAULT_SIZE_MB = 90.0
VOCAB, POSITIONS, TOKEN_TYPES, LABELS = 30522, 512, 2, 2
HIDDEN_SIZES = (256, 384, 512, 768, 1024, 1280, 1600, 2048)
MAX_LAYERS = 12
PRUNE_FRACTION = 0.5
BYTES_PER_PARAMETER = 4
TRAIN_STEPS_PER_EPOCH = 5

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Config:
    hidden: int
    layers: int
    vocab: int = VOCAB

    @property
    def intermediate(self) -> int:
        return 4 * self.hidden

    @property
    def parameters(self) -> int:
        return _fixed_parameters(self.hidden, self.vocab) + self.layers * _layer_parameters(
            self.hidden
        )


#: The model the two training checkpoints hold: about 1.5 M parameters.
SMALL = Config(hidden=128, layers=2, vocab=8000)


def _fixed_parameters(hidden: int, vocab: int) -> int:
    """Embeddings (with their LayerNorm), pooler and classifier."""
    embeddings = (vocab + POSITIONS + TOKEN_TYPES) * hidden + 2 * hidden
    return embeddings + hidden * hidden + hidden + hidden * LABELS + LABELS


def _layer_parameters(hidden: int) -> int:
    """Attention (4 linear), two LayerNorms, feed-forward (h -> 4h -> h)."""
    return 12 * hidden * hidden + 13 * hidden


def config_for(size_mb: float) -> Config:
    """The narrowest model whose f32 weights are ``size_mb`` in at most ``MAX_LAYERS`` layers.

    Past the widest hidden size, layers are added beyond ``MAX_LAYERS``.
    """
    target = size_mb * 1e6 / BYTES_PER_PARAMETER
    for hidden in HIDDEN_SIZES:
        layers = round((target - _fixed_parameters(hidden, VOCAB)) / _layer_parameters(hidden))
        if layers <= MAX_LAYERS:
            break
    return Config(hidden, max(1, layers))


def build_model(config: Config) -> nn.Module:
    """A BERT sequence classifier as plain modules, so ``state_dict()`` names match Hugging Face."""
    model = nn.Module()
    model.bert = nn.Module()
    model.bert.embeddings = _embeddings(config)
    model.bert.encoder = nn.Module()
    model.bert.encoder.layer = nn.ModuleList(_encoder_layer(config) for _ in range(config.layers))
    model.bert.pooler = nn.Module()
    model.bert.pooler.dense = nn.Linear(config.hidden, config.hidden)
    model.classifier = nn.Linear(config.hidden, LABELS)
    _init_pretrained(model)
    return model


def _embeddings(config: Config) -> nn.Module:
    embeddings = nn.Module()
    embeddings.word_embeddings = nn.Embedding(config.vocab, config.hidden)
    embeddings.position_embeddings = nn.Embedding(POSITIONS, config.hidden)
    embeddings.token_type_embeddings = nn.Embedding(TOKEN_TYPES, config.hidden)
    embeddings.LayerNorm = nn.LayerNorm(config.hidden)
    # An integer buffer, as older BERT checkpoints carry: re-typing must leave it alone.
    embeddings.register_buffer("position_ids", torch.arange(POSITIONS).unsqueeze(0))
    return embeddings


def _encoder_layer(config: Config) -> nn.Module:
    hidden = config.hidden
    layer = nn.Module()
    layer.attention = nn.Module()
    layer.attention.self = nn.Module()
    for projection in ("query", "key", "value"):
        setattr(layer.attention.self, projection, nn.Linear(hidden, hidden))
    layer.attention.output = _dense_and_norm(hidden, hidden)
    layer.intermediate = nn.Module()
    layer.intermediate.dense = nn.Linear(hidden, config.intermediate)
    layer.output = _dense_and_norm(config.intermediate, hidden)
    return layer


def _dense_and_norm(inputs: int, outputs: int) -> nn.Module:
    block = nn.Module()
    block.dense = nn.Linear(inputs, outputs)
    block.LayerNorm = nn.LayerNorm(outputs)
    return block


@torch.no_grad()
def _init_pretrained(model: nn.Module) -> None:
    """BERT's N(0, 0.02) weights; biases and LayerNorms spread as trained ones are, not 0 and 1."""
    for name, parameter in model.named_parameters():
        if name.endswith("LayerNorm.weight"):
            parameter.normal_(1.0, 0.05)
        elif name.endswith(".bias"):
            parameter.normal_(0.0, 0.01)
        else:
            parameter.normal_(0.0, 0.02)


def update_scale(name: str, layers: int) -> float:
    """Relative L2 size of the simulated fine-tuning update of tensor ``name``."""
    if name.startswith("classifier."):
        return 5e-2
    if name.startswith("bert.pooler."):
        return 2e-2
    match = re.search(r"\.layer\.(\d+)\.", name)
    if match:
        depth = int(match[1]) / max(1, layers - 1)
        return 1e-3 * 10**depth
    return 2e-4


def finetuned(state: State, layers: int) -> State:
    generator = torch.Generator().manual_seed(SEED + 1)
    return {
        name: _moved(tensor, update_scale(name, layers), generator)
        if tensor.is_floating_point()
        else tensor
        for name, tensor in state.items()
    }


def _moved(tensor: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """``tensor`` plus noise whose RMS is ``scale`` times the tensor's RMS."""
    rms = tensor.double().square().mean().sqrt().item()
    noise = torch.randn(tensor.shape, generator=generator)
    return tensor + noise * (scale * rms)


def retyped(state: State, dtype: torch.dtype) -> State:
    return {
        name: tensor.to(dtype) if tensor.is_floating_point() else tensor
        for name, tensor in state.items()
    }


def pruned(state: State, layers: int) -> State:
    """Magnitude pruning of the linear weights, then the top encoder layer dropped."""
    dropped = f"bert.encoder.layer.{layers - 1}."
    return {
        name: _magnitude_pruned(tensor) if _is_linear_weight(name, tensor) else tensor
        for name, tensor in state.items()
        if not name.startswith(dropped)
    }


def _is_linear_weight(name: str, tensor: torch.Tensor) -> bool:
    return tensor.ndim == 2 and name.endswith(".weight") and ".embeddings." not in name


def _magnitude_pruned(tensor: torch.Tensor) -> torch.Tensor:
    magnitude = tensor.abs()
    threshold = magnitude.flatten().kthvalue(int(tensor.numel() * PRUNE_FRACTION)).values
    return torch.where(magnitude > threshold, tensor, torch.zeros_like(tensor))


def permuted_layers(layers: int) -> list[int]:
    return sorted({0, layers - 1})


def permuted(state: State, layers: int) -> State:
    """Feed-forward neurons reordered: every value kept, most positions changed."""
    generator = torch.Generator().manual_seed(SEED + 2)
    result = dict(state)
    for index in permuted_layers(layers):
        prefix = f"bert.encoder.layer.{index}."
        up = state[prefix + "intermediate.dense.weight"]
        order = torch.randperm(up.shape[0], generator=generator)
        result[prefix + "intermediate.dense.weight"] = up[order].contiguous()
        result[prefix + "intermediate.dense.bias"] = state[prefix + "intermediate.dense.bias"][
            order
        ]
        down = state[prefix + "output.dense.weight"]
        result[prefix + "output.dense.weight"] = down[:, order].contiguous()
    return result


def save_safetensors(state: State, path: Path) -> Path:
    save_file(state, str(path), metadata={"format": "pt"})
    return path


def save_torch(model: nn.Module, state: State, path: Path) -> Path:
    """Through ``load_state_dict``, so the pickle is a real ``state_dict()`` with ``_metadata``."""
    model.load_state_dict(state)
    torch.save(model.state_dict(), path)
    return path


def save_quantized(model: nn.Module, state: State, path: Path) -> Path:
    """Dynamic post-training quantization of every ``nn.Linear`` to qint8, as deployed on CPU:
    the state dict holds each layer's ``_packed_params._packed_params`` (weight, bias)."""
    model.load_state_dict(state)
    with warnings.catch_warnings():  # torch's deprecation notes on torch.ao.quantization
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, torch.qint8)
        torch.save(quantized.state_dict(), path)
    return path


def save_npz(state: State, path: Path) -> Path:
    np.savez(path, **{name: tensor.numpy() for name, tensor in state.items()})
    return path


def write_candidates(out: Path, config: Config) -> list[Path]:
    model = build_model(config)
    base = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    tuned = finetuned(base, config.layers)
    return [
        save_safetensors(base, out / "base.safetensors"),
        save_torch(model, base, out / "base.pt"),
        save_npz(base, out / "base.npz"),
        save_safetensors(tuned, out / "finetuned.safetensors"),
        save_torch(model, tuned, out / "finetuned.pt"),
        save_safetensors(retyped(base, torch.float16), out / "f16.safetensors"),
        save_safetensors(retyped(base, torch.bfloat16), out / "bf16.safetensors"),
        save_safetensors(pruned(base, config.layers), out / "pruned.safetensors"),
        save_safetensors(permuted(base, config.layers), out / "permuted.safetensors"),
        save_quantized(model, base, out / "qint8.pt"),
    ]


def write_checkpoints(out: Path) -> list[Path]:
    """Two epochs of real Adam steps on a quadratic loss, saved the way training loops save."""
    model = build_model(SMALL)
    targets = [p.detach() + 0.01 * torch.randn_like(p) for p in model.parameters()]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.5)
    written = []
    for epoch in (1, 2):
        loss = _train_epoch(model, targets, optimizer)
        scheduler.step()
        checkpoint = {
            "epoch": epoch,
            "model_state_dict": model.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "loss": loss,
        }
        path = out / f"checkpoint_epoch{epoch}.pt"
        torch.save(checkpoint, path)
        written.append(path)
    return written


def _train_epoch(
    model: nn.Module, targets: list[torch.Tensor], optimizer: torch.optim.Optimizer
) -> float:
    loss = torch.zeros(())
    for _ in range(TRAIN_STEPS_PER_EPOCH):
        optimizer.zero_grad()
        loss = sum(((p - t) ** 2).mean() for p, t in zip(model.parameters(), targets, strict=True))
        loss.backward()
        optimizer.step()
    return loss.item()


def build(out: Path, size_mb: float, echo: Callable[[str], None] = print) -> Config:
    """Write every benchmark model to ``out``; return the baseline's configuration."""
    torch.manual_seed(SEED)
    out.mkdir(parents=True, exist_ok=True)
    config = config_for(size_mb)
    size_mb = config.parameters * BYTES_PER_PARAMETER / 1e6
    echo(
        f"baseline: hidden={config.hidden}, layers={config.layers}, vocab={config.vocab}, "
        f"{config.parameters:,} parameters ({size_mb:.1f} MB f32)"
    )
    for path in write_candidates(out, config) + write_checkpoints(out):
        echo(f"  {path}  {path.stat().st_size / 1e6:6.1f} MB")
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the models")
    parser.add_argument(
        "--size-mb",
        type=float,
        default=DEFAULT_SIZE_MB,
        help=f"f32 size of the baseline in MB (default: {DEFAULT_SIZE_MB:g})",
    )
    args = parser.parse_args()
    build(args.out, args.size_mb)


if __name__ == "__main__":
    main()
