"""100,000 tensors (a large mixture-of-experts model): the outputs bounded, the numbers right.

Not a timing test (``bench/moe.py`` measures the time): this checks that the paths taken
only at this scale (small pairs measured in one kernel call, the comment's table cut to
fit) give the figures and sizes they must. The numbers of the batched path must be the
very ones ``measure_pair`` gives a pair on its own, bit for bit.
"""

from __future__ import annotations

import json
import math

import numpy as np

from diffai import _kernel
from diffai.formats import open_model
from diffai.renderers.markdown import COMMENT_LIMIT, SUMMARY_LIMIT, render_markdown
from diffai.stats import measure_pair

TENSORS = 100_000
#: Every this-many-th tensor changes; the others are saved identical.
CHANGED_EVERY = 1_000


def _pair(count: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Tensors of 2 x 3 with MoE names; the changed ones move by about 1e-3 of their size."""
    rng = np.random.default_rng(16)
    values = rng.standard_normal((count, 2, 3)).astype(np.float32)
    moved = values.copy()
    moved[::CHANGED_EVERY] += np.float32(1e-3) * rng.standard_normal((2, 3)).astype(np.float32)
    names = [
        f"model.layers.{i // 200}.block_sparse_moe.experts.{i % 200}.w1.weight"
        for i in range(count)
    ]
    return dict(zip(names, values, strict=True)), dict(zip(names, moved, strict=True))


def test_100000_tensors_stay_bounded_and_exact(
    run_cli, write_safetensors, validate_report, tmp_path, monkeypatch
):
    batched: list[int] = []  # pairs the one-call kernel path measured (a fallback is silent)
    kernel_call = _kernel.measure_pairs

    def counted(batch, epsilon):
        batched.append(len(batch))
        return kernel_call(batch, epsilon)

    monkeypatch.setattr(_kernel, "measure_pairs", counted)
    base, cand = _pair(TENSORS)
    base_path = write_safetensors("base.safetensors", base)
    cand_path = write_safetensors("cand.safetensors", cand)
    out = {kind: tmp_path / f"out.{kind}" for kind in ("json", "md", "xml")}
    result = run_cli(
        base_path, cand_path, "-q", "--report", out["json"], "--markdown", out["md"],
        "--junit", out["xml"],
    )  # fmt: skip
    assert result.code == 1, result.err
    assert sum(batched) == TENSORS
    document = json.loads(out["json"].read_text())
    validate_report(document)
    summary = document["summary"]
    assert summary["tensors_compared"] == TENSORS
    assert summary["changed"] == TENSORS // CHANGED_EVERY
    assert summary["unchanged"] == TENSORS - TENSORS // CHANGED_EVERY

    records = {record["name"]: record for record in document["tensors"]}
    opened = open_model(base_path), open_model(cand_path)
    for index in (0, 1, CHANGED_EVERY, TENSORS - 1):
        name = list(base)[index]
        alone = measure_pair(opened[0].tensors[name], opened[1].tensors[name], 0.0)
        record = records[name]
        for side, stats in zip(("baseline", "candidate"), alone[:2], strict=True):
            assert record[side]["mean"] == stats.mean and record[side]["std"] == stats.std
        assert record["diff"]["l2"] == alone[2].l2
        assert record["diff"]["cosine"] == alone[2].cosine
    moved = records[list(base)[CHANGED_EVERY]]["diff"]["relative_l2"]
    b, c = base[list(base)[CHANGED_EVERY]].astype(np.float64), cand[list(base)[CHANGED_EVERY]]
    assert math.isclose(moved, np.linalg.norm(c - b) / np.linalg.norm(b), rel_tol=1e-9)

    comment = out["md"].read_text()
    assert len(comment) <= COMMENT_LIMIT and "Left out to stay within" in comment
    assert len(render_markdown(document, limit=SUMMARY_LIMIT)) <= SUMMARY_LIMIT
    assert out["xml"].stat().st_size < 1 << 20
