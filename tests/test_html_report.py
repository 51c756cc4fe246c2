"""``--html``: one self-contained page, small per tensor, every number from the report."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import pytest

from diffai.renderers.html_report import page_data, render_html
from tests.model_fixtures import KINDS

#: Bytes per tensor the page may grow by beyond its fixed part (docs/outputs.md states it).
BYTES_PER_TENSOR = 400


def front_decoded(coded: list) -> list[str]:
    names, previous = [], ""
    for shared, rest in zip(coded[::2], coded[1::2], strict=True):
        previous = previous.encode("utf-16-le")[: 2 * shared].decode("utf-16-le") + rest
        names.append(previous)
    return names


def _data(page: str) -> dict:
    block = re.search(r'<script type="application/json" id="diffai-data">(.*?)</', page, re.S)
    assert block
    return json.loads(block[1])


@pytest.mark.parametrize("kind", KINDS)
def test_the_page_fetches_nothing_and_runs_only_its_own_script(model_documents, kind) -> None:
    page = render_html(model_documents[kind])
    assert not re.search(r"(src|href)\s*=|https?://|@import|url\((?!#)", page.split("<script>")[0])
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)[1]
    assert "default-src 'none'" in csp
    for kind_, tag in (("style", "style"), ("script", "script")):
        inline = re.search(rf"<{tag}>(.*?)</{tag}>", page, re.S)[1]
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert f"{kind_}-src 'sha256-{digest}'" in csp
    assert page.count("<script") == 2 and page.count("</script>") == 2


def test_the_page_costs_at_most_400_bytes_per_tensor(model_documents) -> None:
    small, large = model_documents["mlp"], model_documents["moe"]
    growth = len(render_html(large).encode()) - len(render_html(small).encode())
    assert growth / (len(large["tensors"]) - len(small["tensors"])) <= BYTES_PER_TENSOR


def test_the_data_holds_every_tensor_and_the_grid_of_every_block(model_documents) -> None:
    data = _data(render_html(model_documents["decoder"]))
    names = front_decoded(data["tensors"]["names"])
    assert names == [tensor["name"] for tensor in model_documents["decoder"]["tensors"]]
    assert data["grid"]["blocks"] == list(range(32))
    assert data["grid"]["components"] == ["attention", "MLP", "norms"]
    assert len(data["grid"]["cells"]) == 3 * 32
    assert data["grid"]["cells"][7][1] == 1  # attention of block 7 gained a NaN
    flagged = [n for n, f in zip(names, data["tensors"]["flag"], strict=True) if f]
    assert flagged == ["model.layers.7.self_attn.v_proj.weight"]
    assert sum(data["histogram"]["counts"]) + data["histogram"]["zero"] == 291


def test_a_model_without_blocks_shows_its_layers(model_documents) -> None:
    data = page_data(model_documents["mlp"])
    assert data["grid"] is None and [name for name, _ in data["layers"]] == ["fc1", "fc2"]
    assert data["why"].startswith("1 warning check failed: regression_test.overrides[0]")
    rule = next(c for c in data["checks"] if c[1] == "regression_test.allow_removed")
    assert rule[:6] == ["✅", "regression_test.allow_removed", "error", "pass", "0", "false"]


def test_cli_writes_the_page(run_cli, tmp_path) -> None:
    page = tmp_path / "report.html"
    result = run_cli("examples/baseline.safetensors", "examples/candidate.safetensors",
                     "--html", page, "-q")  # fmt: skip
    assert result.code == 1 and page.read_text().startswith("<!DOCTYPE html>")
