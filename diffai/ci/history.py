"""The audit's run history, kept in a hidden block of its own issue's body.

A scheduled audit has no database and should need no write access beyond the issue, so
the last runs' summary figures travel in the body diffai edits anyway, as one HTML
comment holding JSON. Anyone with write access to the repository can edit that body, so
the block is read back as untrusted input: bounded in size before it is parsed, every
key, type and range checked, run URLs only of this repository's runs, names without
control characters. A block that fails any check is dropped whole with the reason, and
the history starts again: a bad block costs the trend, never the run.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

HISTORY_VERSION = 1
BLOCK_START = "<!-- diffai-history\n"
BLOCK_END = "\n-->"
MAX_BLOCK = 24_000  # characters of JSON: a third of the issue body's 65,536
MAX_RUNS = 100
LAYERS_PER_RUN = 5
NAME_LIMIT = 120
VERDICTS = ("pass", "warn", "fail")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_RUN_ID = re.compile(r"[0-9]{1,20}")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Inside an HTML comment JSON must not say "-->"; "<" and "&" are escaped with it.
_HTML_SAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


class BadHistory(ValueError):
    """The hidden block is not one diffai wrote; the message says what is wrong with it."""


@dataclass(frozen=True)
class RunSummary:
    """One audit run as the trend needs it: when, the verdict, readiness, the top layers."""

    date: str  # UTC, 2024-05-06T06:00:00Z
    verdict: str
    readiness: float | None
    run_url: str | None
    layers: tuple[tuple[str, float], ...]  # most-changed first: (layer, relative change)


@dataclass(frozen=True)
class History:
    """The last runs, oldest first."""

    runs: tuple[RunSummary, ...] = ()

    def add(self, run: RunSummary, keep: int) -> History:
        return History((*self.runs, run)[-keep:])

    @property
    def last_verdict(self) -> str | None:
        return self.runs[-1].verdict if self.runs else None


def summarize(document: dict[str, Any], date: datetime, run_url: str | None) -> RunSummary:
    """A report's figures for the history: its verdict, readiness and most-changed layers."""
    measured = [layer for layer in document["layers"] if layer.get("relative_l2") is not None]
    top = sorted(measured, key=lambda layer: -layer["relative_l2"])[:LAYERS_PER_RUN]
    return RunSummary(
        date=date.strftime("%Y-%m-%dT%H:%M:%SZ"),
        verdict=document["verdict"],
        readiness=document["deployment_readiness"].get("readiness"),
        run_url=run_url,
        layers=tuple((layer["name"][:NAME_LIMIT], float(layer["relative_l2"])) for layer in top),
    )


def encode_block(history: History) -> str:
    """The hidden block; the oldest runs give way until it fits ``MAX_BLOCK``."""
    runs = list(history.runs)
    while True:
        data = json.dumps({"version": HISTORY_VERSION, "runs": [_run_json(r) for r in runs]})
        data = "".join(_HTML_SAFE.get(ch, ch) for ch in data)
        if len(data) <= MAX_BLOCK or not runs:
            return f"{BLOCK_START}{data}{BLOCK_END}"
        runs.pop(0)


def _run_json(run: RunSummary) -> dict[str, Any]:
    return {
        "date": run.date,
        "verdict": run.verdict,
        "readiness": run.readiness,
        "run_url": run.run_url,
        "layers": [[name, value] for name, value in run.layers],
    }


def decode_block(body: str, run_url_prefix: str | None) -> History:
    """The history in an issue body; ``BadHistory`` saying why when it cannot be trusted."""
    data = _parse(_block_text(body))
    if not isinstance(data, dict) or set(data) != {"version", "runs"}:
        raise BadHistory("not an object with exactly version and runs")
    if data["version"] != HISTORY_VERSION or type(data["version"]) is not int:
        raise BadHistory(f"version is not {HISTORY_VERSION}")
    runs = data["runs"]
    if not isinstance(runs, list) or len(runs) > MAX_RUNS:
        raise BadHistory(f"runs is not a list of at most {MAX_RUNS}")
    return History(tuple(_run(item, index, run_url_prefix) for index, item in enumerate(runs)))


def _block_text(body: str) -> str:
    """The JSON between the block's delimiters; exactly one block, of bounded size."""
    count = body.count(BLOCK_START)
    if count != 1:
        raise BadHistory("no history block" if count == 0 else f"{count} history blocks")
    start = body.index(BLOCK_START) + len(BLOCK_START)
    end = body.find(BLOCK_END, start, start + MAX_BLOCK + 1)
    if end < 0:
        raise BadHistory(f"the block is not closed within {MAX_BLOCK:,} characters")
    return body[start:end]


def _parse(text: str) -> Any:
    def refuse_constant(name: str) -> None:
        raise BadHistory(f"{name} is not a number JSON allows")

    try:
        return json.loads(text, parse_constant=refuse_constant, object_pairs_hook=_unique)
    except (ValueError, RecursionError) as exc:
        raise BadHistory(f"not JSON: {exc}") from None


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise BadHistory("a key appears twice")
    return dict(pairs)


_RUN_KEYS = {"date", "verdict", "readiness", "run_url", "layers"}


def _run(item: Any, index: int, run_url_prefix: str | None) -> RunSummary:
    where = f"runs[{index}]"
    if not isinstance(item, dict) or set(item) != _RUN_KEYS:
        raise BadHistory(f"{where} is not an object with exactly {', '.join(sorted(_RUN_KEYS))}")
    checks = {
        "date": _is_date(item["date"]),
        "verdict": item["verdict"] in VERDICTS,
        "readiness": item["readiness"] is None or _in_range(item["readiness"], 0.0, 1.0),
        "run_url": _is_run_url(item["run_url"], run_url_prefix),
        "layers": _are_layers(item["layers"]),
    }
    wrong = [key for key, ok in checks.items() if not ok]
    if wrong:
        raise BadHistory(f"{where}: {', '.join(wrong)} not as diffai writes it")
    layers = tuple((str(name), float(value)) for name, value in item["layers"])
    readiness = None if item["readiness"] is None else float(item["readiness"])
    return RunSummary(item["date"], item["verdict"], readiness, item["run_url"], layers)


def _is_date(value: Any) -> bool:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        return False
    try:
        datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return False
    return True


def _in_range(value: Any, low: float, high: float) -> bool:
    is_number = type(value) in (int, float) and math.isfinite(value)
    return is_number and low <= value <= high


def _is_run_url(value: Any, prefix: str | None) -> bool:
    """None, or a run of this repository: a link in the issue must not lead anywhere else."""
    if value is None:
        return True
    if not (isinstance(value, str) and prefix and value.startswith(prefix)):
        return False
    return bool(_RUN_ID.fullmatch(value[len(prefix) :]))


def _are_layers(value: Any) -> bool:
    if not isinstance(value, list) or len(value) > LAYERS_PER_RUN:
        return False
    return all(_is_layer(pair) for pair in value)


def _is_layer(pair: Any) -> bool:
    if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
        return False
    name, value = pair
    named = 0 < len(name) <= NAME_LIMIT and not _CONTROL.search(name)
    return named and _in_range(value, 0.0, 1e12)
