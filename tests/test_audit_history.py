"""The audit history block: what diffai writes, it reads back, within its size bound."""

from __future__ import annotations

from datetime import UTC, datetime

from diffai.ci.history import (
    BLOCK_END,
    BLOCK_START,
    MAX_BLOCK,
    History,
    RunSummary,
    decode_block,
    encode_block,
    summarize,
)

PREFIX = "https://github.com/octo/models/actions/runs/"


def a_run(index: int, name: str = "encoder.layers.0.attention") -> RunSummary:
    layers = tuple((f"{name}.{i}", 0.5 / (i + 1)) for i in range(5))
    return RunSummary(
        f"2024-05-{index % 28 + 1:02d}T06:00:00Z", "warn", 0.5, f"{PREFIX}{index}", layers
    )


def test_what_is_written_is_read_back() -> None:
    history = History(tuple(a_run(i) for i in range(3)))
    body = f"<!-- diffai-audit: drift -->\nvisible text\n{encode_block(history)}\n"

    assert decode_block(body, PREFIX) == history


def test_names_that_would_close_the_html_comment_are_escaped_and_kept() -> None:
    history = History((a_run(1, name="x-->y<b>&"),))
    block = encode_block(history)

    assert block.count("-->") == 1 and block.endswith(BLOCK_END) and "<b>" not in block
    assert decode_block(block, PREFIX) == history


def test_the_oldest_runs_give_way_to_the_size_bound() -> None:
    history = History(tuple(a_run(i, name="n" * 110) for i in range(100)))
    block = encode_block(history)

    kept = decode_block(block, PREFIX).runs
    assert len(block) <= len(BLOCK_START) + MAX_BLOCK + len(BLOCK_END)
    assert 0 < len(kept) < 100 and kept[-1] == history.runs[-1]


def test_a_report_is_summarized_by_its_most_changed_layers() -> None:
    layers = [{"name": f"l{i}", "relative_l2": i / 10} for i in range(7)] + [
        {"name": "unmeasured", "relative_l2": None}
    ]
    document = {"verdict": "fail", "deployment_readiness": {"readiness": 0.25}, "layers": layers}

    run = summarize(document, datetime(2024, 5, 6, 6, 0, 9, tzinfo=UTC), None)

    assert run == RunSummary(
        "2024-05-06T06:00:09Z",
        "fail",
        0.25,
        None,
        (("l6", 0.6), ("l5", 0.5), ("l4", 0.4), ("l3", 0.3), ("l2", 0.2)),
    )
