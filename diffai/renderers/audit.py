"""The audit issue's body: the verdict, the trend over the last runs, the latest report.

Rendered from ``templates/audit.md.j2`` with the PR comment's escaping filters (``code``,
``text``): layer names come from model files, and the older runs' names from an issue
body that anyone with write access can edit. Names therefore never enter a Mermaid
chart, which holds only numbers and dates; they appear in the legend and the table as
entity-encoded code. Charts are drawn over the longest run of recent runs for which
every line has a value, since an xychart line cannot skip a point and a made-up zero
would pose as a measurement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from diffai.renderers.markdown import ICONS, code, num, pct, plural, text

if TYPE_CHECKING:
    from jinja2 import Template

    from diffai.ci.history import RunSummary

CHART_LINES = 3
TABLE_LAYERS = 3
TABLE_RUNS = 30
NAME_SHOWN = 48  # characters of a layer name in the table: the row stays one line
# Mermaid's xychart draws its lines in palette order; the legend's squares match them.
PALETTE = ("#d62728", "#1f77b4", "#2ca02c")
SWATCHES = ("🟥", "🟦", "🟩")


@dataclass(frozen=True)
class Chart:
    """Quoted x labels and one list of numbers per line, all of the same length."""

    labels: list[str]
    series: list[list[str]]
    legend: list[tuple[str, str]]


def render_audit_issue(
    document: dict[str, Any],
    runs: Sequence[RunSummary],
    *,
    marker: str,
    summary_line: str,
    report: str,
    block: str,
) -> str:
    """The issue body; ``runs`` ends with this run, ``block`` is the hidden history."""
    return _template().render(
        marker=marker,
        doc=document,
        icon=ICONS[document["verdict"]],
        icons=ICONS,
        latest=runs[-1],
        runs=runs,
        summary_line=summary_line,
        readiness_chart=readiness_chart(runs),
        layer_chart=layer_chart(runs),
        palette=", ".join(PALETTE),
        table_layers=TABLE_LAYERS,
        table_runs=TABLE_RUNS,
        report=report,
        block=block,
    )


def readiness_chart(runs: Sequence[RunSummary]) -> Chart | None:
    return _chart(runs, [lambda run: run.readiness], [])


def layer_chart(runs: Sequence[RunSummary]) -> Chart | None:
    """The latest run's most-changed layers, one line each, over the runs that measured them."""
    names = [name for name, _ in runs[-1].layers[:CHART_LINES]]
    values = [_layer_value(name) for name in names]
    return _chart(runs, values, list(zip(SWATCHES, names, strict=False)))


def _layer_value(name: str) -> Callable[[RunSummary], float | None]:
    return lambda run: dict(run.layers).get(name)


def _chart(
    runs: Sequence[RunSummary],
    lines: list[Callable[[RunSummary], float | None]],
    legend: list[tuple[str, str]],
) -> Chart | None:
    """The longest suffix of runs where every line has a value; None below two points."""
    window: list[RunSummary] = []
    for run in reversed(runs):
        if not lines or any(line(run) is None for line in lines):
            break
        window.insert(0, run)
    if len(window) < 2:
        return None
    series = [[f"{line(run):.6g}" for run in window] for line in lines]
    return Chart([f'"{axis_date(run.date)}"' for run in window], series, legend)


def axis_date(date: str) -> str:
    """2024-05-06T06:00:00Z as ``05-06 06:00``: short enough for a dozen ticks."""
    return f"{date[5:10]} {date[11:16]}"


def clip(name: str) -> str:
    """A long layer name by its end, which tells layers apart: ``…layers.11.mlp``."""
    return name if len(name) <= NAME_SHOWN else "…" + name[-(NAME_SHOWN - 1) :]


def when(date: str) -> str:
    """2024-05-06T06:00:00Z as ``2024-05-06 06:00 UTC``."""
    return f"{date[:10]} {date[11:16]} UTC"


@cache
def _template() -> Template:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    environment = SandboxedEnvironment(
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False
    )
    filters = {"code": code, "text": text, "pct": pct, "num": num, "plural": plural}
    environment.filters.update(filters, when=when, clip=clip)
    source = resources.files("diffai.renderers").joinpath("templates/audit.md.j2").read_text()
    return environment.from_string(source)
