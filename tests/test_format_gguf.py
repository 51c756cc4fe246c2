"""The GGUF reader: what llama.cpp's own package reads and dequantizes, bit for bit.

Files come from ``gguf.GGUFWriter`` and ``gguf.quants.quantize``; K-quant and IQ
tensors (which the package dequantizes but does not quantize) from raw blocks.
The reference is ``gguf.GGUFReader`` plus ``gguf.quants.dequantize`` on the whole
tensor; diffai streams it in runs of blocks and must give the same bits.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import diffai
from diffai.errors import MalformedModel
from diffai.formats.limits import check_model
from diffai.model import CHUNK_ELEMENTS, Model, TensorRef
from tests.conftest import CliResult
from tests.gguf_files import Q, dequantized, k_quant_blocks, raw_gguf, tensor_info, write_gguf
from tests.real_models import REAL

VOCAB = REAL / "ggml-vocab-llama-spm.gguf"
QUANTIZABLE = [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.BF16]
FROM_BLOCKS = [
    Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.IQ2_XXS, Q.IQ2_XS, Q.IQ2_S, Q.IQ3_XXS,
    Q.IQ3_S, Q.IQ1_S, Q.IQ1_M, Q.IQ4_NL, Q.IQ4_XS, Q.TQ1_0, Q.TQ2_0, Q.MXFP4,
]  # fmt: skip


def weights(shape: tuple[int, ...] = (8, 256), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def assert_matches_reference(path: Path) -> diffai.model.Model:
    model = diffai.open_model(path)
    reference = dequantized(path)
    assert sorted(model.tensors) == sorted(reference)
    for name, expected in reference.items():
        ref = model.tensors[name]
        values = ref.array()
        assert ref.shape == expected.shape == values.shape, name
        assert np.array_equal(values.astype(np.float32), expected, equal_nan=True), name
    return model


def report_of(run_cli: Callable[..., CliResult], tmp_path: Path, *models: Path) -> dict:
    report = tmp_path / "report.json"
    result = run_cli(*models, "--report", report)
    assert result.code in (0, 1), result.err
    return json.loads(report.read_text())


# --- values -------------------------------------------------------------------------------


def test_plain_tensors_are_views_in_their_own_dtype(tmp_path: Path) -> None:
    values = weights((3, 5, 64))
    path = write_gguf(
        tmp_path / "plain.gguf",
        {"f32": values, "f16": values.astype(np.float16), "i32": np.arange(6, dtype=np.int32)},
    )
    model = assert_matches_reference(path)
    assert model.tensors["f32"].shape == (3, 5, 64)  # C order: GGUF's ne is [64, 5, 3]
    assert np.array_equal(model.tensors["f32"].array(), values)
    assert [model.tensors[n].dtype for n in ("f32", "f16", "i32")] == ["f32", "f16", "i32"]
    assert model.tensors["f16"].stored_dtype == "f16"


@pytest.mark.parametrize("qtype", QUANTIZABLE, ids=lambda q: q.name)
def test_quantized_tensors_equal_the_packages_dequantization(tmp_path: Path, qtype: Q) -> None:
    path = write_gguf(tmp_path / "q.gguf", {"blk.0.attn_q.weight": (weights(), qtype)})
    ref = assert_matches_reference(path).tensors["blk.0.attn_q.weight"]
    block, size = 32, {Q.Q8_0: 34, Q.Q4_0: 18, Q.Q4_1: 20, Q.Q5_0: 22, Q.Q5_1: 24}.get(qtype, 0)
    if qtype != Q.BF16:
        assert (ref.dtype, ref.stored_dtype) == ("f32", qtype.name.lower())
        assert ref.stored_bytes == 8 * 256 // block * size


@pytest.mark.parametrize("qtype", FROM_BLOCKS, ids=lambda q: q.name)
def test_k_quants_and_iq_types_equal_the_packages_dequantization(tmp_path: Path, qtype: Q) -> None:
    blocks = k_quant_blocks(qtype, rows=3, row_blocks=2)
    path = write_gguf(tmp_path / "k.gguf", {"w": (blocks, qtype)})
    ref = assert_matches_reference(path).tensors["w"]
    assert ref.stored_dtype == qtype.name.lower() and ref.stored_bytes == blocks.size
    if qtype.name.startswith("Q"):  # finite scales make finite values
        assert np.isfinite(ref.array()).all()


def test_a_tensor_streams_in_runs_of_whole_blocks(tmp_path: Path) -> None:
    """More than one piece, and pieces that end mid-row: the chunks still match."""
    rows = CHUNK_ELEMENTS // 256 + 7
    blocks = k_quant_blocks(Q.Q4_K, rows=rows, row_blocks=1, seed=4)
    path = write_gguf(tmp_path / "big.gguf", {"w": (blocks, Q.Q4_K)})
    ref = diffai.open_model(path).tensors["w"]
    assert len(list(ref.stream())) == 2
    assert np.array_equal(ref.array(), dequantized(path)["w"])


def test_a_type_the_package_cannot_dequantize_is_refused_by_name(run_cli, tmp_path) -> None:
    blocks = np.zeros((1, 292), np.uint8)
    path = write_gguf(tmp_path / "q8k.gguf", {"w": (blocks, Q.Q8_K)})
    result = run_cli(path, path)
    assert (result.code, result.err) == (
        2,
        f"diffai: error: {path}: tensor 'w' is q8_k, which the gguf package cannot dequantize "
        "(so diffai cannot either)\n",
    )


# --- comparisons --------------------------------------------------------------------------


def test_q8_0_to_q4_0_is_a_dtype_change_with_its_measured_error(run_cli, tmp_path) -> None:
    values = weights((16, 256), seed=1)
    base = write_gguf(tmp_path / "q8.gguf", {"w": (values, Q.Q8_0)})
    cand = write_gguf(tmp_path / "q4.gguf", {"w": (values, Q.Q4_0)})
    document = report_of(run_cli, tmp_path, base, cand)
    (tensor,) = document["tensors"]
    assert tensor["status"] == "dtype_changed"
    assert (tensor["baseline"]["stored_dtype"], tensor["candidate"]["stored_dtype"]) == (
        "q8_0",
        "q4_0",
    )
    b, c = (dequantized(path)["w"].astype(np.float64) for path in (base, cand))
    expected = np.linalg.norm(c - b) / np.linalg.norm(b)
    quantization = document["analyses"]["quantization_analysis"]
    assert quantization["relative_error"] == pytest.approx(expected, rel=1e-9)
    assert quantization["conversions"] == {"q8_0->q4_0": 1}
    assert quantization["compression"] == pytest.approx(18 / 34)
    assert "  ~ w: dtype=q8_0->q4_0, rel_l2=" in run_cli(base, cand).out


def test_a_perturbed_copy_has_float64_exact_statistics(run_cli, tmp_path, validate_report):
    values = weights((8, 256), seed=2)
    base = write_gguf(tmp_path / "base.gguf", {"w": (values, Q.Q8_0)})
    raw = bytearray(base.read_bytes())
    data_start = len(raw) - 8 * 256 // 32 * 34
    for block in range(0, 64, 5):  # one quant byte of every fifth block
        raw[data_start + block * 34 + 2 + block % 32] ^= 0x55
    cand = tmp_path / "cand.gguf"
    cand.write_bytes(bytes(raw))
    document = report_of(run_cli, tmp_path, base, cand)
    validate_report(document)
    (tensor,) = document["tensors"]
    b, c = (dequantized(path)["w"].astype(np.float64) for path in (base, cand))
    assert tensor["candidate"]["mean"] == pytest.approx(c.mean(), rel=1e-6)
    assert tensor["candidate"]["std"] == pytest.approx(c.std(), rel=1e-6)
    assert (tensor["candidate"]["min"], tensor["candidate"]["max"]) == (c.min(), c.max())
    assert tensor["diff"]["l2"] == pytest.approx(np.linalg.norm(c - b), rel=1e-6)
    assert tensor["diff"]["max_abs"] == np.abs(c - b).max()
    assert tensor["diff"]["changed"] == int(np.count_nonzero(c != b))


def test_a_split_series_reads_as_the_single_file(run_cli, tmp_path: Path) -> None:
    tensors = {f"blk.{i}.ffn_up.weight": (weights(seed=i), Q.Q8_0) for i in range(3)}
    (tmp_path / "single").mkdir()
    (tmp_path / "split").mkdir()
    single = write_gguf(tmp_path / "single" / "model.gguf", tensors)
    write_gguf(tmp_path / "split" / "model.gguf", tensors, split_max_tensors=1)
    first = tmp_path / "split" / "model-00001-of-00003.gguf"
    model = diffai.open_model(first)
    assert model.format == "gguf (3 splits)"
    assert sorted(model.tensors) == sorted(tensors)
    assert "split.count" not in model.scalars
    result = run_cli(single, first)
    assert result.code == 0, result.err


def test_a_split_series_with_a_missing_split_is_refused(run_cli, tmp_path: Path) -> None:
    tensors = {f"t{i}": weights(seed=i) for i in range(2)}
    write_gguf(tmp_path / "model.gguf", tensors, split_max_tensors=1)
    (tmp_path / "model-00002-of-00002.gguf").unlink()
    first = tmp_path / "model-00001-of-00002.gguf"
    result = run_cli(first, first)
    assert result.err == (
        f"diffai: error: {first}: split 2 of 2, model-00002-of-00002.gguf, is missing\n"
    )


def test_a_later_split_given_alone_is_refused(run_cli, tmp_path: Path) -> None:
    write_gguf(tmp_path / "model.gguf", {"a": weights(), "b": weights()}, split_max_tensors=1)
    second = tmp_path / "model-00002-of-00002.gguf"
    result = run_cli(second, second)
    assert result.err == (
        f"diffai: error: {second}: this is split 2 of 2; give the first split of the series\n"
    )


# --- the real vocabulary file --------------------------------------------------------------


def test_the_real_vocabulary_reads_as_scalars_with_summarised_arrays() -> None:
    model = diffai.open_model(VOCAB)
    assert model.tensors == {}
    assert model.scalars["general.architecture"] == "llama"
    assert model.scalars["llama.context_length"] == 4096
    assert model.scalars["tokenizer.ggml.tokens"] == "32,000 strings, sha256 621e8daacd0e3006"
    assert all(not isinstance(value, list) or len(value) <= 16 for value in model.scalars.values())


def test_the_real_vocabulary_compares_unchanged_with_itself(run_cli, tmp_path: Path) -> None:
    document = report_of(run_cli, tmp_path, VOCAB, VOCAB)
    assert document["scalars"] == [] and document["tensors"] == []


def test_a_changed_token_shows_as_a_changed_scalar(run_cli, tmp_path: Path) -> None:
    changed = tmp_path / "vocab.gguf"
    raw = bytearray(VOCAB.read_bytes())
    at = raw.index(b"<unk>")
    raw[at : at + 5] = b"<UNK>"
    changed.write_bytes(bytes(raw))
    document = report_of(run_cli, tmp_path, VOCAB, changed)
    assert [scalar["name"] for scalar in document["scalars"]] == ["tokenizer.ggml.tokens"]
    assert document["scalars"][0]["candidate"].startswith("32,000 strings, sha256 ")


def test_gguf_reads_without_torch(run_without_torch, tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "q.gguf", {"w": (k_quant_blocks(Q.Q6_K, 2, 1), Q.Q6_K)})
    shutil.copy(VOCAB, tmp_path / "vocab.gguf")
    for model in (path, tmp_path / "vocab.gguf"):
        result = run_without_torch(model, model)
        assert (result.code, result.err) == (0, ""), result.err


def test_without_the_gguf_package_a_quantized_file_names_the_extra(run_cli, tmp_path, monkeypatch):
    """Plain tensors need no package; dequantizing does, and the error says what to install."""
    quantized = write_gguf(tmp_path / "q.gguf", {"w": (weights(), Q.Q8_0)})
    plain = write_gguf(tmp_path / "p.gguf", {"w": weights()})
    monkeypatch.setitem(sys.modules, "gguf.quants", None)
    assert run_cli(plain, plain).code == 0
    result = run_cli(quantized, quantized)
    assert result.err == (
        f"diffai: error: {quantized}: dequantizing its q8_0 tensors needs the gguf package; "
        "install it with: pip install 'diffai[gguf]'\n"
    )


def test_a_densely_quantized_model_is_not_refused_by_the_byte_budget(tmp_path: Path) -> None:
    """IQ1_S dequantizes to 20.5x its bytes, past the 8x any model may declare: a real Q2_K or
    IQ1_S GGUF over ~90 MB was refused as 'views that repeat their storage'."""
    rows = (96 << 20) // 50  # 96 MiB of IQ1_S blocks, a sparse file
    path = raw_gguf(tmp_path / "iq1.gguf", [], [tensor_info("w", (256, rows), type_id=19)])
    with path.open("r+b") as handle:
        handle.truncate(-(-path.stat().st_size // 32) * 32 + rows * 50)
    ref = diffai.open_model(path).tensors["w"]
    assert (ref.stored_dtype, ref.stored_bytes, ref.nbytes) == ("iq1_s", rows * 50, rows * 1024)


def test_an_encoded_tensor_past_any_codecs_ratio_is_refused(tmp_path: Path) -> None:
    ref = TensorRef(
        "w", (1 << 20,), "f32", load=lambda: np.empty(0), stored_as="q1", stored_size=64
    )
    model = Model("m", "test", 64, tensors={"w": ref})
    with pytest.raises(MalformedModel, match="over 32x"):
        check_model(tmp_path, model)


def test_plain_gguf_tensors_compare_identical_to_the_same_safetensors(
    run_cli, tmp_path: Path, write_safetensors
) -> None:
    """Cross-format: same names, C-order shapes, same bits, so nothing differs."""
    tensors = {"blk.0.attn_q.weight": weights((4, 64)), "output_norm.weight": weights((64,), 1)}
    gguf_path = write_gguf(tmp_path / "m.gguf", tensors)
    safetensors_path = write_safetensors("m.safetensors", tensors)
    document = report_of(run_cli, tmp_path, safetensors_path, gguf_path)
    assert document["summary"]["unchanged"] == 2 and document["summary"]["tensors_compared"] == 2
