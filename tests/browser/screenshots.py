"""Regenerate the README's screenshots: ``python -m tests.browser.screenshots`` (from the root).

The 32-block decoder fixture's comment (as GitHub draws it) and its HTML report, the
top of each at 780 px, written to docs/images/ and shrunk by pngquant when it is installed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import diffai
from diffai.renderers.html_report import render_html
from diffai.renderers.markdown import render_markdown
from tests.browser import pages
from tests.browser.cdp import Browser
from tests.model_fixtures import ROOT, write_models

IMAGES = ROOT / "docs" / "images"
HEIGHT = 1500


def main() -> None:
    pages.install()
    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        base, cand, policy = write_models(Path(folder), "decoder")
        document = diffai.compare(base, cand, policy=policy).document
        document["baseline"]["path"], document["candidate"]["path"] = "base/", "tuned/"
        document["policy"]["source"] = "policy.yaml"
        comment = pages.comment_page(render_markdown(document), Path(folder) / "comment.html")
        report = Path(folder) / "report.html"
        report.write_text(render_html(document))
        browser = Browser()
        try:
            for page, name in ((comment, "comment-decoder.png"), (report, "report-decoder.png")):
                browser.open(page, "document.body.dataset.ready")
                browser.screenshot(IMAGES / name, height=HEIGHT)
        finally:
            browser.close()
    quantizer = shutil.which("pngquant")
    for image in IMAGES.glob("*-decoder.png"):
        if quantizer:
            subprocess.run([quantizer, "--force", "--skip-if-larger", "--output", str(image),
                            "64", str(image)], check=False)  # fmt: skip
        print(image.relative_to(ROOT), image.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
