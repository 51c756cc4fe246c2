"""Crafted GGUF files against the built-in ``gguf-llama`` map: metadata that lies about the
head counts, and names that collide once mapped. Each is one line naming the map and
the file; none is a traceback, a partial report, or a tensor judged under another's name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.gguf_files import write_gguf
from tests.hostile.conftest import Refusal, assert_refused

Q_ROWS = np.arange(8 * 4, dtype=np.float32).reshape(8, 4)
HF_Q = "model.layers.0.self_attn.q_proj.weight"


def llama_gguf(path: Path, keys: dict[str, object], extra: dict[str, np.ndarray]) -> Path:
    return write_gguf(path, {"blk.0.attn_q.weight": Q_ROWS, **extra}, keys)


CASES = [
    pytest.param({"llama.attention.head_count": 0}, {},
                 "has no llama.attention.head_count of at least 1", id="zero-heads"),
    pytest.param({"llama.attention.head_count": "4"}, {},
                 "has no llama.attention.head_count of at least 1", id="heads-a-string"),
    pytest.param({}, {}, "has no llama.attention.head_count of at least 1", id="no-heads"),
    pytest.param({"llama.attention.head_count": 2**31}, {},
                 "permute_rotary with 2147483648 heads does not fit", id="heads-over-rows"),
    pytest.param({"llama.attention.head_count": 3}, {},
                 "permute_rotary with 3 heads does not fit", id="heads-not-dividing"),
    pytest.param({"llama.attention.head_count": 2}, {HF_Q: Q_ROWS},
                 f"tensors 'blk.0.attn_q.weight' (by blk.N.attn_q.*) and {HF_Q!r} (not renamed)",
                 id="collision"),
]  # fmt: skip


@pytest.mark.parametrize(("keys", "extra", "problem"), CASES)
def test_a_gguf_the_map_does_not_fit_is_refused_in_one_line(
    run_cli, tmp_path: Path, keys, extra, problem
) -> None:
    source = tmp_path / "source.safetensors"
    save_file({HF_Q: Q_ROWS}, source)
    hostile = llama_gguf(tmp_path / "hostile.gguf", keys, extra)
    report = tmp_path / "report.json"
    result = run_cli(source, hostile, "--report", report)
    refusal = Refusal(hostile, result.code, result.err, report.exists())
    assert_refused(refusal, problem, named=Path("gguf-llama"))
    assert str(hostile) in result.err


def test_a_fitting_gguf_pairs_and_falls_back_to_the_query_head_count(run_cli, tmp_path) -> None:
    """No head_count_kv: llama.cpp's own default is the query heads."""
    source = tmp_path / "source.safetensors"
    save_file({HF_Q: Q_ROWS}, source)
    hostile = llama_gguf(tmp_path / "k.gguf", {"llama.attention.head_count": 2}, {})
    assert run_cli(source, hostile).code == 1  # paired, the rows differ: a value change
