"""The functional suite: both models run on 256 probes, a small CNN and a small transformer.

    python bench/run.py --suite functional        # ~1 min

Exports, under a fresh folder in ``/tmp`` (removed afterwards), the test suite's
CNN classifier (3x16x16 images, 10 classes) and transformer encoder (8 tokens,
vocabulary 50) with a fine-tuned candidate each (``tests/functional_models.py``),
then runs ``diffai BASE CAND --policy ...`` with a ``functional`` section of 256
probes, ``--repeat`` times each in its own process (``measure.run_child``). A row:
the whole command's wall time, the peak resident memory of any of its processes
(``ru_maxrss`` of a waited-for child is the largest in its tree), and from its
report each model's child (start, load, 256 probes in batches of 32, answer) and
the larger child's peak.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from measure import median, run_child
from tables import text_table

REPO = Path(__file__).resolve().parents[1]
POLICY = """version: 1
regression_test:
  functional:
    probes: 256
    min_top1_agreement: 0.9
    inputs:
      ids: {vocab: 50, shape: [1, 8]}
"""
MIB = 1 << 20


def build(folder: Path) -> dict[str, tuple[Path, Path, Path]]:
    sys.path.insert(0, str(REPO))
    from tests import functional_models as fm

    pairs = {
        "cnn": (fm.export_cnn(fm.cnn(), folder / "cnn.onnx"),
                fm.export_cnn(fm.fine_tuned(fm.cnn()), folder / "cnn_tuned.onnx")),
        "transformer": (fm.export_encoder(fm.encoder(), folder / "enc.onnx"),
                        fm.export_encoder(fm.fine_tuned(fm.encoder()), folder / "enc_tuned.onnx")),
    }  # fmt: skip
    policies = {}
    for kind in pairs:
        policy = folder / f"{kind}.yaml"
        text = POLICY if kind == "transformer" else POLICY.split("    inputs:")[0]
        policy.write_text(text, encoding="utf-8")
        policies[kind] = policy
    return {kind: (*pair, policies[kind]) for kind, pair in pairs.items()}


def measure(kind: str, files: tuple[Path, Path, Path], folder: Path, repeat: int) -> list[str]:
    base, cand, policy = files
    report = folder / f"{kind}.json"
    argv = [
        sys.executable,
        "-m",
        "diffai",
        base,
        cand,
        "--policy",
        policy,
        "--report",
        report,
        "-q",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs, sections = [], []
    for _ in range(repeat):
        runs.append(run_child(argv, env=env, timeout=600))
        sections.append(json.loads(report.read_text())["functional"])
    seconds = [s["seconds"] for s in sections]
    child_peak = max(max(s["peak_rss_bytes"].values()) for s in sections)
    return [
        kind, str(sections[0]["probes"]), f"{median(r.seconds for r in runs):.2f}",
        *(f"{median(s[side] for s in seconds):.2f}" for side in ("baseline", "candidate")),
        f"{max(r.peak_rss for r in runs) / MIB:.0f}", f"{child_peak / MIB:.0f}",
        f"{sections[0]['outputs'][0]['top1_agreement']:.3f}",
    ]  # fmt: skip


def run_suite(repeat: int = 3) -> None:
    folder = Path(tempfile.mkdtemp(prefix="diffai-bench-functional-", dir="/tmp"))
    try:
        files = build(folder)
        rows = [measure(kind, pair, folder, repeat) for kind, pair in files.items()]
        header = ["model", "probes", "wall s", "baseline s", "candidate s", "peak MiB, any",
                  "child peak MiB", "top-1"]  # fmt: skip
        print(text_table(header, rows))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    run_suite()
