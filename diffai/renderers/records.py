"""The seed's change records (``TensorStatsChanged`` ...) for ``-o json``, ``yaml`` and ``jsonl``.

Analyses come first as ``{analysis_key: {...}}``. Each change record is
``{Kind: [name, ...sides]}``: the baseline and candidate
statistics as the seed shows them, and for same-shaped pairs the difference
metrics as a fourth element. ``--show-layer-impact`` adds ``{"layer_impact": [...]}``.

``-o jsonl`` is for loops that append many runs to one file: each line is one
record as ``{"baseline": path, "candidate": path, "kind": Kind, "data": ...}``,
between a ``summary`` line and a ``verdict`` line, so a program reading the file
line by line knows which comparison every record belongs to.

Values stay exactly as the files hold them; what keeps a hostile name from
starting a line of the CI log (a ``::set-output`` workflow command) is quoting.
JSON quotes every string and, indented or not, puts a key, a bracket or
indentation and a quote before it; JSON also escapes every non-ASCII character
(``\u202e``). In YAML, a name that could start a line or mislead a reader is
double-quoted, with its escapes (``yaml_text``), and no line is ever folded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from diffai.renderers.analysis_lines import section
from diffai.renderers.outcome import failed_checks, is_identical
from diffai.text import INVISIBLE, has_hazard

RECORD_KINDS = {
    "changed": "TensorStatsChanged",
    "dtype_changed": "TensorDtypeChanged",
    "shape_changed": "TensorShapeChanged",
    "added": "TensorAdded",
    "removed": "TensorRemoved",
    "renamed": "TensorRenamed",  # [new name, baseline, candidate, diff, {from, match, confidence}]
}


def change_records(
    document: dict[str, Any],
    tensors: list[dict[str, Any]],
    analyses: Sequence[str],
    show_layers: bool = False,
) -> list[dict[str, Any]]:
    """One record per chosen analysis, then the given tensor entries' changes, then scalars."""
    records = [{key: section(document, key)} for key in analyses]
    records += [_tensor_record(t) for t in tensors if t["status"] != "unchanged"]
    records += [
        {"ScalarChanged": [s["name"], s["baseline"], s["candidate"]]} for s in document["scalars"]
    ]
    if show_layers:
        records.append({"layer_impact": document["layers"]})
    return records


def _tensor_record(tensor: dict[str, Any]) -> dict[str, Any]:
    sides = [side for side in (tensor["baseline"], tensor["candidate"]) if side is not None]
    if tensor["diff"] is not None:
        sides.append(tensor["diff"])
    if "rename" in tensor:
        sides.append(tensor["rename"])
    return {RECORD_KINDS[tensor["status"]]: [tensor["name"], *sides]}


def render_json(records: list[dict[str, Any]]) -> str:
    return json.dumps(records, indent=2, allow_nan=False) + "\n"


def render_jsonl(document: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """The records one per line, each naming its models, between a summary and a verdict."""
    models = {"baseline": document["baseline"]["path"], "candidate": document["candidate"]["path"]}
    summary = {**document["summary"], "identical": is_identical(document["summary"])}
    verdict = {
        "verdict": document["verdict"],
        "policy": document["policy"]["source"],
        "failed_checks": failed_checks(document),
    }
    framed = [{"summary": summary}, *records, {"verdict": verdict}]
    return "".join(_line(models, record) for record in framed)


def _line(models: dict[str, str], record: dict[str, Any]) -> str:
    ((kind, data),) = record.items()
    return json.dumps({**models, "kind": kind, "data": data}, allow_nan=False) + "\n"


def render_yaml(records: list[dict[str, Any]]) -> str:
    import yaml  # here, not above: 15 ms of import that text and JSON output never need

    class SeedStyleDumper(yaml.SafeDumper):
        """Block mappings, but flow lists of plain values (``shape: [64, 32]``), as in the seed."""

        def write_double_quoted(self, text: str, split: bool = True) -> None:
            """Escape every non-ASCII character of a string holding an invisible one: with
            ``allow_unicode``, PyYAML would write a U+202E as it is, even double-quoted."""
            self.allow_unicode = not INVISIBLE.search(text)
            try:
                super().write_double_quoted(text, split)
            finally:
                self.allow_unicode = True

    def represent_list(dumper: yaml.SafeDumper, items: list[Any]) -> yaml.Node:
        flow = all(not isinstance(item, (dict, list)) for item in items)
        return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flow)

    def represent_text(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
        """Double-quoted when plain or single-quoted style could start a line with ``::`` (a
        key, a line break kept as one) or show an invisible character: escapes, same value."""
        style = '"' if has_hazard(text) else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)

    SeedStyleDumper.add_representer(list, represent_list)
    SeedStyleDumper.add_representer(str, represent_text)
    # An infinite width: a folded long name could bring any "::" in it to a line's start.
    return yaml.dump(
        records, Dumper=SeedStyleDumper, sort_keys=False, allow_unicode=True, width=math.inf
    )
