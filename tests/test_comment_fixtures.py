"""The PR comment for the three models it is designed for: MLP, 32-block decoder, 10k-tensor MoE."""

from __future__ import annotations

import re

import pytest

from diffai.components import Placement, placement
from diffai.renderers.markdown import COMMENT_LIMIT, SUMMARY_LIMIT, code, render_markdown
from tests.model_fixtures import KINDS


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fc1.weight", Placement(None, None, "mlp")),
        ("model.layers.3.self_attn.q_proj.weight", Placement("model.layers", 3, "attention")),
        ("model.layers.3.post_attention_layernorm.weight", Placement("model.layers", 3, "norm")),
        ("model.layers.3.mlp.experts.17.w1.weight", Placement("model.layers", 3, "experts")),
        ("model.layers.9.block_sparse_moe.gate.weight", Placement("model.layers", 9, "experts")),
        ("transformer.h.11.mlp.c_fc.weight", Placement("transformer.h", 11, "mlp")),
        ("transformer.h.0.ln_1.bias", Placement("transformer.h", 0, "norm")),
        ("model.embed_tokens.weight", Placement(None, None, "embedding")),
        ("lm_head.weight", Placement(None, None, "head")),
        ("features.4.weight", Placement("features", 4, "other")),
    ],
)
def test_a_name_places_its_tensor_in_a_block_and_component(name, expected) -> None:
    assert placement(name) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_every_fixture_fits_github_and_opens_with_the_verdict_and_why(model_documents, kind):
    document = model_documents[kind]
    text = render_markdown(document, marker="<!-- diffai -->")
    assert len(text) <= COMMENT_LIMIT
    lines = text.splitlines()
    assert lines[1] == {"mlp": "## ⚠️ diffai: warn"}.get(kind, "## ❌ diffai: fail")
    assert re.match(r"(Only warnings: 1 warning check|\d error checks?) failed", lines[3])
    assert "True" not in text and "False" not in text


def _section(text: str, heading: str) -> str:
    return text.split(f"### {heading}", 1)[1].split("\n### ", 1)[0]


def test_the_decoder_shows_its_depth_profile_from_zero_and_a_table_per_block(model_documents):
    text = render_markdown(model_documents["decoder"])
    where = _section(text, "Where the change is")
    assert 'x-axis "block index" 0 --> 31' in where
    assert 'y-axis "relative change (%)" 0 --> 20' in where
    assert where.count("    line [") == 3  # attention, MLP, norms
    assert "Lines: 🟦 attention · 🟧 MLP · 🟪 norms." in where
    rows = re.findall(r"^\| (\d+) \| .*\|", where, re.M)
    assert rows == [str(block) for block in range(32)]
    assert re.search(r"^\| 7 \| ‼️ \| 🟡 1.7% \| 🟢 0.29% \| $", where, re.M)
    assert re.search(r"^\| 20 \| 🟡 1.8% \| 🟠 12% \| ", where, re.M)


def test_the_decoder_flags_its_nan_tensor_everywhere(model_documents):
    text = render_markdown(model_documents["decoder"])
    name = "<code>model.<wbr>layers.<wbr>7.<wbr>self&#95;attn.<wbr>v&#95;proj.<wbr>weight</code>"
    assert f"- ‼️ **gained NaN** (critical): {name}" in _section(text, "Anomalies")
    assert f"| {name} | ‼️ gained NaN/Inf |" in text
    failed = _section(text, "Failed checks")
    assert "- ❌ <code>regression&#95;test.<wbr>fail&#95;on&#95;nan</code> (error)" in failed
    assert "observed 1, threshold true" in failed


def test_the_moe_names_its_worst_tensors_and_says_what_it_left_out(model_documents):
    document = model_documents["moe"]
    text = render_markdown(document)
    failed = _section(text, "Failed checks")
    assert failed.count("<code>model.") == 5 and "and 67 more" in failed
    assert len(re.findall(r"^\| \d+ \| ", _section(text, "Where the change is"), re.M)) == 48
    hidden = re.search(r"Left out to stay within GitHub's size limit: ([\d,]+) tensors", text)
    shown = text.count("\n| <code>model.")
    assert hidden and int(hidden[1].replace(",", "")) + shown == len(document["tensors"])
    summary = render_markdown(document, limit=SUMMARY_LIMIT)  # the step summary shows more
    assert len(summary.encode()) <= SUMMARY_LIMIT and summary.count("\n| <code>model.") > 5 * shown


def test_the_mlp_shows_its_layers_in_order_from_zero_and_one_icon_per_check(model_documents):
    text = render_markdown(model_documents["mlp"])
    layers = _section(text, "Most-changed layers")
    assert 'x-axis ["fc1", "fc2"]' in layers and "bar [3.8932, 27.8035]" in layers
    assert 'y-axis "relative change (%)" 0 --> 50' in layers
    rule = code("regression_test.overrides[0].max_relative_change")
    assert f"- ⚠️ {rule} (warning)" in text and f"| ⚠️ | {rule} | warning |" in text
    assert f"| ✅ | {code('regression_test.allow_removed')} | error | 0 | false |" in text
    assert "5 tensors compared: 4 changed, 1 added; none removed, reshaped or re-typed." in text
