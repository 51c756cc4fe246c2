"""The ``diffai`` command: argv in, exit status out. The only place that prints or exits."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from diffai._version import __version__
from diffai.api import compare_options, load_gate
from diffai.compare import bytes_to_read, compare_models
from diffai.errors import DiffaiError
from diffai.formats import READERS, open_model
from diffai.renderers.analysis_lines import ANALYSIS_KEYS, LINE_KEYS, VERDICT_KEYS
from diffai.renderers.junit import render_junit
from diffai.renderers.markdown import render_markdown
from diffai.renderers.records import change_records, render_json, render_yaml
from diffai.renderers.text import render_text
from diffai.report import Report, write_atomically

EXIT_SAME, EXIT_DIFFERENT, EXIT_TROUBLE = 0, 1, 2
#: Below this many bytes a run is too quick for a progress bar to help.
PROGRESS_MIN_BYTES = 256 * 1024 * 1024

EXAMPLES = """\
examples:
  diffai base.safetensors tuned.safetensors
  diffai epoch_1.pt epoch_10.pt --sort-by-change-magnitude
  diffai fp32/ bf16/ --include 'encoder.*' --show-layer-impact
  diffai model.pt model.safetensors -o json --report report.json
  diffai base/ tuned/ --policy policy.yaml --markdown comment.md --junit junit.xml

exit status: 0 identical, 1 different (0 with --exit-zero), 2 trouble (bad input,
unreadable file, usage); with --policy or --verdict: 0 pass or warn, 1 fail, 2 trouble
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffai",
        description="Compare two ML model artifacts tensor by tensor.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("baseline", help="baseline model: a file or a model folder")
    parser.add_argument("candidate", help="candidate model: a file or a model folder")
    _add_output_options(parser)
    _add_comparison_options(parser)
    _add_analysis_options(parser)
    _add_policy_options(parser)
    parser.add_argument("--version", action="version", version=f"diffai {__version__}")
    return parser


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "-o",
        "--output",
        choices=("text", "json", "yaml"),
        default="text",
        help="what to print on stdout (default: text)",
    )
    add("--report", metavar="FILE", help="write the full JSON report (report.schema.json) to FILE")
    add(
        "--sort-by-change-magnitude",
        action="store_true",
        help="list the largest relative changes first",
    )
    add(
        "--show-layer-impact",
        action="store_true",
        help="also show the change aggregated per layer (module prefix)",
    )
    add(
        "--progress",
        action="store_true",
        help="show a progress bar even when stderr is not a terminal",
    )
    quiet = parser.add_mutually_exclusive_group()
    quiet.add_argument("-q", "--quiet", action="store_true", help="print nothing; exit status only")
    quiet.add_argument("--brief", action="store_true", help="only say whether the models differ")
    add(
        "--exit-zero",
        action="store_true",
        help="exit 0 when the models differ too (trouble still exits 2)",
    )


def _add_comparison_options(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--include",
        metavar="GLOB",
        action="append",
        default=[],
        help="compare only names matching GLOB (repeatable)",
    )
    add(
        "--exclude",
        metavar="GLOB",
        action="append",
        default=[],
        help="skip names matching GLOB (repeatable)",
    )
    add(
        "--epsilon",
        type=float,
        default=0.0,
        help="absolute difference above which an element counts as changed (default: 0, exact)",
    )
    add(
        "--format",
        choices=sorted(READERS),
        help="read both inputs with this reader instead of detecting it",
    )
    add("--workers", type=int, help="threads measuring tensors (default: cores, at most 8)")


def _add_analysis_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "analyses",
        "All analyses are computed and written to the report; these flags choose which "
        "ones stdout shows (default: all).",
    )
    for key in ANALYSIS_KEYS:
        group.add_argument(
            f"--{key.replace('_', '-')}", action="store_true", dest=key, help=f"show {key}"
        )


def _add_policy_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "policy",
        "Every report carries a verdict, from --policy or else the default policy "
        "(docs/policy.md). With --policy or --verdict the exit status is the verdict's: "
        "0 pass or warn, 1 fail.",
    )
    add = group.add_argument
    add("--policy", metavar="FILE", help="judge the comparison by this YAML policy")
    add(
        "--verdict",
        action="store_true",
        help="exit by the verdict (of the default policy unless --policy is given)",
    )
    add(
        "--metrics-baseline",
        metavar="FILE",
        help="baseline evaluation metrics (JSON or YAML); overrides the policy's",
    )
    add(
        "--metrics-candidate",
        metavar="FILE",
        help="candidate evaluation metrics (JSON or YAML); overrides the policy's",
    )
    add("--markdown", metavar="FILE", help="write the pull-request comment (markdown) to FILE")
    add("--junit", metavar="FILE", help="write one JUnit testcase per policy check to FILE")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run(args, sys.stderr)
        write_outputs(report, args)
        _print(render_stdout(report, args))
    except DiffaiError as exc:
        print(f"diffai: error: {exc}", file=sys.stderr)
        return EXIT_TROUBLE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug, not bad input: one line unless DIFFAI_DEBUG asks for more
        if os.environ.get("DIFFAI_DEBUG"):
            raise
        print(
            f"diffai: internal error: {type(exc).__name__}: {exc} (this is a bug; rerun "
            "with DIFFAI_DEBUG=1 for the traceback and report it)",
            file=sys.stderr,
        )
        return EXIT_TROUBLE
    return exit_status(report, args)


def exit_status(report: Report, args: argparse.Namespace) -> int:
    """The verdict's when one was asked for, else diff's: identical or not."""
    if args.policy or args.verdict:
        return EXIT_DIFFERENT if report.verdict == "fail" and not args.exit_zero else EXIT_SAME
    return EXIT_SAME if report.identical or args.exit_zero else EXIT_DIFFERENT


def run(args: argparse.Namespace, progress_stream: TextIO) -> Report:
    options = compare_options(args.epsilon, args.include, args.exclude, args.workers)
    gate = load_gate(args.policy, args.metrics_baseline, args.metrics_candidate)
    baseline = open_model(args.baseline, args.format)
    candidate = open_model(args.candidate, args.format)
    total = bytes_to_read(baseline, candidate, options)
    with _progress_bar(total, progress_stream, args.progress) as on_bytes:
        return Report.build(compare_models(baseline, candidate, options, on_bytes), gate)


def write_outputs(report: Report, args: argparse.Namespace) -> None:
    """The files asked for, each written atomically, only once the whole run has succeeded."""
    outputs = [
        (args.report, report.to_json),
        (args.markdown, lambda: render_markdown(report.document)),
        (args.junit, lambda: render_junit(report.document)),
    ]
    for path, render in outputs:
        if path:
            write_atomically(Path(path), render())


def render_stdout(report: Report, args: argparse.Namespace) -> str:
    document = report.document
    if args.quiet:
        return ""
    if args.brief:
        return "" if report.identical else f"Models {args.baseline} and {args.candidate} differ\n"
    tensors = document["tensors"]
    if args.sort_by_change_magnitude:
        tensors = sorted(tensors, key=change_magnitude, reverse=True)
    analyses = shown_sections(args)
    if args.output == "text":
        return render_text(document, tensors, analyses, show_layers=args.show_layer_impact)
    records = change_records(document, tensors, analyses)
    return render_json(records) if args.output == "json" else render_yaml(records)


def shown_sections(args: argparse.Namespace) -> list[str]:
    """Every section by default; with the seed's flags, those chosen (and the verdict if asked)."""
    chosen = [key for key in ANALYSIS_KEYS if getattr(args, key)]
    if not chosen:
        return list(LINE_KEYS)
    return chosen + list(VERDICT_KEYS) if args.policy or args.verdict else chosen


def change_magnitude(tensor: dict[str, Any]) -> float:
    """Relative L2 change; structural changes rank above any numeric one."""
    diff = tensor["diff"]
    if diff is None:
        return float("inf") if tensor["status"] != "unchanged" else 0.0
    if diff["relative_l2"] is None:
        return float("inf") if diff["changed"] else 0.0
    return diff["relative_l2"]


class _progress_bar:
    """A byte-counting tqdm bar on an interactive stderr; a no-op in CI logs and pipes."""

    def __init__(self, total: int, stream: TextIO, forced: bool) -> None:
        visible = forced or (stream.isatty() and total >= PROGRESS_MIN_BYTES)
        self._bar = tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            file=stream,
            disable=not visible,
            leave=False,
            desc="comparing",
        )
        self._lock = threading.Lock()

    def __enter__(self) -> Callable[[int], None] | None:
        return None if self._bar.disable else self._update

    def _update(self, count: int) -> None:
        with self._lock:
            self._bar.update(count)

    def __exit__(self, *exc: object) -> None:
        self._bar.close()


def _print(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        sys.stderr.close()  # reader went away (`| head`): like other CLIs, stop quietly
