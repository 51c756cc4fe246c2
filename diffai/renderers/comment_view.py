"""What the PR comment says, worked out before the template lays it out.

The template only places these pieces; every sentence that depends on counts
(the verdict's why, the summary, "and 12 more") and every chart's numbers are
made here, so they can be tested and trimmed. Charts never carry a tensor or
layer name that is not reduced to ``[A-Za-z0-9._/-]`` first: Mermaid has no
escaping to rely on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from diffai.components import COMPONENT_LABELS
from diffai.renderers.depth import Cell, DepthGrid, Row, gained_non_finite
from diffai.renderers.outcome import failed_checks

#: Names shown per failed check and per kind of anomaly before "and N more".
WORST_SHOWN = 5
#: Rules named in the verdict's why line.
WHY_RULES = 3
#: Rows of the depth table and points of the depth chart; more blocks are merged in runs.
DEPTH_ROWS = 64
#: Layers in the chart and table of a model without numbered blocks.
CHART_LAYERS = 12
CHART_LABEL = 16
NON_FINITE = "‼️"
CHECK_ICONS = {("fail", "error"): "❌", ("fail", "warning"): "⚠️"}
STATUS_ICONS = {"pass": "✅", "skip": "⏭️"}
#: Circles for the size of a change; squares name the chart's lines. Upper bounds, in order.
BANDS = ((0.01, "🟢"), (0.05, "🟡"), (0.2, "🟠"), (math.inf, "🔴"))
BAND_LEGEND = "⚪ unchanged · 🟢 < 1% · 🟡 1-5% · 🟠 5-20% · 🔴 ≥ 20% · ‼️ gained NaN/Inf"
#: Mermaid's xychart draws its lines in palette order; the swatches in the legend match.
SERIES_COLOURS = {
    "attention": ("#1f77b4", "🟦"),
    "mlp": ("#ff7f0e", "🟧"),
    "experts": ("#2ca02c", "🟩"),
    "norm": ("#9467bd", "🟪"),
    "other": ("#8c564b", "🟫"),
}
ANOMALY_LABELS = {
    "nan_gained": "gained NaN",
    "inf_gained": "gained ±Inf",
    "exploding": "exploding",
    "collapsed": "collapsed to zero",
    "constant": "became constant",
    "std_collapse": "std collapsed",
}
_UNSAFE_LABEL = re.compile(r"[^A-Za-z0-9._/-]")


def check_icon(check: dict[str, Any]) -> str:
    """One icon per (status, severity), the same in every table and list of the comment."""
    return CHECK_ICONS.get((check["status"], check["severity"])) or STATUS_ICONS[check["status"]]


@dataclass(frozen=True)
class Shown:
    """The first few of a list of names, and how many more there are."""

    names: list[str]
    more: int


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}" if count == 1 else f"{count:,} {word}s"


def first(names: list[str], count: int = WORST_SHOWN) -> Shown:
    return Shown(names[:count], max(0, len(names) - count))


def why(document: dict[str, Any]) -> dict[str, Any]:
    """The second line: which rules decided the verdict (errors first), or that all passed."""
    failed = failed_checks(document)
    errors = [c for c in failed if c["severity"] == "error"]
    deciding = errors or failed
    return {
        "errors": len(errors),
        "warnings": len(failed) - len(errors),
        "rules": first([c["rule"] for c in deciding], WHY_RULES),
        "tensors": {c["rule"]: len(c.get("tensors", [])) for c in deciding},
    }


def summary_sentence(summary: dict[str, int]) -> str:
    """``291 tensors compared: 290 changed, 1 unchanged; none added, removed, reshaped or
    re-typed``: what happened, then what did not."""
    counts = {"changed": summary["changed"], "unchanged": summary["unchanged"],
              "renamed": summary.get("renamed", 0)}  # fmt: skip
    structural = {
        "added": summary["added"],
        "removed": summary["removed"],
        "reshaped": summary["shape_changed"],
        "re-typed": summary["dtype_changed"],
    }
    happened = [f"{n:,} {word}" for word, n in {**counts, **structural}.items() if n]
    none = [word for word, n in structural.items() if not n]
    sentence = f"{summary['tensors_compared']:,} tensors compared: {', '.join(happened) or 'none'}"
    if none:
        sentence += f"; none {_joined(none, 'or')}"
    return sentence


def _joined(words: list[str], conjunction: str) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {conjunction} {words[-1]}"


def failed_views(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Each failed check with its worst few tensors (the report lists them worst first)."""
    return [
        {
            **check,
            "icon": check_icon(check),
            "worst": first(check.get("tensors", check.get("outputs", []))),
        }
        for check in failed_checks(document)
    ]


def anomaly_groups(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Findings grouped by kind, worst kind first as the analysis orders severities."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for finding in document["analyses"]["anomaly_detection"]["findings"]:
        groups.setdefault(finding["kind"], []).append(finding)
    return [
        {
            "label": ANOMALY_LABELS.get(kind, kind),
            "icon": NON_FINITE if kind in ("nan_gained", "inf_gained") else "⚠️",
            "severity": findings[0]["severity"],
            "worst": first([f["tensor"] for f in findings]),
        }
        for kind, findings in groups.items()
    ]


def band(cell: Cell | None) -> str:
    """A cell of the depth table: its circle and largest change, or a dot where nothing is."""
    if cell is None:
        return "·"
    if cell.non_finite:
        return NON_FINITE
    if not cell.largest:
        return "⚪" if cell.largest == 0 or not cell.changed else "n/a"
    circle = next(icon for bound, icon in BANDS if cell.largest < bound)
    return f"{circle} {percent(cell.largest, 2)}"


def percent(value: float | None, digits: int = 3) -> str:
    """A relative change as a short percentage: 27.8%, 3.1%, 0.42%, <0.01%."""
    if value is None:
        return "n/a"
    shown = value * 100
    if shown == 0:
        return "0%"
    if shown < 0.01:
        return "<0.01%"
    return f"{shown:.{digits}g}%" if shown < 100 else f"{shown:,.0f}%"


@dataclass(frozen=True)
class Chart:
    """A Mermaid xychart: palette, axis ranges and one list of numbers per series."""

    palette: str
    legend: str
    x_axis: str
    y_max: str
    series: list[list[float]]
    kind: str = "line"


def depth_chart(grid: DepthGrid, rows: list[Row]) -> Chart:
    """One line per component over the block index, in percent, from zero."""
    components = grid.components
    series = [[round(row.value(c) * 100, 4) for row in rows] for c in components]
    legend = " · ".join(f"{SERIES_COLOURS[c][1]} {COMPONENT_LABELS[c]}" for c in components)
    return Chart(
        palette=", ".join(SERIES_COLOURS[c][0] for c in components),
        legend=legend,
        x_axis=f'"block index" {rows[0].first} --> {rows[-1].first}',
        y_max=nice_ceiling(max((max(s, default=0) for s in series), default=0)),
        series=series,
    )


def layer_chart(layers: list[dict[str, Any]]) -> Chart | None:
    """Bars for the chosen layers, in the order given, in percent, from zero."""
    if len(layers) < 2:
        return None
    values = [round(layer["relative_l2"] * 100, 4) for layer in layers]
    labels = ", ".join(chart_label(layer["name"]) for layer in layers)
    return Chart("#1f77b4", "", f"[{labels}]", nice_ceiling(max(values)), [values], "bar")


def nice_ceiling(value: float) -> str:
    """The smallest 1, 2 or 5 times 10ⁿ at or above ``value`` (1 for nothing): a round axis end."""
    if value <= 0 or not math.isfinite(value):
        return "1"
    power = 10.0 ** math.floor(math.log10(value))
    return f"{next(step * power for step in (1, 2, 5, 10) if step * power >= value):g}"


def chart_label(name: str) -> str:
    """A short quoted axis label: the last dotted parts of the name that fit, safe for Mermaid."""
    parts = _UNSAFE_LABEL.sub("_", name).split(".")
    label = parts.pop()
    while parts and len(parts[-1]) + len(label) < CHART_LABEL:
        label = f"{parts.pop()}.{label}"
    return f'"{".." if parts else ""}{label[-CHART_LABEL:]}"'


def chosen_layers(layers: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The most-changed measured layers, in name order with numbers by value; and of how many."""
    measured = [layer for layer in layers if layer["relative_l2"]]
    worst = sorted(measured, key=lambda layer: -layer["relative_l2"])[:CHART_LAYERS]
    return sorted(worst, key=lambda layer: natural_key(layer["name"])), len(measured)


def natural_key(name: str) -> list[tuple[int, int | str]]:
    """``layers.2`` before ``layers.10``: digit runs compare as numbers."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name)]


def tensor_status(tensor: dict[str, Any]) -> str:
    """The table's status cell: the structural change, spelled out, or a visible NaN/Inf flag."""
    base, cand = tensor["baseline"], tensor["candidate"]
    status = tensor["status"]
    if gained_non_finite(tensor):
        return f"{NON_FINITE} gained NaN/Inf"
    if status == "shape_changed":
        return f"reshaped {base['shape']}→{cand['shape']}"
    if status == "dtype_changed":
        return f"re-typed {base['stored_dtype']}→{cand['stored_dtype']}"
    if status == "renamed":
        return f"renamed ({tensor['rename']['match']})"
    if status in ("added", "removed"):
        side = cand or base
        return f"{status} {side['shape']} {side['dtype']}"
    return status

