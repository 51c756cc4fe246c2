"""The three models the PR comment and the HTML report are designed for, built tiny but real.

- ``mlp``: the README's example (examples/), five tensors, verdict warn;
- ``decoder``: a 32-block decoder-only transformer (Llama names: q/k/v/o, gate/up/down,
  two norms per block, embeddings, final norm, head; 291 tensors), fine-tuned harder with
  depth, its block-20 MLP over the policy's 5% and one attention matrix gaining a NaN;
- ``moe``: a mixture of experts, 48 blocks, 64 experts, 3 matrices each (Mixtral names;
  9,555 tensors), one expert per block of the upper half retrained far past the policy.

Each is built once per session; ``model_documents[kind]`` is its report document and
``model_files[kind]`` its (baseline, candidate, policy) paths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import diffai

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("mlp", "decoder", "moe")
POLICY = "version: 1\nregression_test:\n  max_relative_change: 0.05\n"
Weights = dict[str, np.ndarray]
Change = Callable[[str, int | None], float]


def decoder_names(blocks: int = 32) -> Iterator[str]:
    yield "model.embed_tokens.weight"
    for i in range(blocks):
        for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            yield f"model.layers.{i}.{part}.weight"
        yield f"model.layers.{i}.self_attn.o_proj.weight"
        for part in ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            yield f"model.layers.{i}.{part}.weight"
        yield f"model.layers.{i}.input_layernorm.weight"
        yield f"model.layers.{i}.post_attention_layernorm.weight"
    yield "model.norm.weight"
    yield "lm_head.weight"


def moe_names(blocks: int = 48, experts: int = 64) -> Iterator[str]:
    yield "model.embed_tokens.weight"
    for i in range(blocks):
        for part in ("q_proj", "k_proj", "v_proj", "o_proj"):
            yield f"model.layers.{i}.self_attn.{part}.weight"
        yield f"model.layers.{i}.block_sparse_moe.gate.weight"
        for e in range(experts):
            for w in ("w1", "w2", "w3"):
                yield f"model.layers.{i}.block_sparse_moe.experts.{e}.{w}.weight"
        yield f"model.layers.{i}.input_layernorm.weight"
        yield f"model.layers.{i}.post_attention_layernorm.weight"
    yield "model.norm.weight"
    yield "lm_head.weight"


def _block(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else None


def _decoder_change(name: str, block: int | None) -> float:
    depth = 0.0 if block is None else block / 31
    if "norm" in name:
        return 0.002 + 0.004 * depth
    if ".mlp." in name:
        return 0.12 if block == 20 else 0.01 + 0.03 * depth
    return 0.005 + 0.02 * depth


def _moe_change(name: str, block: int | None) -> float:
    if ".experts.5." in name and block is not None and block >= 24:
        return 0.3
    if ".experts." in name:
        return 0.01 + 0.02 * (block or 0) / 47
    return 0.002 if "norm" in name else 0.008


def _pair(names: Iterator[str], change: Change, seed: int) -> tuple[Weights, Weights]:
    rng = np.random.default_rng(seed)
    base: Weights = {}
    cand: Weights = {}
    for name in names:
        shape = (8,) if "norm" in name else (8, 8)
        value = rng.standard_normal(shape).astype(np.float32)
        noise = rng.standard_normal(shape).astype(np.float32)
        base[name] = value
        scale = change(name, _block(name)) * np.linalg.norm(value) / np.linalg.norm(noise)
        cand[name] = (value + noise * scale).astype(np.float32)
    return base, cand


def decoder_pair() -> tuple[Weights, Weights]:
    base, cand = _pair(decoder_names(), _decoder_change, seed=32)
    cand["model.layers.7.self_attn.v_proj.weight"][0, 0] = np.nan
    return base, cand


def moe_pair() -> tuple[Weights, Weights]:
    return _pair(moe_names(), _moe_change, seed=48)


def _write(folder: Path, kind: str) -> tuple[Path, Path, Path]:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    base, cand = {"decoder": decoder_pair, "moe": moe_pair}[kind]()
    save_file(base, folder / "baseline.safetensors")
    save_file(cand, folder / "candidate.safetensors")
    (folder / "policy.yaml").write_text(POLICY)
    return folder / "baseline.safetensors", folder / "candidate.safetensors", folder / "policy.yaml"


def write_models(folder: Path, kind: str) -> tuple[Path, Path, Path]:
    """The fixture's baseline, candidate and policy files (the MLP's are the README's)."""
    if kind == "mlp":
        examples = ROOT / "examples"
        names = ("baseline.safetensors", "candidate.safetensors", "policy.yaml")
        return tuple(examples / name for name in names)  # type: ignore[return-value]
    return _write(folder / kind, kind)


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, Path]]:
    folder = tmp_path_factory.mktemp("models")
    return {kind: write_models(folder, kind) for kind in KINDS}


@pytest.fixture(scope="session")
def model_documents(model_files: dict[str, tuple[Path, Path, Path]]) -> dict[str, dict]:
    return {
        kind: diffai.compare(base, cand, policy=policy).document
        for kind, (base, cand, policy) in model_files.items()
    }
