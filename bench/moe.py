"""The MoE suite (issue 16, part 1): many small tensors, side by side with diffai-python.

    python bench/run.py --suite moe [--repeat 5] [--write-docs]

- the MoE pair (``moe_models``: 9,552 f32 tensors, 2 x 77 MiB): ``python -m diffai BASE
  CAND --report FILE -q`` against ``diffai.diff_paths`` of diffai-python 0.5.2, whole
  processes, interleaved round by round, medians; the ratio is diffai-python's time over
  diffai's (goal >= 1.0, aim 1.5);
- the marginal cost per tensor: diffai with ``--report`` on 10,000 and on 100,000 pairs of
  8 x 8 f32 tensors, (t(100,000) - t(10,000)) / 90,000 (goal <= 10 us);
- the outputs at 100,000 tensors, timed in this process from that run's report: the PR
  comment, the step summary, JUnit, the HTML report and the text output, with their sizes
  against their limits.

Bytecode is compiled first (``compileall``): an installed package has it, and this machine's
``PYTHONDONTWRITEBYTECODE`` would otherwise add the compiling of every module to every run.
"""

from __future__ import annotations

import compileall
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import moe_models
from perf import (
    Job,
    Results,
    competitor_argv,
    diffai_argv,
    install_diffai_python,
    run_rounds,
)
from tables import markdown_table, print_table

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "performance.md"
MOE, SMALL, LARGE = "MoE, 9,552 tensors", "10,000 x 8x8", "100,000 x 8x8"
SMALL_COUNT, LARGE_COUNT = 10_000, 100_000
START, END = "<!-- moe suite: start -->", "<!-- moe suite: end -->"

Echo = Callable[[str], None]


def jobs(folder: Path, repeat: int, diffai_python: Path) -> list[Job]:
    moe = moe_models.build_moe(folder, _echo)
    pairs = {
        SMALL: moe_models.build_tiny(folder, SMALL_COUNT, _echo),
        LARGE: moe_models.build_tiny(folder, LARGE_COUNT, _echo),
    }
    other = {"env": {"PYTHONPATH": str(diffai_python)}, "keep_stdout": True, "timeout": 300.0}
    listed = [
        Job("diffai", MOE, _diffai(folder, moe, "moe"), repeat, moe, (1,)),
        Job("diffai-python", MOE, competitor_argv("diffai-python", moe), repeat, moe, **other),
    ]
    for label, pair in pairs.items():
        listed.append(Job("diffai", label, _diffai(folder, pair, _stem(label)), repeat, pair, (1,)))
    return listed


def _stem(label: str) -> str:
    return label.split(" ")[0].replace(",", "")


def _diffai(folder: Path, pair: tuple[Path, Path], stem: str) -> tuple[str, ...]:
    return diffai_argv(*pair, "--report", folder / f"report-{stem}.json", "-q")


def _echo(line: str) -> None:
    print(line, file=sys.stderr)


def renderer_times(report: Path) -> Rendered:
    """(output, seconds, characters, limit) of each output of a report, rendered here by the
    repository's diffai (the children run it too: ``python -m diffai`` from its root)."""
    sys.path.insert(0, str(ROOT))
    from diffai.renderers.analysis_lines import LINE_KEYS
    from diffai.renderers.html_report import render_html
    from diffai.renderers.junit import render_junit
    from diffai.renderers.markdown import COMMENT_LIMIT, SUMMARY_LIMIT, render_markdown
    from diffai.renderers.text import render_text

    document = json.loads(report.read_text())
    outputs = [
        ("PR comment", lambda: render_markdown(document), COMMENT_LIMIT),
        ("step summary", lambda: render_markdown(document, limit=SUMMARY_LIMIT), SUMMARY_LIMIT),
        ("JUnit", lambda: render_junit(document), None),
        ("HTML report", lambda: render_html(document), None),
        ("text output", lambda: render_text(document, document["tensors"], list(LINE_KEYS)), None),
    ]
    timed = []
    for name, render, limit in outputs:
        start = time.perf_counter()
        text = render()
        timed.append((name, time.perf_counter() - start, len(text), limit))
    return timed


def figures(results: Results) -> dict[str, float]:
    seconds = {pair: results[("diffai", pair)].seconds for pair in (MOE, SMALL, LARGE)}
    other = results[("diffai-python", MOE)].seconds
    slope = (seconds[LARGE] - seconds[SMALL]) / (LARGE_COUNT - SMALL_COUNT)
    return {**seconds, "diffai-python": other, "ratio": other / seconds[MOE], "slope": slope}


Rows = list[list[str]]
Rendered = list[tuple[str, float, int, "int | None"]]


def tables(found: dict[str, float], rendered: Rendered) -> tuple[Rows, Rows]:
    goals = [
        [
            f"diffai-python time / diffai time, {MOE} (2 x 77 MiB f32), `--report`",
            f"{found['ratio']:.2f}x ({found['diffai-python']:.2f} s / {found[MOE]:.2f} s)",
            ">= 1.0 (aim 1.5)",
            "yes" if found["ratio"] >= 1.0 else "no",
        ],
        [
            "marginal cost per tensor pair, 8x8 f32, `--report` (slope 10,000 -> 100,000)",
            f"{found['slope'] * 1e6:.1f} us ({found[SMALL]:.2f} s -> {found[LARGE]:.2f} s)",
            "<= 10 us",
            "yes" if found["slope"] <= 10e-6 else "no",
        ],
    ]
    outputs = [
        [name, f"{seconds:.2f} s", f"{size:,}", f"{limit:,}" if limit else "-"]
        for name, seconds, size, limit in rendered
    ]
    return goals, outputs


GOAL_HEADERS = ("figure", "measured", "goal", "met?")
OUTPUT_HEADERS = ("output at 100,000 tensors", "render time", "characters", "limit")


def page_section(goals: Rows, outputs: Rows, repeat: int, commit: str, load: str) -> str:
    return "\n".join(
        [
            START,
            "## Mixture-of-experts scale (issue 16): `python bench/run.py --suite moe`",
            "",
            f"- commit `{commit}`; medians of {repeat} whole-process runs, interleaved; "
            f"warm page cache; {load}",
            "- files: `bench/moe_models.py` (48 blocks x (q/k/v/o, router, 64 experts x "
            "w1/w2/w3, two norms); the 8x8 pairs use the same names); diffai-python is "
            "`diffai.diff_paths` of `diffai-python==0.5.2`",
            "",
            markdown_table(GOAL_HEADERS, goals),
            "",
            markdown_table(OUTPUT_HEADERS, outputs),
            "",
            END,
        ]
    )


def write_docs(section: str) -> None:
    page = DOCS.read_text()
    if START in page:
        before, rest = page.split(START, 1)
        page = before + section + rest.split(END, 1)[1]
    else:
        page = page.rstrip("\n") + "\n\n" + section + "\n"
    DOCS.write_text(page)


def run_suite(out: Path, repeat: int, write: bool, commit: str, load: str) -> None:
    folder = out.resolve() / "moe"
    compileall.compile_dir(str(ROOT / "diffai"), quiet=1)
    diffai_python = install_diffai_python(out.resolve(), _echo)
    results = run_rounds(jobs(folder, repeat, diffai_python), _echo)
    found = figures(results)
    rendered = renderer_times(folder / f"report-{_stem(LARGE)}.json")
    goals, outputs = tables(found, rendered)
    print_table(GOAL_HEADERS, goals)
    print_table(OUTPUT_HEADERS, outputs)
    for (tool, pair), outcome in results.items():
        print(f"{tool} on {pair}: " + ", ".join(f"{run.seconds:.2f}" for run in outcome.runs))
    if write:
        write_docs(page_section(goals, outputs, repeat, commit, load))
        print(f"wrote {DOCS}")
