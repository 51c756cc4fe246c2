"""The container's entry point: the runner's environment in, an exit status out.

The only place the Action reads ``os.environ``, builds the HTTP session and
exits; everything else is ``diffai.ci.action.run_action``, which takes these
collaborators as parameters. ``DIFFAI_RETRY_BASE_DELAY`` (seconds, default 1)
scales the backoff between GitHub API retries; tests set it near zero.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from diffai.ci.action import EXIT_TROUBLE, run_action
from diffai.ci.config import Config, InvalidInputs
from diffai.ci.github import GitHub, RetryPolicy, make_session
from diffai.ci.workflow import Runner


def main(environ: Mapping[str, str] = os.environ, stream: TextIO = sys.stdout) -> int:
    runner = Runner(
        stream=stream,
        output_path=_path(environ.get("GITHUB_OUTPUT")),
        summary_path=_path(environ.get("GITHUB_STEP_SUMMARY")),
    )
    try:
        config = Config.from_environ(environ, Path.cwd())
        retry = RetryPolicy(base_delay=float(environ.get("DIFFAI_RETRY_BASE_DELAY", "1")))
    except (InvalidInputs, ValueError) as exc:
        runner.error(str(exc), title="diffai: invalid inputs")
        return EXIT_TROUBLE

    def github() -> GitHub:
        session = make_session(config.github_token or "")
        return GitHub(session, config.github_api_url, config.github_repository, retry=retry)

    try:
        return run_action(config, github, runner)
    except Exception as exc:  # a bug: one escaped line, since a traceback could carry hostile names
        if environ.get("DIFFAI_DEBUG"):
            raise
        bug = f"internal error: {type(exc).__name__}: {exc} (a bug; rerun with DIFFAI_DEBUG=1)"
        runner.error(bug, title="diffai")
        return EXIT_TROUBLE


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


if __name__ == "__main__":
    sys.exit(main())
