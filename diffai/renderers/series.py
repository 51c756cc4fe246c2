"""``diffai audit``'s outputs: the series as text lines, a markdown page and an HTML page.

Both read the series document (``Series.to_document``), never the comparisons. The
markdown's charts hold only numbers and checkpoint numbers: names come from model
files and reach the page only as entity-encoded code in the legend and the table
(the audit issue's rule, ``renderers/audit.py``).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from diffai._version import __version__
from diffai.renderers.audit import PALETTE, SWATCHES, Chart, clip
from diffai.renderers.html_report import self_contained_page
from diffai.renderers.markdown import ICONS, code, num, pct, plural, text
from diffai.text import one_line

if TYPE_CHECKING:
    from jinja2 import Template

#: Layers drawn in the markdown chart (one line each, a swatch each) and shown in the text.
CHART_LAYERS = 3
TEXT_LAYERS = 8
#: Rows of the HTML page's heatmap: enough to see where drift sits, few enough to read.
HTML_LAYERS = 40
SPARKS = "▁▂▃▄▅▆▇█"


def render_series_text(document: dict[str, Any]) -> str:
    checkpoints = document["checkpoints"]
    lines = [
        f"audit: {plural(len(checkpoints) + 1, 'checkpoint')} in natural order, each against "
        f"the one before (step) and the first (drift), from {one_line(document['first'])}",
        f"  {'#':>3}  {'step':>9}  {'drift':>9}  {'step verdict':<12}  {'readiness':>9}  path",
    ]
    lines += [_checkpoint_line(number, c) for number, c in enumerate(checkpoints, start=2)]
    trend = document["trend_layers"][:TEXT_LAYERS]
    if trend:
        lines.append("drift of the most-drifted layers, checkpoint 2 to the last:")
        width = max(len(one_line(name)) for name in trend)
        lines += [_trend_line(name, checkpoints, width) for name in trend]
    lines.append(f"verdict: {document['verdict']} (the worst step's)")
    return "\n".join(lines) + "\n"


def _checkpoint_line(number: int, checkpoint: dict[str, Any]) -> str:
    step, drift = checkpoint["step"], checkpoint["drift"]
    return (
        f"  {number:>3}  {pct(step['relative_change']):>9}  {pct(drift['relative_change']):>9}  "
        f"{step['verdict']:<12}  {num(step['readiness'], 3):>9}  {one_line(checkpoint['path'])}"
    )


def _trend_line(name: str, checkpoints: list[dict[str, Any]], width: int) -> str:
    values = [c["drift"]["layers"].get(name) for c in checkpoints]
    return f"  {one_line(name):<{width}}  {sparkline(values)}  {pct(values[-1])}"


def sparkline(values: list[float | None]) -> str:
    """One block per checkpoint, scaled from zero to the largest; a space where unmeasured."""
    largest = max((v for v in values if v is not None), default=0.0)
    if not largest:
        return "".join(" " if v is None else SPARKS[0] for v in values)
    top = len(SPARKS) - 1
    return "".join(" " if v is None else SPARKS[round(top * v / largest)] for v in values)


def render_series_markdown(document: dict[str, Any]) -> str:
    checkpoints = document["checkpoints"]
    return _template().render(
        doc=document,
        icon=ICONS[document["verdict"]],
        icons=ICONS,
        count=len(checkpoints) + 1,
        model_chart=model_chart(checkpoints),
        layer_chart=layer_chart(checkpoints, document["trend_layers"]),
        palette=", ".join(PALETTE),
    )


def model_chart(checkpoints: list[dict[str, Any]]) -> Chart | None:
    """The whole model's drift and step, over the checkpoints that measured both."""
    lines = [
        [c["drift"]["relative_change"] for c in checkpoints],
        [c["step"]["relative_change"] for c in checkpoints],
    ]
    legend = [(SWATCHES[0], "drift from the first"), (SWATCHES[1], "step from the one before")]
    return _chart(lines, legend)


def layer_chart(checkpoints: list[dict[str, Any]], trend: list[str]) -> Chart | None:
    names = trend[:CHART_LAYERS]
    lines = [[c["drift"]["layers"].get(name) for c in checkpoints] for name in names]
    return _chart(lines, list(zip(SWATCHES, names, strict=False)))


def _chart(lines: list[list[float | None]], legend: list[tuple[str, str]]) -> Chart | None:
    """Checkpoints 2.. on the x axis; None when a line misses a point (a line cannot skip one,
    and a made-up zero would pose as a measurement) or there are fewer than two."""
    if not lines or any(value is None for line in lines for value in line) or len(lines[0]) < 2:
        return None
    labels = [f'"{number}"' for number in range(2, len(lines[0]) + 2)]
    series = [[f"{value:.6g}" for value in line] for line in lines]
    return Chart(labels, series, legend)


def axis_top(chart: Chart) -> str:
    """The y axis from zero to a tenth above the largest value: bars and lines start at zero."""
    largest = max(float(value) for line in chart.series for value in line)
    return f"{largest * 1.1 or 1:.3g}"


def render_series_html(document: dict[str, Any]) -> str:
    """The series as one self-contained page (the report page's shell, style and rules)."""
    return self_contained_page("diffai audit", "series", series_page_data(document))


def series_page_data(document: dict[str, Any]) -> dict[str, Any]:
    """What the page draws: a row per checkpoint, the heatmap's layers and their drifts."""
    checkpoints = document["checkpoints"]
    last = checkpoints[-1]["drift"]["layers"]
    measured = sorted((name for name in last if last[name] is not None), key=lambda n: -last[n])
    layers = measured[:HTML_LAYERS]
    return {
        "verdict": document["verdict"],
        "first": document["first"],
        "policy": document["policy"] or "default",
        "version": __version__,
        "checkpoints": [_page_row(checkpoint) for checkpoint in checkpoints],
        "layers": layers,
        "layer_count": len(last),
        "cells": [[c["drift"]["layers"].get(name) for c in checkpoints] for name in layers],
    }


def _page_row(checkpoint: dict[str, Any]) -> list[Any]:
    step, drift = checkpoint["step"], checkpoint["drift"]
    return [
        checkpoint["path"], step["relative_change"], drift["relative_change"],
        step["verdict"], step["readiness"], step["tensors_changed"],
    ]  # fmt: skip


@cache
def _template() -> Template:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    environment = SandboxedEnvironment(
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False
    )
    environment.filters.update(
        code=code, text=text, pct=pct, num=num, clip=clip, plural=plural, axis_top=axis_top
    )
    source = resources.files("diffai.renderers").joinpath("templates/series.md.j2").read_text()
    return environment.from_string(source)
