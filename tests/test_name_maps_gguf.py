"""A Llama GGUF conversion against its Hugging Face source, through the built-in map.

The GGUF file is made as llama.cpp's converter makes it: the ``gguf`` package's writer,
llama.cpp's names, Q and K rows permuted for GGML's rotary layout (K by the key/value
head count), the matrices quantized to Q8_0, the embedding to f16, the norms kept f32.
Every tensor must pair, and each pair's relative L2 must be its own conversion error:
a wrong (or missing) inverse permutation would leave Q and K near 1.4, not 0.005.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize, quantize

from diffai.renderers.html_report import embedded_json
from tests.gguf_files import write_gguf
from tests.test_pairing import assert_shards_merge_to

Q = gguf.GGMLQuantizationType
LAYERS, HIDDEN, HEADS, KV_HEADS, FFN, VOCAB = 2, 64, 4, 2, 128, 96
HEAD_DIM = HIDDEN // HEADS
#: Hugging Face Llama tensors and their llama.cpp names (``{}`` the block).
NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{}.input_layernorm.weight": "blk.{}.attn_norm.weight",
    "model.layers.{}.self_attn.q_proj.weight": "blk.{}.attn_q.weight",
    "model.layers.{}.self_attn.k_proj.weight": "blk.{}.attn_k.weight",
    "model.layers.{}.self_attn.v_proj.weight": "blk.{}.attn_v.weight",
    "model.layers.{}.self_attn.o_proj.weight": "blk.{}.attn_output.weight",
    "model.layers.{}.post_attention_layernorm.weight": "blk.{}.ffn_norm.weight",
    "model.layers.{}.mlp.gate_proj.weight": "blk.{}.ffn_gate.weight",
    "model.layers.{}.mlp.up_proj.weight": "blk.{}.ffn_up.weight",
    "model.layers.{}.mlp.down_proj.weight": "blk.{}.ffn_down.weight",
}
SHAPES = {
    "embed_tokens": (VOCAB, HIDDEN), "lm_head": (VOCAB, HIDDEN), "q_proj": (HIDDEN, HIDDEN),
    "k_proj": (KV_HEADS * HEAD_DIM, HIDDEN), "v_proj": (KV_HEADS * HEAD_DIM, HIDDEN),
    "o_proj": (HIDDEN, HIDDEN), "gate_proj": (FFN, HIDDEN), "up_proj": (FFN, HIDDEN),
    "down_proj": (HIDDEN, FFN),
}  # fmt: skip


def hf_names() -> dict[str, str]:
    """Every Hugging Face name -> its GGUF name."""
    pairs = {}
    for hf, ggml in NAMES.items():
        blocks = range(LAYERS) if "{}" in hf else [None]
        pairs.update({hf.format(block): ggml.format(block) for block in blocks})
    return pairs


def source_model(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tensors = {}
    for name in hf_names():
        module = name.split(".")[-2]
        shape = SHAPES.get(module, (HIDDEN,))
        scale = 1.0 if len(shape) == 1 else 0.02
        tensors[name] = (rng.standard_normal(shape) * scale + (len(shape) == 1)).astype(np.float32)
    return tensors


def rotary_permuted(weights: np.ndarray, heads: int) -> np.ndarray:
    """GGML's interleaved rotary rows from Hugging Face's halves, head by head (the layout
    llama.cpp's converter writes): row ``j`` of a head's first half goes to ``2j``, of its
    second half to ``2j + 1``."""
    head_rows = weights.shape[0] // heads
    halves = weights.reshape(heads, 2, head_rows // 2, *weights.shape[1:])
    return np.ascontiguousarray(halves.swapaxes(1, 2)).reshape(weights.shape)


def converted(name: str, weights: np.ndarray) -> np.ndarray | tuple[np.ndarray, Q]:
    """As llama.cpp's converter: Q by the heads, K by the key/value heads, then the type."""
    if name.endswith("attn_q.weight"):
        weights = rotary_permuted(weights, HEADS)
    elif name.endswith("attn_k.weight"):
        weights = rotary_permuted(weights, KV_HEADS)
    if weights.ndim == 1:
        return weights
    if name == "token_embd.weight":
        return weights.astype(np.float16)
    return weights, Q.Q8_0


@pytest.fixture
def conversion(tmp_path: Path, write_safetensors) -> tuple[Path, Path, dict[str, np.ndarray]]:
    source = source_model()
    keys = {"llama.attention.head_count": HEADS, "llama.attention.head_count_kv": KV_HEADS,
            "llama.block_count": LAYERS}  # fmt: skip
    tensors = {ggml: converted(ggml, source[hf]) for hf, ggml in hf_names().items()}
    gguf_path = write_gguf(tmp_path / "model-q8_0.gguf", tensors, keys)
    return write_safetensors("model.safetensors", source), gguf_path, source


def conversion_error(ggml: str, source: np.ndarray) -> float:
    """‖written − source‖ / ‖source‖ on GGUF's own layout: a row permutation keeps both
    norms, so this needs no inverse permutation (the code under test's job)."""
    stored = converted(ggml, source)
    if not isinstance(stored, tuple):  # f32 norms and the f16 embedding, not permuted
        return float(np.linalg.norm(stored.astype(np.float64) - source) / np.linalg.norm(source))
    values, qtype = stored
    written = dequantize(quantize(values, qtype), qtype).astype(np.float64)
    return float(np.linalg.norm(written - values) / np.linalg.norm(values))


def report_of(run_cli, tmp_path: Path, *argv: object) -> dict:
    path = tmp_path / "report.json"
    result = run_cli(*argv, "--report", path)
    assert result.code in (0, 1), result.err
    return json.loads(path.read_text())


def test_a_q8_0_gguf_pairs_with_its_safetensors_source_tensor_by_tensor(
    run_cli, validate_report, tmp_path, conversion
) -> None:
    source_path, gguf_path, source = conversion
    report = report_of(run_cli, tmp_path, source_path, gguf_path)
    validate_report(report)
    tensors = {t["name"]: t for t in report["tensors"]}
    assert set(tensors) == set(source)  # every tensor paired: none added or removed
    assert report["summary"]["added"] == report["summary"]["removed"] == 0
    for hf, ggml in hf_names().items():
        expected = conversion_error(ggml, source[hf])
        assert tensors[hf]["diff"]["relative_l2"] == pytest.approx(expected, rel=1e-6, abs=1e-12)
    q8 = [t for t in tensors.values() if t["candidate"]["stored_dtype"] == "q8_0"]
    assert len(q8) == 1 + 7 * LAYERS and all(t["status"] == "dtype_changed" for t in q8)
    assert all(0.001 < t["diff"]["relative_l2"] < 0.01 for t in q8)  # Q8_0's error, about 0.5%
    assert tensors["model.embed_tokens.weight"]["candidate"]["stored_dtype"] == "f16"
    conversions = report["analyses"]["quantization_analysis"]["conversions"]
    assert conversions == {"f32->q8_0": 1 + 7 * LAYERS, "f32->f16": 1}


def test_the_mapping_section_states_the_map_and_every_tensor_it_renamed(
    run_cli, tmp_path, conversion
) -> None:
    source_path, gguf_path, _ = conversion
    (applied,) = report_of(run_cli, tmp_path, source_path, gguf_path)["mapping"]["maps"]
    assert applied["source"] == "gguf-llama" and applied["chosen"] == "automatic"
    assert applied["side"] == "candidate" and "general.architecture 'llama'" in applied["reason"]
    renamed = {t["stored_name"]: t for t in applied["tensors"]}
    assert {t["name"]: t["stored_name"] for t in applied["tensors"]} == hf_names()
    assert renamed["blk.1.attn_k.weight"]["transform"] == (
        "permute_rotary(key heads from the GGUF metadata, inverse)"
    )
    assert renamed["blk.1.attn_v.weight"]["transform"] is None


def test_without_the_map_nothing_pairs_by_name(run_cli, tmp_path, conversion) -> None:
    source_path, gguf_path, source = conversion
    report = report_of(run_cli, tmp_path, source_path, gguf_path, "--no-auto-map", "--no-renames")
    assert report["mapping"]["maps"] == []
    assert report["summary"]["removed"] == report["summary"]["added"] == len(source)


def test_the_map_given_by_name_on_the_baseline_side(run_cli, tmp_path, conversion) -> None:
    source_path, gguf_path, source = conversion
    report = report_of(run_cli, tmp_path, gguf_path, source_path, "--map", "gguf-llama")
    (applied,) = report["mapping"]["maps"]
    assert applied["side"] == "baseline" and applied["chosen"] == "given"
    assert {t["name"] for t in report["tensors"]} == set(source)


def test_the_built_in_map_refuses_inputs_it_does_not_fit(run_cli, tmp_path, conversion) -> None:
    source_path, _, _ = conversion
    result = run_cli(source_path, source_path, "--map", "gguf-llama")
    assert result.code == 2
    assert result.err == (
        "diffai: error: --map gguf-llama: the built-in map fits neither of the inputs "
        "(``gguf-llama``: a llama.cpp GGUF file's tensor names as Hugging Face Llama names)\n"
    )


def test_the_table_agrees_with_the_gguf_packages_own_map() -> None:
    """The hand table (diffai reads GGUF without the package) against gguf-py's names."""
    from diffai.pairing.maps import gguf_llama

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, LAYERS)
    for hf, ggml in hf_names().items():
        module = hf.removesuffix(".weight")
        assert names.get_name(module) == ggml.removesuffix(".weight"), hf
    assert set(gguf_llama.IN_BLOCK) | set(gguf_llama.OUTSIDE) <= {
        name.format(bid=0).removeprefix("blk.0.") for name in gguf.TENSOR_NAMES.values()
    }


def test_the_mapping_is_stated_in_text_markdown_and_html(run_cli, tmp_path, conversion) -> None:
    source_path, gguf_path, source = conversion
    outputs = {"--markdown": tmp_path / "comment.md", "--html": tmp_path / "report.html"}
    result = run_cli(source_path, gguf_path, *[str(a) for pair in outputs.items() for a in pair])
    sentence = (
        "mapped the candidate's names by gguf-llama (built-in, automatic: the candidate is a "
        "GGUF file of general.architecture 'llama' against Hugging Face Llama names "
        f"(model.layers.*)): {len(source)} tensors mapped, {2 * LAYERS} of them transformed "
        "(permute_rotary(key heads from the GGUF metadata, inverse); permute_rotary(query "
        "heads from the GGUF metadata, inverse))"
    )
    assert f"\nnames: {sentence}\n" in result.out
    assert f"\nNames: {sentence}.\n" in html.unescape(outputs["--markdown"].read_text())
    page = outputs["--html"].read_text()
    assert embedded_json({"names": [sentence]})[1:-1] in page  # the page's data, as it embeds it


def test_shards_merge_with_the_maps_of_one_run(run_cli, tmp_path, conversion) -> None:
    pair = conversion[:2]
    assert_shards_merge_to(report_of(run_cli, tmp_path, *pair), run_cli, tmp_path, pair)
