"""A PEFT LoRA adapter folder read (``diffai.adapters.reader`` is the registry's entry): its
tensors as the file holds them, and its LoRA modules.

Names pair with the base model's the way PEFT loads them: ``base_model.model.`` is
PeftModel's wrapper, so ``base_model.model.<module>.lora_A.weight`` belongs to the base
weight ``<module>.weight``; a ``modules_to_save`` tensor (``<module>.<param>``, or
``<module>.modules_to_save.<adapter>.<param>`` as a live model names it) replaces the
base tensor ``<module>.<param>`` whole.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from diffai.adapters.reader import CONFIG_NAME, FORMAT
from diffai.errors import MalformedModel, UnreadableModel
from diffai.model import Model, TensorRef

if TYPE_CHECKING:
    from diffai.adapters.config import AdapterConfig
    from diffai.adapters.factors import LoraModule

#: PEFT loads the safetensors file when both exist, with safetensors' own loader, else the
#: .bin with torch.load: each is read by that format's reader, whatever its content.
WEIGHT_FILES = {"adapter_model.safetensors": "safetensors", "adapter_model.bin": "pytorch"}
WRAPPER = "base_model.model."
LORA_KEY = re.compile(r"(?P<module>.+)\.lora_(?P<side>[AB])\.weight")
EMBEDDING_KEY = re.compile(r"(?P<module>.+)\.lora_embedding_(?P<side>[AB])")
SAVED_INFIX = re.compile(r"\.modules_to_save\.[^.]+\.")
#: The largest real weight matrices (a 256k-token embedding of width 16k) hold 4.2e9 values;
#: a few bytes of factors may not declare more, since ΔW is streamed element by element.
MAX_DELTA_ELEMENTS = 1 << 32


@dataclass(frozen=True)
class Adapter:
    path: str
    config: AdapterConfig
    modules: dict[str, LoraModule]  # by the base weight each one updates
    saved: dict[str, TensorRef] = field(default_factory=dict)  # modules_to_save, by base name


@dataclass
class AdapterModel(Model):
    """The adapter file's own tensors, plus what they mean (``adapter``)."""

    adapter: Adapter | None = None


def read_folder(path: Path) -> AdapterModel:
    from diffai.adapters.config import read_config

    config = read_config(path / CONFIG_NAME)
    weights = _weight_model(path)
    modules, saved = _group(Path(weights.path), weights.tensors, config)
    return AdapterModel(
        path=str(path),
        format=FORMAT,
        size_bytes=weights.size_bytes + (path / CONFIG_NAME).stat().st_size,
        tensors=weights.tensors,
        metadata={"adapter_config": config.summary(), "weight_file": Path(weights.path).name},
        adapter=Adapter(str(path), config, modules, saved),
    )


def adapter_of(model: AdapterModel) -> Adapter:
    assert model.adapter is not None  # the reader always sets it
    return model.adapter


def _weight_model(folder: Path) -> Model:
    from diffai.formats import choose_reader  # deferred: the reader registry imports this module

    name = next((name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if name is None:
        raise UnreadableModel(folder, f"adapter folder has no {' or '.join(WEIGHT_FILES)}")
    return choose_reader(folder / name, WEIGHT_FILES[name]).read(folder / name)


def _group(
    file: Path, tensors: dict[str, TensorRef], config: AdapterConfig
) -> tuple[dict[str, LoraModule], dict[str, TensorRef]]:
    from diffai.comparison import model_order

    factors: dict[tuple[str, bool], dict[str, TensorRef]] = {}
    saved: dict[str, TensorRef] = {}
    for name in model_order(tensors):  # layers.2 before layers.10
        ref, key = tensors[name], name.removeprefix(WRAPPER)
        found = LORA_KEY.fullmatch(key) or EMBEDDING_KEY.fullmatch(key)
        if found:
            embedding = found.re is EMBEDDING_KEY
            factors.setdefault((found["module"], embedding), {})[found["side"]] = ref
        elif "lora_" in key:
            raise MalformedModel(file, f"tensor {name!r} is a LoRA tensor diffai does not read")
        else:
            saved[SAVED_INFIX.sub(".", key)] = ref
    modules = [_module(file, config, *key, sides) for key, sides in factors.items()]
    for module in modules:
        if not config.targets(module.module):
            # PeftModel.from_pretrained builds LoRA layers only for target_modules and drops
            # other keys with a warning: comparing them would judge what users never load.
            raise MalformedModel(
                file,
                f"module {module.module!r} has LoRA tensors but the config's "
                "target_modules does not name it, so PEFT would not load them",
            )
    return {module.weight_name: module for module in modules}, saved


def _module(
    file: Path, config: AdapterConfig, module: str, embedding: bool, sides: dict[str, TensorRef]
) -> LoraModule:
    if set(sides) != {"A", "B"}:
        missing = "lora_B" if "A" in sides else "lora_A"
        raise MalformedModel(file, f"module {module!r} has no {missing} tensor")
    a, b = sides["A"], sides["B"]
    rank, alpha = config.rank_and_alpha(module)
    _check_factors(file, module, a, b, rank)
    transposed = (embedding or config.fan_in_fan_out) and len(a.shape) == 2
    shape = _delta_shape(a, b, transposed)
    if math.prod(shape) > MAX_DELTA_ELEMENTS:
        raise MalformedModel(
            file,
            f"module {module!r}: its update would have shape {list(shape)}, "
            f"{math.prod(shape):,} values, over the limit of {MAX_DELTA_ELEMENTS:,}",
        )
    from diffai.adapters.factors import LoraModule

    scale = config.scale(rank, alpha)
    return LoraModule(module, a, b, rank, float(alpha), scale, transposed, shape)


def _check_factors(file: Path, module: str, a: TensorRef, b: TensorRef, rank: int) -> None:
    shapes = f"lora_A has shape {list(a.shape)} and lora_B {list(b.shape)}"
    if len(a.shape) < 2 or len(b.shape) != len(a.shape) or any(n != 1 for n in b.shape[2:]):
        raise MalformedModel(file, f"module {module!r}: {shapes}, not the factors of one update")
    if a.shape[0] != b.shape[1]:
        raise MalformedModel(file, f"module {module!r}: {shapes}: their ranks differ")
    if a.shape[0] != rank:
        raise MalformedModel(
            file, f"module {module!r}: {shapes}, but the config gives it rank {rank}"
        )
    if not a.elements or not b.elements:
        raise MalformedModel(file, f"module {module!r}: {shapes}: an empty factor")


def _delta_shape(a: TensorRef, b: TensorRef, transposed: bool) -> tuple[int, ...]:
    if len(a.shape) > 2:  # a conv kernel: B is (out, r, 1, 1), A is (r, in, kh, kw)
        return (b.shape[0], *a.shape[1:])
    return (a.shape[1], b.shape[0]) if transposed else (b.shape[0], a.shape[1])
