"""Run a target from ``targets.py`` under atheris (libFuzzer), or under ``mutate.py`` without it.

Called by the ``fuzz_*.py`` scripts with their libFuzzer-style arguments, e.g.
``-max_total_time=600 tests/fuzz/corpus/safetensors``. A crash is written under
``tests/fuzz/crashes/`` unless ``-artifact_prefix=`` says otherwise; copy it into
``tests/hostile/regressions/<target>/`` once fixed, so the suite replays it.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CRASHES = REPO / "tests" / "fuzz" / "crashes"
#: libFuzzer defaults that suit a Python reader: a slow input is a hang, not a crash.
DEFAULT_FLAGS = {"-rss_limit_mb": "3072", "-timeout": "60"}


def main(target: str) -> None:
    sys.path.insert(0, str(REPO))
    workdir = Path(tempfile.mkdtemp(prefix=f"diffai-fuzz-{target}-"))
    try:
        import atheris
    except ImportError:
        from tests.fuzz import mutate

        mutate.run(_targets()[target], workdir, sys.argv[1:], CRASHES / target)
        return
    with atheris.instrument_imports(include=["diffai"]):
        run_one = _targets()[target]

    def test_one_input(data: bytes) -> None:
        run_one(data, workdir)

    CRASHES.mkdir(parents=True, exist_ok=True)
    atheris.Setup(_with_defaults(sys.argv, f"{CRASHES}/{target}-"), test_one_input)
    atheris.Fuzz()


def _targets() -> dict[str, Callable[[bytes, Path], None]]:
    from tests.fuzz.differential import DIFFERENTIAL_TARGETS
    from tests.fuzz.header_differential import HEADER_TARGETS
    from tests.fuzz.targets import TARGETS

    return {**TARGETS, **DIFFERENTIAL_TARGETS, **HEADER_TARGETS}


def _with_defaults(argv: list[str], artifact_prefix: str) -> list[str]:
    given = {arg.split("=", 1)[0] for arg in argv[1:] if arg.startswith("-")}
    flags = {**DEFAULT_FLAGS, "-artifact_prefix": artifact_prefix}
    return [argv[0], *(f"{k}={v}" for k, v in flags.items() if k not in given), *argv[1:]]
