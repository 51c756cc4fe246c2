"""Benchmark diffai: the transformer suite, the performance suite (issue 5), or both.

    python bench/run.py [--suite all|transformer|perf] [--quick] [--write-docs]

- ``transformer`` (``transformer.py``, ``bench/README.md``): diffai on a 90 MB
  BERT-like model against fine-tuned, re-typed, pruned and permuted copies, each
  report checked against what the copy was built to differ by;
- ``perf`` (``perf.py``, ``docs/performance.md``): 512 MiB and 4 GiB pairs, f16,
  bf16, 10,000 tensors, shards, cold cache and start-up, side by side with a
  bare numpy floor, diffai-python 0.5.2 and a torch script, medians of
  interleaved runs, and a table of the issue's goals;
- ``moe`` (``moe.py``, issue 16): a 9,552-tensor mixture-of-experts pair against
  diffai-python, the marginal cost per tensor from 10,000 to 100,000 tensors, and every
  output's render time at 100,000 tensors;
- ``onnx`` (``onnx_external.py``): a 3 GiB external-data ONNX pair in bounded
  memory, and ``onnx.load`` on the same files for comparison;
- ``remote`` (``remote.py``): a 2 x 2 GiB pair read by HTTP ranges over loopback
  with 20 ms per request, against ``curl`` downloading it first (``--remote-mib``).
- ``functional`` (``functional.py``): a small CNN and a small transformer run on
  256 probes each through ``regression_test.functional``.

``--quick`` shrinks the performance suite's pairs to 64 MiB and 128 MiB (and
its repetitions) for a smoke run of about a minute.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import functional
import make_models
import moe
import onnx_external
import perf
import perf_goals
import perf_report
import remote
import transformer

MIB = 1 << 20
DOCS = perf_report.ROOT / "docs" / "performance.md"


def perf_settings(args: argparse.Namespace) -> perf.Settings:
    folder = args.out.resolve() / ("perf-quick" if args.quick else "perf")
    return perf.Settings(
        folder=folder,
        small_bytes=(64 if args.quick else 512) * MIB,
        large_bytes=(128 if args.quick else 4096) * MIB,
        repeat=2 if args.quick else args.repeat,
        large_repeat=1 if args.quick else args.large_repeat,
        cold_repeat=1 if args.quick else args.cold_repeat,
        startup_repeat=3 if args.quick else args.startup_repeat,
        timeout=args.timeout,
        memory_limit=int(args.memory_limit_gib * (1 << 30)),
    )


def run_perf(args: argparse.Namespace, command: str) -> None:
    load = perf_report.load()
    started = perf_report.commit()
    run = perf.run_perf(perf_settings(args), echo=lambda line: print(line, file=sys.stderr))
    ended = perf_report.commit()
    found = perf_goals.goals(run)
    perf_report.print_report(run, found)
    commit = started if started == ended else f"{started} at the start, {ended} at the end"
    load = f"{load} before the run, {perf_report.load()} after"
    page = perf_report.markdown(run, found, command, load, commit)
    written = DOCS if args.write_docs else run.settings.folder / "performance.md"
    written.write_text(page + remote.kept_section(DOCS))
    print(f"\nwrote {written}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    suites = ("all", "transformer", "perf", "moe", "onnx", "remote", "functional")
    add("--suite", choices=suites, default="all", help="default: all")
    add("--out", type=Path, default=make_models.DEFAULT_OUT, help="folder for the models")
    add("--quick", action="store_true", help="perf suite on 64/128 MiB pairs: a smoke run")
    add("--write-docs", action="store_true", help=f"write the perf table to {DOCS}")
    add("--remote-mib", type=int, default=2048, help="remote suite: MiB per file (2048)")
    add("--repeat", type=int, default=5, help="runs per command, small pairs (default: 5)")
    add("--large-repeat", type=int, default=3, help="runs per command, 4 GiB pair (default: 3)")
    add("--cold-repeat", type=int, default=3, help="cold-cache runs (default: 3)")
    add("--startup-repeat", type=int, default=10, help="start-up runs (default: 10)")
    add("--timeout", type=float, default=300, help="time limit of a competitor's run, s")
    add(
        "--memory-limit-gib",
        type=float,
        default=12,
        help="address-space limit of a diffai-python run (default: 12)",
    )
    add(
        "--stats-mib",
        type=int,
        default=256,
        help="transformer suite: size of each tensor of the in-process pair",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    command = "python bench/run.py " + " ".join(sys.argv[1:])
    if args.suite in ("all", "transformer"):
        transformer.run_suite(args.out, args.repeat, args.stats_mib)
    if args.suite in ("all", "perf"):
        run_perf(args, command.strip())
    if args.suite in ("all", "moe"):
        load = perf_report.load()
        moe.run_suite(args.out, args.repeat, args.write_docs, perf_report.commit(), load)
    if args.suite in ("all", "onnx"):
        onnx_external.run_suite()
    if args.suite in ("all", "remote"):
        figures = remote.run_suite(256 if args.quick else args.remote_mib)
        if args.write_docs:
            remote.write_section(DOCS, figures, command.strip())
    if args.suite in ("all", "functional"):
        functional.run_suite(min(args.repeat, 3))


if __name__ == "__main__":
    main()
