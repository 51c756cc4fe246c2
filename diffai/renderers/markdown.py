"""The pull-request comment: verdict first, then failed checks, layers, analyses, every tensor.

Rendered from ``templates/comment.md.j2`` by a sandboxed Jinja environment;
numbers and names are formatted by the filters below, never in the template.
Tensor names come from untrusted files, so ``code`` turns every character
outside a small safe set into an HTML entity: no name can open a link,
mention someone, close a table cell or inject HTML, and no invisible
character (a bidirectional override) can make it read as another name. The comment is kept under
GitHub's 65,536-character limit by trimming the tensor table, with a note
pointing at the JSON report.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2 import Template

from diffai.renderers.analysis_lines import LINE_KEYS, analysis_lines
from diffai.renderers.outcome import all_checks, failed_checks
from diffai.text import escaped

COMMENT_LIMIT = 65_536
TOP_LAYERS = 15
CHART_LAYERS = 30
CHECK_TENSORS = 10
CHART_LABEL = 28
BAR_WIDTH = 12
_SAFE = re.compile(r"[A-Za-z0-9 .,/=+()-]")
_CHART_SAFE = re.compile(r"[^A-Za-z0-9._/-]")
ICONS = {"pass": "✅", "warn": "⚠️", "fail": "❌"}


def render_markdown(document: dict[str, Any], marker: str = "") -> str:
    """The comment body; ``marker`` (a hidden HTML comment) lets a bot find its own comment."""
    tensors = sorted(document["tensors"], key=_table_order)
    rows = len(tensors)
    text = _render(document, tensors, rows, marker)
    while len(text) > COMMENT_LIMIT and rows:
        rows = max(0, int(rows * COMMENT_LIMIT * 0.95 / len(text)) - 1)
        text = _render(document, tensors, rows, marker)
    return text


def _render(document: dict[str, Any], tensors: list[dict[str, Any]], rows: int, marker: str) -> str:
    return _template().render(
        doc=document,
        marker=marker,
        icon=ICONS[document["verdict"]],
        failed_checks=failed_checks(document),
        checks=all_checks(document),
        top_layers=_top_layers(document["layers"]),
        chart_layers=_chart_layers(document["layers"]),
        analysis_lines=analysis_lines(document, LINE_KEYS),
        tensors=tensors[:rows],
        hidden_tensors=len(tensors) - rows,
        changed=[t for t in document["tensors"] if t["status"] != "unchanged"],
        check_tensors=CHECK_TENSORS,
    )


def _table_order(tensor: dict[str, Any]) -> tuple[int, float]:
    """Structural changes first, then by relative change, unchanged last."""
    if tensor["status"] == "unchanged":
        return (2, 0.0)
    diff = tensor["diff"]
    if diff is None or diff["relative_change"] is None:
        return (0, 0.0)
    return (1, -diff["relative_change"])


def _top_layers(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    measured = [layer for layer in layers if layer["relative_l2"]]
    return sorted(measured, key=lambda layer: -layer["relative_l2"])[:TOP_LAYERS]


def _chart_layers(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The most-changed layers, kept in model order so the chart reads as a depth profile."""
    measured = [layer for layer in layers if layer["relative_l2"] is not None]
    keep = {id(layer) for layer in sorted(measured, key=lambda x: -x["relative_l2"])[:CHART_LAYERS]}
    return [layer for layer in measured if id(layer) in keep]


def text(value: str) -> str:
    """Untrusted text with every markdown or HTML special character as an entity, and every
    invisible one visibly escaped first (an entity for U+202E would still reorder the page)."""
    return "".join(ch if _SAFE.fullmatch(ch) else f"&#{ord(ch)};" for ch in escaped(value))


def code(name: str) -> str:
    """An untrusted name as inline code that no markdown or HTML in it can escape."""
    return f"<code>{text(name)}</code>"


def chart_label(name: str) -> str:
    """A short quoted axis label: the last dotted parts of the name that fit, safe for Mermaid."""
    parts = _CHART_SAFE.sub("_", name).split(".")
    label = parts.pop()
    while parts and len(parts[-1]) + len(label) < CHART_LABEL:
        label = f"{parts.pop()}.{label}"
    return f'"{".." if parts else ""}{label[-CHART_LABEL:]}"'


def pct(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value * 100:.{digits}f}%"


def change(diff: dict[str, Any]) -> str:
    """The relative change the policy judges, and its basis where it is not the tensor's own."""
    shown = pct(diff["relative_change"])
    basis = diff.get("relative_basis", "self")
    return shown if basis == "self" else f"{shown} of {basis}"


def num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return text(str(value))


def bar(value: float | None, largest: float | None) -> str:
    if not value or not largest:
        return ""
    filled = max(1, round(BAR_WIDTH * value / largest))
    return "█" * filled + "░" * (BAR_WIDTH - filled)


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@cache
def _template() -> Template:
    # Imported here: jinja2 costs start-up time and only --markdown needs it.
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    environment = SandboxedEnvironment(
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False
    )
    environment.filters.update(
        code=code,
        text=text,
        pct=pct,
        change=change,
        num=num,
        bar=bar,
        plural=plural,
        chart_label=chart_label,
    )
    source = resources.files("diffai.renderers").joinpath("templates/comment.md.j2").read_text()
    return environment.from_string(source)
