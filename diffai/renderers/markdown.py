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

import bisect
import itertools
import re
from collections import Counter
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from jinja2 import Template

from diffai.components import COMPONENT_LABELS
from diffai.renderers import comment_view as view
from diffai.renderers.adapter import adapter_view
from diffai.renderers.analysis_lines import LINE_KEYS, analysis_lines
from diffai.renderers.comment_view import plural
from diffai.renderers.depth import DepthGrid, GridCells, gained_non_finite, tensor_change
from diffai.renderers.functional_lines import (
    COLUMNS,
    functional_lines,
    measured_cells,
    probes_sentence,
)
from diffai.renderers.outcome import all_checks
from diffai.renderers.text import mapping_sentences
from diffai.text import escaped

COMMENT_LIMIT = 65_536
#: GitHub's step summary takes up to 1 MiB (bytes; a few characters take 4): more of the table.
SUMMARY_LIMIT = 900_000
BAR_WIDTH = 12
#: A table row's characters besides its name: ``| <code></code> |  |  |  |`` and a newline.
MIN_ROW_CHARS = 27
#: Everything but these is written as an entity.
_UNSAFE = re.compile(r"[^A-Za-z0-9 .,/=+()-]")
ICONS = {"pass": "✅", "warn": "⚠️", "fail": "❌"}


def render_markdown(document: dict[str, Any], marker: str = "", limit: int = COMMENT_LIMIT) -> str:
    """The comment body; ``marker`` (a hidden HTML comment) lets a bot find its own comment.

    Within ``limit`` characters: the tensor table, the last section, is cut to fit and
    the comment says how many rows it left out.
    """
    grid, tensors = _walked(document["tensors"], limit)
    context = _context(document, marker, grid)
    rows = _most_rows(tensors, limit)
    count = len(document["tensors"])
    text = _render(context, tensors[:rows], count)
    while len(text) > limit and rows:
        rows = max(0, int(rows * limit * 0.95 / len(text)) - 1)
        text = _render(context, tensors[:rows], count)
    return text


def _walked(
    tensors: list[dict[str, Any]], limit: int
) -> tuple[DepthGrid | None, list[dict[str, Any]]]:
    """The depth grid, and the table's first rows: as many as ``limit`` could hold were
    every name empty, in the table's order (NaN/Inf gained, then structural changes with
    nothing to measure, then by relative change, unchanged last; ties in report order).

    One walk over the tensors fills the grid and finds the order's groups; only the
    measured ones are ranked (``_largest_first``). Sorting all
    100,000 tensors for the 2,400 rows a comment can show, after a walk of their own for
    the grid, took 0.9 s.
    """
    most = limit // MIN_ROW_CHARS + 1
    cells = GridCells()
    flagged, unmeasured, measured, unchanged = [], [], [], []
    values: list[float] = []  # of the measured, beside them: no tuple per tensor for the GC
    for tensor in tensors:
        gained, value = gained_non_finite(tensor), tensor_change(tensor)
        cells.add(tensor, gained, value)
        if gained:
            flagged.append(tensor)
        elif tensor["status"] == "unchanged":
            unchanged.append(tensor)
        elif value is None:
            unmeasured.append(tensor)
        else:
            measured.append(tensor)
            values.append(value)
    first = (flagged + unmeasured)[:most]
    first += map(measured.__getitem__, _largest_first(values, most - len(first)))
    return cells.grid(), first + unchanged[: most - len(first)]


def _largest_first(values: list[float], count: int) -> list[int]:
    """The indices of the ``count`` largest values, largest first, ties in their order: a
    stable numpy argsort of 100,000 values takes 15 ms, where ``heapq.nlargest`` of the
    33,000 a step summary may show took 0.5 s (and ``sorted`` 90 ms)."""
    if count <= 0:
        return []
    order = np.argsort(-np.array(values, dtype=np.float64), kind="stable")
    return order[:count].tolist()  # type: ignore[no-any-return]


def _most_rows(tensors: list[dict[str, Any]], limit: int) -> int:
    """The rows that could fit at most, each taking ``MIN_ROW_CHARS`` plus its name: at 100,000
    tensors the first render of every row took 10 of the comment's 12 s."""
    sizes = list(itertools.accumulate(MIN_ROW_CHARS + len(t["name"]) for t in tensors))
    return bisect.bisect_right(sizes, limit)


def _render(context: dict[str, Any], shown: list[dict[str, Any]], count: int) -> str:
    return _template().render(**context, tensors=shown, hidden_tensors=count - len(shown))


def _context(document: dict[str, Any], marker: str, grid: DepthGrid | None) -> dict[str, Any]:
    rows = grid.rows(view.DEPTH_ROWS) if grid else []
    layers, measured_layers = view.chosen_layers(document["layers"])
    checks = all_checks(document)
    return {
        "doc": document,
        "marker": marker,
        "icon": ICONS[document["verdict"]],
        "why": view.why(document),
        "summary_sentence": view.summary_sentence(document["summary"]),
        "names": mapping_sentences(document.get("mapping")),
        "failed_checks": view.failed_views(document),
        "grid": grid,
        "depth_rows": rows,
        "depth_chart": view.depth_chart(grid, rows) if grid else None,
        "layers": [] if grid else layers,
        "measured_layers": measured_layers,
        "layer_chart": None if grid else view.layer_chart(layers),
        "anomalies": view.anomaly_groups(document),
        "analyses": [line.split(": ", 1) for line in analysis_lines(document, LINE_KEYS)],
        "checks": [{**check, "icon": view.check_icon(check)} for check in checks],
        "check_counts": Counter(check["status"] for check in checks),
        "labels": COMPONENT_LABELS,
        "band_legend": view.BAND_LEGEND,
        "functional": functional_view(document.get("functional")),
        "adapter": adapter_view(document.get("adapter")),
    }


def functional_view(section: dict[str, Any] | None) -> dict[str, Any] | None:
    """The outputs' table of the comment, or the one line saying why none ran."""
    if section is None:
        return None
    if section["status"] != "compared":
        return {"line": functional_lines(section)[0].removeprefix("functional: ")}
    rows = [
        {"name": o["name"], "status": o["status"], **measured_cells(o)} for o in section["outputs"]
    ]
    return {"probes": probes_sentence(section), "rows": rows, "columns": [c[1] for c in COLUMNS]}


def text(value: str) -> str:
    """Untrusted text with every markdown or HTML special character as an entity, and every
    invisible one visibly escaped first (an entity for U+202E would still reorder the page)."""
    return _UNSAFE.sub(_entity, escaped(value))  # one C pass: per character took 12 of 40 s


def _entity(match: re.Match[str]) -> str:
    return f"&#{ord(match.group())};"


def code(name: str) -> str:
    """An untrusted name as inline code that no markdown or HTML in it can escape; it may
    wrap after a dot (``<wbr>``), so a long name never widens the page."""
    return f"<code>{text(name).replace('.', '.<wbr>')}</code>"


def pct(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value * 100:.{digits}f}%"


def change(diff: dict[str, Any]) -> str:
    """The relative change the policy judges, and its basis where it is not the tensor's own."""
    shown = view.percent(diff["relative_change"])
    basis = diff.get("relative_basis", "self")
    return shown if basis == "self" else f"{shown} of {basis}"


def num(value: Any, digits: int = 4) -> str:
    """A check's observed value or threshold; booleans as in the policy file (``true``)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return text(str(value))


def bar(value: float | None, largest: float | None) -> str:
    if not value or not largest:
        return ""
    filled = max(1, round(BAR_WIDTH * value / largest))
    return "█" * filled + "░" * (BAR_WIDTH - filled)


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
        percent=view.percent,
        band=view.band,
        status=view.tensor_status,
    )
    source = resources.files("diffai.renderers").joinpath("templates/comment.md.j2").read_text()
    return environment.from_string(source)
