"""The PR comment as GitHub shows it: cmark-gfm's HTML in github-markdown-css, Mermaid drawn.

The stylesheet and Mermaid come from this folder's pinned npm packages
(``npm ci`` here); the page loads them from disk, never from the network.
GitHub renders the comment in a column about 780 px wide; so does this page.
"""

from __future__ import annotations

import html
import shutil
import subprocess
from pathlib import Path

import cmarkgfm

HERE = Path(__file__).resolve().parent
MODULES = HERE / "node_modules"
CSS = MODULES / "github-markdown-css" / "github-markdown-light.css"
MERMAID = MODULES / "mermaid" / "dist" / "mermaid.min.js"
COLUMN = 780

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="{css}">
<style>
body {{ margin: 0; background: #fff; }}
.markdown-body {{ box-sizing: border-box; width: {column}px; padding: 16px;
  font-family: -apple-system, "Segoe UI", "Noto Sans", Helvetica, Arial, sans-serif,
    "Noto Color Emoji"; }}
</style></head>
<body><article class="markdown-body" id="comment">{body}</article>
<script src="{mermaid}"></script>
<script>
document.querySelectorAll('pre[lang="mermaid"]').forEach((pre) => {{
  const chart = document.createElement("div");
  chart.className = "mermaid";
  chart.textContent = pre.textContent;
  pre.replaceWith(chart);
}});
mermaid.initialize({{ startOnLoad: false, theme: "default" }});
mermaid.run({{ querySelector: ".mermaid" }})
  .then(() => {{ document.body.dataset.ready = "1"; }})
  .catch((error) => {{ console.error("mermaid: " + error); document.body.dataset.ready = "1"; }});
</script></body></html>
"""


def installed() -> bool:
    return CSS.is_file() and MERMAID.is_file()


def install() -> None:
    """``npm ci`` in this folder, when npm is there and the packages are not."""
    npm = shutil.which("npm")
    if not installed() and npm:
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=HERE,
                       check=True, capture_output=True, timeout=600)  # fmt: skip


def comment_html(markdown: str) -> str:
    """What GitHub's renderer makes of the comment (raw HTML kept: GitHub then sanitises it)."""
    options = cmarkgfm.Options.CMARK_OPT_UNSAFE | cmarkgfm.Options.CMARK_OPT_GITHUB_PRE_LANG
    return cmarkgfm.github_flavored_markdown_to_html(markdown, options)


def comment_page(markdown: str, path: Path, title: str = "diffai comment") -> Path:
    page = _PAGE.format(
        title=html.escape(title),
        css=CSS.as_uri(),
        mermaid=MERMAID.as_uri(),
        column=COLUMN,
        body=comment_html(markdown),
    )
    path.write_text(page)
    return path
