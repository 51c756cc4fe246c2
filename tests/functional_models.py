"""Small runnable ONNX models for the functional comparison, exported with ``torch.onnx.export``.

A CNN classifier and a tiny transformer encoder, each with a seeded baseline and
the candidates a gate must judge: the same weights, a gentle fine-tune, one layer
scrambled, an f16 copy (weights stored as FLOAT16, cast back to f32 in the
graph, as an f16 conversion keeping f32 inputs writes it), and a changed input.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

CLASSES = 10
VOCAB = 50


class Cnn(nn.Module):
    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.classifier = nn.Linear(16, CLASSES)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(image))


class Encoder(nn.Module):
    """Token ids -> per-token logits: an embedding, one transformer layer, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 32)
        self.layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.head = nn.Linear(32, VOCAB)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(self.embed(ids)))


def cnn(seed: int = 0, channels: int = 3) -> Cnn:
    torch.manual_seed(seed)
    return Cnn(channels).eval()


def encoder(seed: int = 0) -> Encoder:
    torch.manual_seed(seed)
    return Encoder().eval()


def export_cnn(model: nn.Module, path: Path, channels: int = 3) -> Path:
    example = torch.randn(1, channels, 16, 16)
    return _export(model, example, path, "image", "logits")


def export_encoder(model: nn.Module, path: Path) -> Path:
    example = torch.randint(0, VOCAB, (1, 8))
    axes = {"ids": {0: "batch", 1: "tokens"}, "logits": {0: "batch", 1: "tokens"}}
    return _export(model, example, path, "ids", "logits", axes)


def _export(
    model: nn.Module, example: torch.Tensor, path: Path, given: str, output: str,
    axes: dict[str, dict[int, str]] | None = None,
) -> Path:  # fmt: skip
    axes = axes or {given: {0: "batch"}, output: {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.backends.mha.set_fastpath_enabled(False)  # its fused kernel has no ONNX export
        torch.onnx.export(
            model, (example,), str(path), dynamo=False, input_names=[given],
            output_names=[output], dynamic_axes=axes,
        )  # fmt: skip
    return path


def fine_tuned(model: nn.Module, scale: float = 0.002, seed: int = 1) -> nn.Module:
    """Every parameter nudged by ``scale`` of its own spread: a gentle fine-tune's size."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.add_(noise * scale * (parameter.std() if parameter.numel() > 1 else 1.0))
    return model


def scrambled(model: nn.Module, layer: Callable[[nn.Module], nn.Linear]) -> nn.Module:
    """One linear layer's rows (weights and bias) permuted: the same statistics, its outputs
    in another order."""
    generator = torch.Generator().manual_seed(3)
    linear = layer(model)
    order = torch.randperm(linear.weight.shape[0], generator=generator)
    with torch.no_grad():
        for parameter in (linear.weight, linear.bias):
            parameter.copy_(parameter[order])
    return model


def f16_copy(source: Path, path: Path) -> Path:
    """Every f32 initializer stored as FLOAT16 under its own name, cast back to f32 for the
    nodes that use it (subgraphs included)."""
    model = onnx.load(str(source))
    casts, renamed = [], {}
    for initializer in model.graph.initializer:
        if initializer.data_type == TensorProto.FLOAT:
            half = numpy_helper.to_array(initializer).astype(np.float16)
            initializer.CopyFrom(numpy_helper.from_array(half, initializer.name))
            renamed[initializer.name] = f"{initializer.name}__f32"
            casts.append(
                helper.make_node(
                    "Cast", [initializer.name], [renamed[initializer.name]], to=TensorProto.FLOAT
                )
            )
    _rewire(model.graph, renamed)
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(casts + nodes)
    onnx.save(model, str(path))
    return path


def _rewire(graph: onnx.GraphProto, renamed: dict[str, str]) -> None:
    for node in graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                _rewire(subgraph, renamed)
