"""``--html FILE``: one self-contained page for the reviewer who opens the run's artifact.

The page is a static shell (``templates/report.html``, ``report.css``,
``report.js``) plus the report's numbers as JSON in a ``<script
type="application/json">`` block. Nothing is fetched: a Content-Security-Policy
meta tag allows no source at all except the page's own inline script and style,
named by their SHA-256, so even an injected ``<script>`` would not run.

Untrusted text (tensor names, paths, metadata, messages) enters the page only
inside that JSON block, where ``<``, ``>``, ``&`` and U+2028/2029 are
``\\u`` escapes (no ``</script>`` can end the block), and the script puts it on
the page only as text nodes and attribute values (``textContent``, never
``innerHTML``).

Charts are hand-written SVG built by the script: a vendored plotting library
would be 100 KB-1 MB of code to review and inline for two simple charts (a
heatmap and a histogram), and each SVG element here is made from numbers and
text nodes only. The tensor table is virtualised (only the rows in view are in
the DOM) and columnar in the JSON (about 100 bytes per tensor), so 100,000
tensors stay one responsive page.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from functools import cache
from importlib import resources
from typing import Any

from diffai.components import COMPONENT_LABELS
from diffai.renderers import comment_view as view
from diffai.renderers.adapter import adapter_view
from diffai.renderers.analysis_lines import LINE_KEYS, analysis_lines
from diffai.renderers.comment_view import plural
from diffai.renderers.depth import DepthGrid, GridCells, gained_non_finite, tensor_change
from diffai.renderers.outcome import all_checks
from diffai.renderers.text import mapping_sentences

STATUSES = (
    "changed", "unchanged", "added", "removed", "shape_changed", "dtype_changed", "renamed",
)  # fmt: skip
#: Histogram bins: 4 per decade of relative change from 1e-5 to 10 (0.001% to 1000%).
BINS_PER_DECADE = 4
LOWEST_DECADE, HIGHEST_DECADE = -5, 1
#: Replaced one by one (``str.replace`` runs in C): ``str.translate`` with a table took
#: 0.5 s over the 5 MB block of 100,000 tensors. No replacement holds what another replaces.
_JSON_ESCAPES = (
    ("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
    ("\u2028", "\\u2028"), ("\u2029", "\\u2029"),
)  # fmt: skip


def render_html(document: dict[str, Any]) -> str:
    """The report's page: shell, inline style and script, and the data block."""
    return self_contained_page("diffai report", "report", page_data(document))


def self_contained_page(title: str, name: str, data: Any) -> str:
    """A page of this package: ``page.html`` around its ``NAME.html``, the shared style,
    ``page.js`` and ``NAME.js`` in one strict function, and ``data`` as the JSON block."""
    style = asset("report.css")
    script = f'"use strict";\n(function () {{\n{asset("page.js")}{asset(name + ".js")}}})();\n'
    return (
        asset("page.html")
        .replace("{{title}}", title)
        .replace("{{main}}", asset(name + ".html"))
        .replace("{{csp}}", _csp(style, script))
        .replace("{{style}}", style)
        .replace("{{script}}", script)
        .replace("{{data}}", embedded_json(data))
    )


def embedded_json(data: Any) -> str:
    """JSON that cannot end the ``<script>`` block it sits in nor start an HTML comment."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for character, escape in _JSON_ESCAPES:
        text = text.replace(character, escape)
    return text


def _csp(style: str, script: str) -> str:
    return (
        "default-src 'none'; img-src data:; base-uri 'none'; form-action 'none'; "
        f"style-src '{_sha256(style)}'; script-src '{_sha256(script)}'"
    )


def _sha256(source: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()


def page_data(document: dict[str, Any]) -> dict[str, Any]:
    grid, rows, changes = _walked(document["tensors"])
    shown, _ = view.chosen_layers(document["layers"])
    scalars = document["scalars"]
    return {
        "verdict": document["verdict"],
        "why": why_text(view.why(document)),
        "summary": view.summary_sentence(document["summary"]),
        "names": mapping_sentences(document.get("mapping")),
        "policy": document["policy"]["source"],
        "readiness": document["deployment_readiness"]["readiness"],
        "risk": document["deployment_readiness"]["risk"],
        "version": document["tool"]["version"],
        "models": [_model(document, side) for side in ("baseline", "candidate")],
        "scalars": [[s["name"], str(s["baseline"]), str(s["candidate"])] for s in scalars],
        "checks": [_check(check) for check in all_checks(document)],
        "analyses": [line.split(": ", 1) for line in analysis_lines(document, LINE_KEYS)],
        "grid": _grid(grid) if grid else None,
        "layers": [] if grid else [[row["name"], _round(row["relative_l2"])] for row in shown],
        "histogram": histogram(changes),
        "statuses": list(STATUSES),
        "tensors": tensor_columns(rows),
        "adapter": _adapter(document.get("adapter")),
    }


def _walked(
    tensors: list[dict[str, Any]],
) -> tuple[DepthGrid | None, list[tuple[Any, ...]], list[float | None]]:
    """The depth grid, the table's rows and each tensor's relative change, from one walk:
    the grid's walk, then the table's asking ``gained_non_finite`` again, read every
    tensor's records twice."""
    cells = GridCells()
    rows, changes = [], []
    for tensor in tensors:
        gained, change = gained_non_finite(tensor), tensor_change(tensor)
        cells.add(tensor, gained, change)
        rows.append(_row(tensor, gained, change))
        changes.append(change)
    return cells.grid(), rows, changes


def _adapter(section: dict[str, Any] | None) -> dict[str, Any] | None:
    """The adapter rows as table cells: mark, tensor, status (and why), figures."""
    shown = adapter_view(section)
    if shown is None:
        return None
    cells = [[row["mark"], row["name"], " — ".join(filter(None, [row["status"], row["note"]])),
              row["figures"]] for row in shown["rows"]]  # fmt: skip
    return {"heading": shown["heading"], "rows": cells}


def why_text(why: dict[str, Any]) -> str:
    """The comment's second line, as plain text."""
    if not why["errors"] and not why["warnings"]:
        return "Every check passed."
    rules = [f"{rule} ({plural(why['tensors'][rule], 'tensor')})" if why["tensors"][rule] else rule
             for rule in why["rules"].names]  # fmt: skip
    more = f" and {why['rules'].more} more" if why["rules"].more else ""
    count, kind = (why["errors"], "error") if why["errors"] else (why["warnings"], "warning")
    return f"{plural(count, kind + ' check')} failed: {', '.join(rules)}{more}."


def _model(document: dict[str, Any], side: str) -> dict[str, Any]:
    model = document[side]
    keys = ("path", "format", "bytes", "tensors", "parameters")
    return {"side": side, **{key: model[key] for key in keys}, "metadata": model["metadata"]}


def _check(check: dict[str, Any]) -> list[Any]:
    shown = (view.check_icon(check), check["rule"], check["severity"], check["status"])
    return [*shown, _value(check["observed"]), _value(check["threshold"]), check["message"]]


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def _grid(grid: DepthGrid) -> dict[str, Any]:
    """Cells row by row (component), column by block: [largest, NaN/Inf, worst tensor, tensors]."""
    cells = []
    for component in grid.components:
        for block in grid.blocks:
            cell = grid.cell(block, component)
            cells.append(None if cell is None else _cell(cell))
    return {
        "stack": grid.stack,
        "blocks": grid.blocks,
        "components": [COMPONENT_LABELS[c] for c in grid.components],
        "cells": cells,
        "outside": [[COMPONENT_LABELS[c], *_cell(cell)] for c, cell in grid.outside.items()],
    }


def _cell(cell: Any) -> list[Any]:
    return [_round(cell.largest), int(cell.non_finite), cell.worst, cell.tensors]


def histogram(changes: list[float | None]) -> dict[str, Any]:
    """Per-tensor relative change in log-spaced bins; exact zeros and unmeasured ones apart."""
    edges = [10.0 ** (d / BINS_PER_DECADE) for d in _bin_range()]
    counts = [0] * (len(edges) - 1)
    zero = unmeasured = 0
    for value in changes:
        if value is None:
            unmeasured += 1
        elif value == 0:
            zero += 1
        else:
            counts[_bin(value, len(counts))] += 1
    return {"edges": [_round(edge) for edge in edges], "counts": counts, "zero": zero,
            "unmeasured": unmeasured}  # fmt: skip


def _bin_range() -> range:
    return range(LOWEST_DECADE * BINS_PER_DECADE, HIGHEST_DECADE * BINS_PER_DECADE + 1)


def _bin(value: float, bins: int) -> int:
    """The bin of a positive value; the lowest and highest bins take what lies beyond them."""
    position = math.floor((math.log10(value) - LOWEST_DECADE) * BINS_PER_DECADE)
    return min(max(position, 0), bins - 1)


def tensor_columns(rows: list[tuple[Any, ...]]) -> dict[str, list[Any]]:
    """Every tensor, one list per column (names are not repeated as keys 100,000 times).

    Names are front-coded (how many characters the previous name shares, then the rest:
    ``model.layers.7.mlp.up_proj.weight`` after ``…7.mlp.gate_proj.weight`` is ``19,
    "up_proj.weight"``), shapes and dtypes are indices into their lists of distinct values:
    the page's size is then a few dozen bytes per tensor, and it loads in a browser fast.
    """
    columns = {key: [row[i] for row in rows] for i, key in enumerate(_COLUMNS)}
    names = columns.pop("name")
    columns["names"] = front_coded(names)
    for key in ("shape", "dtype"):
        distinct = list(dict.fromkeys(columns[key]))
        index = {value: i for i, value in enumerate(distinct)}
        columns[key + "s"], columns[key] = distinct, [index[value] for value in columns[key]]
    return columns


def front_coded(names: list[str]) -> list[int | str]:
    """``[shared, rest, shared, rest, …]``: each name as its overlap with the one before."""
    coded: list[int | str] = []
    previous = ""
    for name in names:
        shared = name[: _shared_length(previous, name)]
        # The page slices in UTF-16 code units: an emoji counts two there.
        units = len(shared) if shared.isascii() else len(shared.encode("utf-16-le")) // 2
        coded += [units, name[len(shared) :]]
        previous = name
    return coded


def _shared_length(previous: str, name: str) -> int:
    """How many characters the two names share at their start, by bisection over slices
    compared in C: ``os.path.commonprefix``'s loop per character took 0.6 s of 100,000 names."""
    low, high = 0, min(len(previous), len(name))
    while low < high:
        middle = (low + high + 1) // 2
        if previous[:middle] == name[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else float(f"{value:.{digits}g}")


#: The table's columns, in the order of ``_row``'s cells.
_COLUMNS = ("name", "status", "change", "cosine", "max_abs", "shape", "dtype", "flag")
_STATUS_INDEX = {status: index for index, status in enumerate(STATUSES)}


def _row(tensor: dict[str, Any], gained: bool, change: float | None) -> tuple[Any, ...]:
    """One tensor's cells, computed in one call: a function per cell was 0.8 s of the page
    at 100,000 tensors. ``gained`` and ``change`` are the walk's (``_walked``)."""
    diff, side = tensor["diff"], tensor["candidate"] or tensor["baseline"]
    name = tensor["name"]
    if "rename" in tensor:
        name = f"{tensor['rename']['from']} → {name}"
    measured = (
        (_round(change), _round(diff["cosine"], 7), _round(diff["max_abs"]))
        if diff
        else (None, None, None)
    )
    shape = "×".join(map(str, side["shape"]))  # noqa: RUF001 (a real times sign)
    status = _STATUS_INDEX[tensor["status"]]
    return (name, status, *measured, shape, side["dtype"], int(gained))


@cache
def asset(name: str) -> str:
    """A file of the page's shell, shipped as package data."""
    return resources.files("diffai.renderers").joinpath(f"templates/{name}").read_text()
