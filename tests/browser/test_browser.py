"""The comment and the HTML report looked at in headless Chromium at a PR column's 780 px.

The comment goes through cmark-gfm, GitHub's stylesheet and Mermaid (pinned npm
packages in this folder); the report opens as the file a reviewer downloads.
Screenshots land in the test's tmp folder (``--basetemp`` keeps them). Skipped,
saying why, only outside CI when chromium is missing; ``.ci/run`` installs it.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from diffai.api import load_gate
from diffai.comparison import CompareOptions
from diffai.renderers.html_report import render_html
from diffai.renderers.markdown import render_markdown
from diffai.renderers.series import render_series_html
from diffai.series import audit_series
from tests.browser import looks, pages
from tests.browser.cdp import CHROMIUM, Browser
from tests.model_fixtures import KINDS

READY = "document.body.dataset.ready"
#: Budgets on this machine (2 cores shared): page usable, and a sort or filter answered.
LOAD_SECONDS, ANSWER_MS = 2.0, 300.0


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser check (.ci/run installs it)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        _unavailable("chromium is not installed (apt-get install chromium)")
    pages.install()
    if not pages.installed():
        _unavailable("tests/browser's npm packages are missing (npm ci in tests/browser)")
    opened = Browser()
    yield opened
    opened.close()


@pytest.mark.parametrize("kind", KINDS)
def test_the_comment_reads_in_a_780px_column(browser, model_documents, tmp_path, kind) -> None:
    document = model_documents[kind]
    page = pages.comment_page(render_markdown(document), tmp_path / f"{kind}-comment.html")
    browser.open(page, READY)
    browser.screenshot(tmp_path / f"{kind}-comment.png")
    heading = browser.evaluate("document.querySelector('#comment h2').textContent")
    assert heading.endswith(f"diffai: {document['verdict']}")
    assert browser.evaluate("document.querySelectorAll('.mermaid svg').length") == 1
    assert browser.evaluate(looks.OVERLAPPING_LABELS) == []
    browser.evaluate(looks.OPEN_DETAILS)
    assert browser.evaluate(looks.TOO_WIDE) == []
    assert browser.console_errors() == []


@pytest.mark.parametrize("kind", KINDS)
def test_the_report_draws_every_block_and_sorts_on_click(
    browser, model_documents, tmp_path, kind
) -> None:
    document = model_documents[kind]
    page = tmp_path / f"{kind}-report.html"
    page.write_text(render_html(document))
    browser.open(page, READY)
    assert _ready_seconds(browser) < LOAD_SECONDS
    browser.screenshot(tmp_path / f"{kind}-report.png")
    assert browser.requests() == [page.resolve().as_uri()]  # nothing fetched
    cells = browser.evaluate("document.querySelectorAll('#heatmap rect.cell').length")
    blocks = {"mlp": 2, "decoder": 32 * 3, "moe": 48 * 3}[kind]  # the MLP: one cell per layer
    assert cells == blocks
    looks.sort_time(browser, "name")
    names = browser.evaluate(looks.VISIBLE_NAMES)
    assert names == sorted(names) and len(names) == min(len(document["tensors"]), len(names))
    looks.sort_time(browser, "name")
    assert browser.evaluate(looks.VISIBLE_NAMES)[0] == max(t["name"] for t in document["tensors"])
    assert browser.console_errors() == []


def _ready_seconds(browser: Browser) -> float:
    """From navigation to the page drawn and its table usable, as the page measured it."""
    return int(browser.evaluate("document.body.dataset.readyAt")) / 1000


def _hundred_thousand(document: dict) -> dict:
    """The MoE's report with its tensors repeated under 11 prefixes: 105,105 tensors."""
    large = copy.deepcopy(document)
    large["tensors"] = [
        {**tensor, "name": f"replica{copy_}.{tensor['name']}"}
        for copy_ in range(11)
        for tensor in document["tensors"]
    ]
    return large


def test_the_report_answers_quickly_at_100000_tensors(browser, model_documents, tmp_path):
    for name, document in (
        ("moe", model_documents["moe"]),
        ("100k", _hundred_thousand(model_documents["moe"])),
    ):
        page = tmp_path / f"{name}.html"
        page.write_text(render_html(document))
        browser.open(page, READY)  # once to bring the file into the page cache, as a download is
        browser.open(page, READY)
        assert _ready_seconds(browser) < LOAD_SECONDS, name
        assert looks.sort_time(browser, "change") < ANSWER_MS, name
        assert looks.sort_time(browser, "name") < ANSWER_MS, name
        assert looks.filter_time(browser, "experts.5.") < ANSWER_MS, name
        assert browser.console_errors() == []


def test_the_audit_page_draws_the_series(browser, tmp_path) -> None:
    """Twelve checkpoints of a drifting 6-layer model: two lines, a heatmap, a table."""
    paths = []
    rng = np.random.default_rng(0)
    start = [rng.standard_normal((16, 16)).astype(np.float32) for _ in range(6)]
    for number in range(12):
        growth = 0.01 * number  # per checkpoint: 1 % on layer 0 ... 6 % on layer 5
        moved = {f"layers.{i}.weight": w * (1 + growth * (i + 1)) for i, w in enumerate(start)}
        paths.append(tmp_path / f"epoch_{number}.safetensors")
        save_file(moved, paths[-1])
    series = audit_series([str(p) for p in paths], CompareOptions(), load_gate(None))
    page = tmp_path / "audit.html"
    page.write_text(render_series_html(series.to_document()))
    browser.open(page, READY)
    browser.screenshot(tmp_path / "audit.png")
    assert browser.requests() == [page.resolve().as_uri()]
    assert browser.evaluate("document.querySelectorAll('#lines circle').length") == 2 * 11
    assert browser.evaluate("document.querySelectorAll('#heatmap rect.cell').length") == 6 * 11
    assert browser.evaluate("document.querySelectorAll('#checkpoints tbody tr').length") == 11
    top = browser.evaluate("document.querySelector('#heatmap svg text').textContent")
    assert top == "layers.5"  # moved 6 % a checkpoint: the most drifted first
    assert browser.evaluate("document.documentElement.scrollWidth <= innerWidth")
    assert browser.console_errors() == []
