"""Write the performance suite's files: f32, f16 and bf16 pairs, 10,000 small tensors, shards.

Every model is a decoder-style transformer (embeddings, then per layer
attention q/k/v/o and a 4x feed-forward, with biases and two LayerNorms),
sized to a byte target by its vocabulary. The candidate is the baseline
plus a fine-tuning update of relative L2 1e-3 on every tensor, so no tensor
is byte-identical and nothing can be skipped.

Files are written tensor by tensor (memory stays at one tensor per side),
through a temporary name renamed at the end, and kept between runs: a file
of the expected size is not written again. Values come from one 64 MiB
pool of N(0, 1) draws read at random offsets, which writes a 4 GiB pair
about 20x faster than drawing a billion fresh normals and still gives every
tensor a normal distribution.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

SEED = 20261126
MIB = 1 << 20
POOL_ELEMENTS = 1 << 24
UPDATE_SCALE = 1e-3
#: 625 blocks of 16 tensors: the many-small-tensors model.
SMALL_BLOCKS, SMALL_HIDDEN = 625, 32
SHARDS = 4
POSITIONS = 2048
HIDDEN_SIZES = (2048, 1024, 512, 256)
MIN_LAYERS = 6

Spec = list[tuple[str, tuple[int, ...]]]
DTYPE_NAMES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}
DTYPE_NAMES[np.dtype(ml_dtypes.bfloat16)] = "BF16"


@dataclass(frozen=True)
class PerfFiles:
    """The pairs the performance suite compares, each as (baseline, candidate)."""

    small: tuple[Path, Path]  # the "512 MiB" pair
    large: tuple[Path, Path]  # the "4 GiB" pair
    f16: tuple[Path, Path]
    bf16: tuple[Path, Path]
    many: tuple[Path, Path]  # 10,000 tensors
    sharded: tuple[Path, Path]  # folders with model.safetensors.index.json


# --- layouts ------------------------------------------------------------------------------


def _layer(prefix: str, hidden: int) -> Spec:
    spec: Spec = []
    for projection in ("q_proj", "k_proj", "v_proj", "o_proj"):
        spec += [(f"{prefix}.attn.{projection}.weight", (hidden, hidden))]
        spec += [(f"{prefix}.attn.{projection}.bias", (hidden,))]
    spec += [(f"{prefix}.mlp.up_proj.weight", (4 * hidden, hidden))]
    spec += [(f"{prefix}.mlp.up_proj.bias", (4 * hidden,))]
    spec += [(f"{prefix}.mlp.down_proj.weight", (hidden, 4 * hidden))]
    spec += [(f"{prefix}.mlp.down_proj.bias", (hidden,))]
    for norm in ("input_layernorm", "post_attention_layernorm"):
        spec += [(f"{prefix}.{norm}.weight", (hidden,)), (f"{prefix}.{norm}.bias", (hidden,))]
    return spec


def _elements(spec: Spec) -> int:
    return sum(math.prod(shape) for _, shape in spec)


def transformer_spec(target_bytes: int) -> Spec:
    """The widest model with at least ``MIN_LAYERS`` layers in 3/4 of the bytes; vocab fills up."""
    target = target_bytes // 4
    for hidden in HIDDEN_SIZES:
        layers = int(0.75 * target) // _elements(_layer("x", hidden))
        if layers >= MIN_LAYERS:
            break
    body = [entry for i in range(layers) for entry in _layer(f"model.layers.{i}", hidden)]
    fixed = [("model.embed_positions.weight", (POSITIONS, hidden))]
    fixed += [("model.norm.weight", (hidden,)), ("model.norm.bias", (hidden,))]
    vocab = (target - _elements(body) - _elements(fixed)) // hidden
    return [("model.embed_tokens.weight", (vocab, hidden)), *fixed, *body]


def many_tensors_spec() -> Spec:
    return [entry for i in range(SMALL_BLOCKS) for entry in _layer(f"blocks.{i}", SMALL_HIDDEN)]


# --- values --------------------------------------------------------------------------------


class Values:
    """Seeded baseline tensors and their fine-tuned candidates, drawn from one pool of normals."""

    def __init__(self, seed: int = SEED) -> None:
        self.rng = np.random.default_rng(seed)
        pool = self.rng.standard_normal(POOL_ELEMENTS, dtype=np.float32)
        self.pool = np.concatenate([pool, pool])  # any window of POOL_ELEMENTS is contiguous

    def normal(self, count: int) -> np.ndarray:
        out = np.empty(count, np.float32)
        for start in range(0, count, POOL_ELEMENTS):
            size = min(POOL_ELEMENTS, count - start)
            offset = int(self.rng.integers(POOL_ELEMENTS))
            out[start : start + size] = self.pool[offset : offset + size]
        return out

    def pair(self, name: str, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Weights N(0, 0.02), biases N(0, 0.01), LayerNorm weights N(1, 0.05); update 1e-3."""
        count = math.prod(shape)
        mean, spread = (1.0, 0.05) if "norm.weight" in name else (0.0, 0.02)
        if name.endswith(".bias"):
            spread = 0.01
        base = self.normal(count) * np.float32(spread) + np.float32(mean)
        rms = float(np.sqrt(np.mean(np.square(base, dtype=np.float64))))
        cand = base + self.normal(count) * np.float32(UPDATE_SCALE * rms)
        return base.reshape(shape), cand.reshape(shape)


# --- writing --------------------------------------------------------------------------------


def _header(entries: list[tuple[str, np.dtype, tuple[int, ...]]]) -> bytes:
    """A safetensors header (length + JSON padded with spaces to 8 bytes) for these tensors."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in entries:
        size = math.prod(shape) * dtype.itemsize
        header[name] = {
            "dtype": DTYPE_NAMES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


class _Writer:
    """Streams tensors into a safetensors file whose header is known up front."""

    def __init__(self, path: Path, spec: Spec, dtype: np.dtype) -> None:
        self.path, self.partial = path, path.with_name(path.name + ".partial")
        self.handle = self.partial.open("wb")
        self.handle.write(_header([(name, dtype, shape) for name, shape in spec]))
        self.dtype = dtype

    def write(self, values: np.ndarray) -> None:
        typed = np.ascontiguousarray(values.astype(self.dtype, copy=False)).reshape(-1)
        self.handle.write(memoryview(typed.view(np.uint8)))  # bf16 has no buffer format

    def close(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())  # dirty pages cannot be evicted for the cold-cache runs
        self.handle.close()
        self.partial.replace(self.path)


def expected_size(spec: Spec, dtype: np.dtype) -> int:
    return len(_header([(name, dtype, shape) for name, shape in spec])) + _elements(spec) * (
        dtype.itemsize
    )


def write_pair(pair: tuple[Path, Path], spec: Spec, values: Values) -> None:
    """Baseline and candidate, f32, tensor by tensor."""
    writers = [_Writer(path, spec, np.dtype(np.float32)) for path in pair]
    for name, shape in spec:
        for writer, tensor in zip(writers, values.pair(name, shape), strict=True):
            writer.write(tensor)
    for writer in writers:
        writer.close()


def read_tensors(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """The tensors of a file this module wrote, memory-mapped, in file order."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    data = np.memmap(path, np.uint8, mode="r", offset=8 + length)
    names = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}
    for name, entry in header.items():
        if name != "__metadata__":
            start, end = entry["data_offsets"]
            values = data[start:end].view(names[entry["dtype"]])
            yield name, values.reshape(entry["shape"])


def write_retyped(source: Path, target: Path, spec: Spec, dtype: np.dtype) -> None:
    writer = _Writer(target, spec, dtype)
    for _, values in read_tensors(source):
        writer.write(values)
    writer.close()


def write_sharded(source: Path, folder: Path, spec: Spec) -> None:
    """``source`` split into ``SHARDS`` files of about equal bytes, with the index."""
    folder.mkdir(parents=True, exist_ok=True)
    total = _elements(spec) * 4
    groups: list[Spec] = [[] for _ in range(SHARDS)]
    done = 0
    for name, shape in spec:
        groups[min(SHARDS - 1, done * SHARDS // total)].append((name, shape))
        done += math.prod(shape) * 4
    tensors = read_tensors(source)
    weight_map = {}
    for index, group in enumerate(groups, 1):
        shard = f"model-{index:05d}-of-{SHARDS:05d}.safetensors"
        writer = _Writer(folder / shard, group, np.dtype(np.float32))
        for name, _ in group:
            weight_map[name] = shard
            writer.write(next(tensors)[1])
        writer.close()
    index_json = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index_json, indent=2))


# --- the suite's files ------------------------------------------------------------------------


def _label(size: int) -> str:
    return f"{size // (1 << 30)}GiB" if size % (1 << 30) == 0 else f"{size // MIB}MiB"


def _pair(folder: Path, stem: str) -> tuple[Path, Path]:
    return folder / f"{stem}-base.safetensors", folder / f"{stem}-cand.safetensors"


def _missing(paths: tuple[Path, Path], size: int) -> bool:
    return not all(path.exists() and path.stat().st_size == size for path in paths)


def build(
    folder: Path, small_bytes: int, large_bytes: int, echo: Callable[[str], None]
) -> PerfFiles:
    """Write whatever is missing in ``folder``; return every pair's paths."""
    folder.mkdir(parents=True, exist_ok=True)
    small_spec, large_spec = transformer_spec(small_bytes), transformer_spec(large_bytes)
    f32 = np.dtype(np.float32)
    files = PerfFiles(
        small=_pair(folder, f"f32-{_label(small_bytes)}"),
        large=_pair(folder, f"f32-{_label(large_bytes)}"),
        f16=_pair(folder, f"f16-{_label(small_bytes)}"),
        bf16=_pair(folder, f"bf16-{_label(small_bytes)}"),
        many=_pair(folder, "f32-10000-tensors"),
        sharded=(
            folder / f"sharded-{_label(small_bytes)}-base",
            folder / f"sharded-{_label(small_bytes)}-cand",
        ),
    )
    for pair, spec, seed in (
        (files.small, small_spec, SEED),
        (files.large, large_spec, SEED + 1),
        (files.many, many_tensors_spec(), SEED + 2),
    ):
        if _missing(pair, expected_size(spec, f32)):
            echo(f"writing {pair[0].name} and {pair[1].name} ({len(spec):,} tensors) ...")
            write_pair(pair, spec, Values(seed))
    for pair, dtype in ((files.f16, np.float16), (files.bf16, ml_dtypes.bfloat16)):
        if _missing(pair, expected_size(small_spec, np.dtype(dtype))):
            echo(f"writing {pair[0].name} and {pair[1].name} ...")
            for source, target in zip(files.small, pair, strict=True):
                write_retyped(source, target, small_spec, np.dtype(dtype))
    for source, target in zip(files.small, files.sharded, strict=True):
        if not (target / "model.safetensors.index.json").exists():
            echo(f"writing {target.name}/ ({SHARDS} shards) ...")
            write_sharded(source, target, small_spec)
    return files
