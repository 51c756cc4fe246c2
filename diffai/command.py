"""One run of the command: compare, judge, write the files asked for, render stdout.

Kept apart from ``cli.py`` so that ``diffai --version`` and ``--help`` never
import numpy, the readers or the renderers.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

from diffai import adapters
from diffai.api import build_report, compare_options, load_gate
from diffai.comparison import bytes_to_read, compare_models
from diffai.errors import UsageError
from diffai.renderers.analysis_lines import ANALYSIS_KEYS, LINE_KEYS, VERDICT_KEYS
from diffai.report import Report, write_atomically
from diffai.shard import parse_shard
from diffai.text import one_line

if TYPE_CHECKING:
    from diffai.policy.functional import ProbeOptions
    from diffai.series import Series

EXIT_SAME, EXIT_DIFFERENT = 0, 1
#: Below this many bytes a run is too quick for a progress bar to help.
PROGRESS_MIN_BYTES = 256 * 1024 * 1024


def exit_status(report: Report, args: argparse.Namespace) -> int:
    """The verdict's when one was asked for, else diff's: identical or not."""
    if args.policy or args.verdict:
        return EXIT_DIFFERENT if report.verdict == "fail" and not args.exit_zero else EXIT_SAME
    return EXIT_SAME if report.identical or args.exit_zero else EXIT_DIFFERENT


def run(args: argparse.Namespace, progress_stream: TextIO) -> Report:
    shard = parse_shard(args.shard) if args.shard else None
    options = compare_options(
        args.epsilon, args.include, args.exclude, args.workers, shard, *_prefix_options(args)
    )
    gate = load_gate(args.policy, args.metrics_baseline, args.metrics_candidate)
    baseline, candidate, adapter = adapters.open_models(
        args.baseline, args.candidate, args.format, args.base, args.adapter, bool(shard)
    )
    total = functools.partial(bytes_to_read, baseline, candidate, options)
    with _progress_bar(total, progress_stream, args.progress) as on_bytes:
        comparison = compare_models(baseline, candidate, options, on_bytes)
    return build_report(comparison, gate, probe_options(args), adapter)


def probe_options(args: argparse.Namespace) -> ProbeOptions | None:
    """``--probe-shape``, ``--probe-value`` and ``--probe-inputs`` as the functional run wants;
    None when none is given (``build_report``'s default): the policy's functional module is
    then imported only by a policy that runs models."""
    if not (args.probe_shape or args.probe_value or args.probe_inputs):
        return None
    from diffai.policy.functional import ProbeOptions

    shapes = dict(_named(text, "--probe-shape", _shape) for text in args.probe_shape)
    values = dict(_named(text, "--probe-value", float) for text in args.probe_value)
    inputs = Path(args.probe_inputs) if args.probe_inputs else None
    return ProbeOptions(shapes, values, inputs)


def _named(text: str, flag: str, parse: Callable[[str], Any]) -> tuple[str, Any]:
    name, _, value = text.partition("=")
    try:
        if not name or not value:
            raise ValueError(text)
        return name, parse(value)
    except ValueError:
        example = "input=1x3x224x224" if flag == "--probe-shape" else "sr=16000"
        raise UsageError(f"{flag} wants NAME=VALUE, such as {example}; got {text!r}") from None


def _shape(text: str) -> tuple[int, ...]:
    sizes = tuple(int(size) for size in text.lower().split("x"))
    if any(size < 1 for size in sizes):
        raise ValueError(text)
    return sizes


def _prefix_options(args: argparse.Namespace) -> tuple[list[str], bool, bool, list[str], bool]:
    """How names pair: prefixes, renames, then name maps (``diffai.pairing``)."""
    return (args.strip_prefix, not args.keep_prefixes, not args.no_renames, args.map,
            not args.no_auto_map)


def merge(args: argparse.Namespace, progress_stream: TextIO) -> Report:
    """``diffai merge``: the shard reports combined and judged as one run."""
    from diffai.merge import merge_parts

    gate = load_gate(args.policy, args.metrics_baseline, args.metrics_candidate)
    return Report.build(merge_parts(args.parts), gate)


#: A file the user asked for (None: not asked), and how to render it (text, or the bytes
#: of an ASCII file such as the JSON report: no decode and re-encode of 100 MB).
Outputs = list[tuple[str | None, Callable[[], str | bytes]]]


def report_outputs(report: Report, args: argparse.Namespace) -> Outputs:
    """Each renderer is imported only when its file is asked for: the three cost 25 ms."""
    document = report.document
    return [
        (args.report, report.to_json_bytes),
        (args.markdown, lambda: _lazy("markdown", "render_markdown")(document)),
        (args.junit, lambda: _lazy("junit", "render_junit")(document)),
        (args.html, lambda: _lazy("html_report", "render_html")(document)),
    ]


def _lazy(module: str, name: str) -> Any:
    """``diffai.renderers.MODULE.NAME``, imported on its first use: a run that prints
    nothing (``-q``) or writes only the JSON report imports no renderer."""
    return getattr(importlib.import_module(f"diffai.renderers.{module}"), name)


def write_outputs(outputs: Outputs) -> None:
    """The files asked for, only once the whole run has succeeded: all of them or none.

    All are rendered before any is written, and when one cannot be written (a
    full disk) or a signal stops the writing, those already written are removed.
    """
    rendered = [(Path(path), render()) for path, render in outputs if path]
    written: list[Path] = []
    try:
        for path, content in rendered:
            if write_atomically(path, content):
                written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def render_stdout(report: Report, args: argparse.Namespace) -> str:
    document = report.document
    if args.quiet:
        return ""
    if args.brief:
        paths = one_line(document["baseline"]["path"]), one_line(document["candidate"]["path"])
        return "" if report.identical else "Models {} and {} differ\n".format(*paths)
    tensors = document["tensors"]
    if args.sort_by_change_magnitude:
        tensors = sorted(tensors, key=change_magnitude, reverse=True)
    analyses = shown_sections(args)
    if args.output == "text":
        return _lazy("text", "render_text")(
            document,
            tensors,
            analyses,
            show_layers=args.show_layer_impact,
            show_verdict=bool(args.policy or args.verdict),
        )
    return _records_stdout(document, tensors, analyses, args)


def _records_stdout(
    document: dict[str, Any],
    tensors: list[dict[str, Any]],
    analyses: list[str],
    args: argparse.Namespace,
) -> str:
    """``-o json``, ``yaml`` or ``jsonl``: the change records, one renderer per format."""
    from diffai.renderers import records as renderers

    records = renderers.change_records(document, tensors, analyses, args.show_layer_impact)
    if args.output == "jsonl":
        return renderers.render_jsonl(document, records)
    render = renderers.render_yaml if args.output == "yaml" else renderers.render_json
    return render(records)


def shown_sections(args: argparse.Namespace) -> list[str]:
    """Every section by default; with the seed's flags, those chosen (and the verdict if asked)."""
    chosen = [key for key in ANALYSIS_KEYS if getattr(args, key)]
    if not chosen:
        return list(LINE_KEYS)
    return chosen + list(VERDICT_KEYS) if args.policy or args.verdict else chosen


def change_magnitude(tensor: dict[str, Any]) -> float:
    """The relative change the policy judges (``diffai.change``); structural changes and a
    move with nothing to measure it against rank above any measured one."""
    diff = tensor["diff"]
    if diff is None:
        return float("inf") if tensor["status"] != "unchanged" else 0.0
    if diff["relative_change"] is None:
        return float("inf") if diff["changed"] else 0.0
    return diff["relative_change"]


# --- diffai audit: a series of checkpoints ----------------------------------------------


def audit(args: argparse.Namespace, progress_stream: TextIO) -> Series:
    from diffai.series import audit_series

    options = compare_options(
        args.epsilon, args.include, args.exclude, args.workers, None, *_prefix_options(args)
    )
    gate = load_gate(args.policy)
    shown = args.progress or progress_stream.isatty()
    on_checkpoint = _checkpoint_progress(progress_stream) if shown else None
    return audit_series(args.checkpoints, options, gate, args.format, on_checkpoint, args.policy)


def _checkpoint_progress(stream: TextIO) -> Callable[[int, int, str], None]:
    def show(number: int, count: int, path: str) -> None:
        print(f"diffai audit: checkpoint {number}/{count}: {one_line(path)}", file=stream)

    return show


def render_series_stdout(series: Series, args: argparse.Namespace) -> str:
    if args.quiet:
        return ""
    from diffai.renderers.series import render_series_text

    document = series.to_document()
    if args.output == "json":
        from diffai.renderers.records import render_json

        return render_json(document)
    return render_series_text(document)


def series_outputs(series: Series, args: argparse.Namespace) -> Outputs:
    from diffai.renderers import series as renderers

    return [
        (args.report, series.to_json),
        (args.markdown, lambda: renderers.render_series_markdown(series.to_document())),
        (args.html, lambda: renderers.render_series_html(series.to_document())),
    ]


def series_exit_status(series: Series, args: argparse.Namespace) -> int:
    """As for one pair: the verdict's when asked for (the worst step's), else identical or not."""
    if args.policy or args.verdict:
        return EXIT_DIFFERENT if series.verdict == "fail" and not args.exit_zero else EXIT_SAME
    return EXIT_SAME if series.identical or args.exit_zero else EXIT_DIFFERENT


class Command(NamedTuple):
    """A subcommand's four steps, which ``cli.main`` runs in order. A named tuple: a frozen
    dataclass's generated methods took 0.9 ms of every run's start, this 0.2 ms."""

    run: Callable[[argparse.Namespace, TextIO], Any]
    render_stdout: Callable[[Any, argparse.Namespace], str]
    outputs: Callable[[Any, argparse.Namespace], Outputs]
    exit_status: Callable[[Any, argparse.Namespace], int]


COMMANDS = {
    "diff": Command(run, render_stdout, report_outputs, exit_status),
    "merge": Command(merge, render_stdout, report_outputs, exit_status),
    "audit": Command(audit, render_series_stdout, series_outputs, series_exit_status),
}


class _progress_bar:
    """A byte-counting tqdm bar on an interactive stderr; a no-op in CI logs and pipes."""

    def __init__(self, total: Callable[[], int], stream: TextIO, forced: bool) -> None:
        """``total`` is asked only for a bar that may show: pairing 100,000 names twice
        over (the total, then the comparison) cost a CI log, which shows no bar, 4 s."""
        size = total() if forced or stream.isatty() else 0
        visible = forced or size >= PROGRESS_MIN_BYTES
        self._bar = _tqdm_bar(size, stream) if visible else None
        self._lock = threading.Lock()

    def __enter__(self) -> Callable[[int], None] | None:
        return None if self._bar is None else self._update

    def _update(self, count: int) -> None:
        with self._lock:
            self._bar.update(count)  # type: ignore[union-attr]

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


def _tqdm_bar(total: int, stream: TextIO) -> Any:
    from tqdm import tqdm  # only for a visible bar: its import is 30 ms of every run's start

    return tqdm(total=total, unit="B", unit_scale=True, file=stream, leave=False, desc="comparing")
