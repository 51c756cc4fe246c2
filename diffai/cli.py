"""The ``diffai`` command: argv in, exit status out. The only place that prints or exits."""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import NoReturn

from diffai._version import __version__
from diffai.errors import DiffaiError, ReportError
from diffai.renderers.analysis_lines import ANALYSIS_KEYS

EXIT_TROUBLE, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 130, 143
#: An error line quotes at most this much: numpy's messages quote a whole 10 KB npy header.
MESSAGE_LIMIT = 1000
#: The readers' names, spelled out so that --help needs no reader imported (a test checks them).
FORMAT_NAMES = (
    "safetensors", "pytorch", "torchscript", "numpy", "matlab", "keras", "tensorflow", "folder",
    "onnx", "gguf", "tflite", "peft",
)  # fmt: skip

EXAMPLES = """\
examples:
  diffai base.safetensors tuned.safetensors
  diffai epoch_1.pt epoch_10.pt --sort-by-change-magnitude
  diffai fp32/ bf16/ --include 'encoder.*' --show-layer-impact
  diffai model.safetensors model-q8_0.gguf   (a Llama GGUF conversion: names mapped, Q/K unpermuted)
  diffai model.pt model.safetensors -o json --report report.json
  for m in runs/*.pt; do diffai base.pt "$m" -o jsonl --exit-zero >> runs.jsonl; done
  diffai base/ tuned/ --policy policy.yaml --markdown comment.md --junit junit.xml
  diffai base/ tuned/ --shard 2/4 --report part-2.json   (then: diffai merge part-*.json)
  diffai audit ckpt_epoch_*.safetensors --markdown trend.md   (every epoch: step and drift)
  diffai ci gitlab base/model.safetensors model.safetensors --policy policy.yaml   (a GitLab job)

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
    parser.add_argument(
        "baseline",
        help="baseline model: a file, a model folder, hf://ORG/NAME[@REV][/PATH], "
        "s3://BUCKET/KEY or an https:// URL (read by ranges, never downloaded)",
    )
    parser.add_argument("candidate", help="candidate model: as for the baseline")
    _add_output_options(parser)
    _add_comparison_options(parser)
    _add_adapter_options(parser)
    _add_analysis_options(parser)
    _add_policy_options(parser)
    _add_probe_options(parser)
    parser.add_argument("--version", action="version", version=f"diffai {__version__}")
    return parser


def build_merge_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffai merge",
        description="Combine the reports of a run split with --shard I/N into the report, "
        "verdict and outputs one unsplit run gives.",
        epilog="example:\n  diffai merge part-1.json part-2.json part-3.json --report report.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("parts", nargs="+", metavar="PART", help="a shard's --report file")
    _add_output_options(parser)
    _add_analysis_options(parser)
    _add_policy_options(parser)
    return parser


def build_audit_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffai audit",
        description="Compare a series of checkpoints, in natural order: each with the one "
        "before it (step) and with the first (drift); the trend per layer. The Action's "
        "'mode: audit' is another job: a reference model against production.",
        epilog="example:\n  diffai audit ckpt_epoch_*.pt --policy policy.yaml --markdown trend.md"
        "\n\nexit status: 0 every checkpoint identical to the first, 1 different (0 with "
        "--exit-zero), 2 trouble; with --policy or --verdict: 1 when a step fails",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("checkpoints", nargs="+", metavar="CHECKPOINT", help="a model file or folder")
    add("-o", "--output", choices=("text", "json"), default="text", help="stdout (default: text)")
    add("--report", metavar="FILE", help="write the series as JSON (series.schema.json) to FILE")
    add("--markdown", metavar="FILE", help="write the trend as a markdown page to FILE")
    add("--html", metavar="FILE", help="write the trend as one self-contained HTML page to FILE")
    add("--progress", action="store_true", help="name each checkpoint on stderr as it is read")
    add("-q", "--quiet", action="store_true", help="print nothing; exit status only")
    add("--exit-zero", action="store_true", help="exit 0 when checkpoints differ too")
    _add_comparison_options(parser, shards=False)
    add("--policy", metavar="FILE", help="judge every comparison by this YAML policy")
    add("--verdict", action="store_true", help="exit 1 when a step fails the (default) policy")
    return parser


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "-o",
        "--output",
        choices=("text", "json", "yaml", "jsonl"),
        default="text",
        help="what to print on stdout (default: text); jsonl: one record per line, each "
        "naming its models, for appending many runs to one file",
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


def _add_comparison_options(parser: argparse.ArgumentParser, shards: bool = True) -> None:
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
        "--strip-prefix",
        metavar="PREFIX",
        action="append",
        default=[],
        help="take PREFIX off every tensor and scalar name that has it, on both sides, "
        "before names pair (repeatable)",
    )
    add(
        "--keep-prefixes",
        action="store_true",
        help="do not take off wrapper prefixes (module., _orig_mod., model.) that one side "
        "has on every tensor and the other on none",
    )
    add(
        "--no-renames",
        action="store_true",
        help="do not pair removed and added tensors that hold the same values as renamed",
    )
    add(
        "--map",
        metavar="FILE|NAME",
        action="append",
        default=[],
        help="rename one side's tensors before names pair: a YAML name map (docs/name-maps.md) "
        "or a built-in map (gguf-llama); repeatable, applied in order",
    )
    add(
        "--no-auto-map",
        action="store_true",
        help="do not apply a built-in name map on its own (as for a Llama GGUF file against "
        "its Hugging Face source)",
    )
    add(
        "--epsilon",
        type=float,
        default=0.0,
        help="absolute difference above which an element counts as changed (default: 0, exact)",
    )
    add(
        "--format",
        choices=FORMAT_NAMES,
        help="read both inputs with this reader instead of detecting it",
    )
    if shards:
        add(
            "--shard",
            metavar="I/N",
            help="measure only slice I of N (for CI matrix jobs); combine with 'diffai merge'",
        )
    add("--workers", type=int, help="threads measuring tensors (default: cores, at most 8)")


def _add_adapter_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "adapters",
        "A PEFT LoRA adapter folder is a model: two adapters compare by their updates "
        "ΔW = s·B·A; 'diffai BASE ADAPTER' compares the base with the adapter applied.",
    )
    group.add_argument(
        "--base", metavar="MODEL", help="with two adapters: size each update against this base"
    )
    group.add_argument(
        "--adapter",
        metavar="DIR",
        help="diffai BASE MERGED --adapter DIR: verify that MERGED is BASE with DIR merged in",
    )


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
    add("--html", metavar="FILE", help="write a self-contained HTML report (no network) to FILE")


def _add_probe_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "probes",
        "With a policy that has regression_test.functional, both ONNX models run on the same "
        "probe inputs (docs/policy.md); these fix what the model's signature leaves open.",
    )
    add = group.add_argument
    add(
        "--probe-shape",
        action="append",
        default=[],
        metavar="NAME=1x3x224x224",
        help="the shape of one probe of input NAME, its batch axis as 1 (repeatable)",
    )
    add(
        "--probe-value",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a fixed value for input NAME, a setting such as sr=16000 (repeatable)",
    )
    add(
        "--probe-inputs",
        metavar="FILE.npz",
        help="probe inputs: input name -> array, probes on the first axis",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The command line, as a function: its exit status (tests and callers use this)."""
    return _main(argv, collect_after=True)[0]


def console() -> NoReturn:
    """The ``diffai`` command: ``main``, then out of the process without tearing down what
    the run built. Freeing 100,000 tensors' objects one by one took 0.8 s of a 10 s run,
    for memory the process was about to give back whole. Every output file is closed by
    then; the standard streams are flushed here."""
    code, _run_kept_until_exit = _main(None, collect_after=False)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, OSError):
        pass  # the reader went away (``| head``); the exit status still tells
    os._exit(code)


def _main(argv: Sequence[str] | None, collect_after: bool) -> tuple[int, object]:
    """The exit status, and what the run built (so that ``console`` need not free it).
    ``collect_after`` turns the cyclic collector back on when the run ends: a caller that
    goes on wants it, but its first pass then walks every object the run built (0.8 s of
    a 100,000-tensor run), which a process about to exit need not pay."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["ci", "gitlab"]:  # the GitLab CI job: its own flags and variables
        from diffai.ci.gitlab_cli import main as gitlab_main

        return gitlab_main(argv[2:], os.environ, sys.stderr), None
    command_name = argv[0] if argv[:1] in (["merge"], ["audit"]) else "diff"
    args = PARSERS[command_name]().parse_args(argv[1:] if command_name != "diff" else argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    # diffai calls no BLAS routine, and OpenBLAS's idle threads spin for a while after
    # numpy starts them: 6% of the CPU time of a 512 MiB comparison. A user's setting stands.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # A run builds a few objects per tensor and no cycles worth collecting: the cyclic
    # collector's passes over them took a fifth of the CPU on 9,552 tensors. Refcounting
    # still frees everything; a library caller's own setting is untouched (only main runs it).
    collecting = gc.isenabled() and collect_after
    gc.disable()
    try:
        from diffai import command  # here, not at the top: --help and --version skip numpy

        chosen = command.COMMANDS[command_name]
        result = chosen.run(args, sys.stderr)
        _print(chosen.render_stdout(result, args))
        command.write_outputs(chosen.outputs(result, args))  # last: then the run has succeeded
    except DiffaiError as exc:
        print(f"diffai: error: {_shown(exc)}", file=sys.stderr)
        return EXIT_TROUBLE, None
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED, None
    except _Terminated:
        return EXIT_TERMINATED, None
    except Exception as exc:  # a bug, not bad input: one line unless DIFFAI_DEBUG asks for more
        if os.environ.get("DIFFAI_DEBUG"):
            raise
        print(
            f"diffai: internal error: {type(exc).__name__}: {_shown(exc)} (this is a bug; rerun "
            "with DIFFAI_DEBUG=1 for the traceback and report it)",
            file=sys.stderr,
        )
        return EXIT_TROUBLE, None
    finally:
        if collecting:
            gc.enable()
        signal.signal(signal.SIGTERM, previous)
    return chosen.exit_status(result, args), result


PARSERS = {"diff": build_parser, "merge": build_merge_parser, "audit": build_audit_parser}


def _shown(exc: Exception) -> str:
    """An error message on one line of bounded length: it may quote a hostile file's bytes."""
    from diffai.text import clipped, one_line  # here: --help and --version skip the regexes

    return one_line(clipped(str(exc), MESSAGE_LIMIT))


class _Terminated(Exception):
    """SIGTERM (a cancelled CI job): stop like Ctrl-C, before any output file is written."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def _print(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): like other CLIs, go on quietly, and keep Python
        # from failing again on the same pipe at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError as exc:  # a full disk under `> out.txt`
        raise ReportError(f"standard output: cannot write: {exc.strerror or exc}") from exc
