"""``diffai ci gitlab``: the Action's gate in a GitLab CI job, with one sticky MR note.

The flags are the Action's inputs (``--comment-tag`` is ``comment-tag``) and go through
the same ``Config`` checks; the job's variables say where to post:
``CI_API_V4_URL``, ``CI_PROJECT_ID``, ``CI_MERGE_REQUEST_IID``,
``CI_MERGE_REQUEST_PROJECT_URL``, and ``DIFFAI_GITLAB_TOKEN`` for a project access token
(``CI_JOB_TOKEN`` cannot write notes). The report folder holds ``junit.xml`` for
``artifacts:reports:junit``. Messages go to the job log, one escaped line each, so a
hostile tensor name cannot draw a fake log section or colour the log.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from diffai.ci.config import COMMENT_POLICIES, FAIL_ON, Config, InvalidInputs
from diffai.ci.github_retry import RetryPolicy
from diffai.ci.gitlab import GitLab, MergeRequestNotes, make_gitlab_session
from diffai.ci.pipeline import (
    EXIT_TROUBLE,
    GitHubTrouble,
    Outcome,
    finish,
    keep_sticky,
    measure_and_write,
)
from diffai.ci.sticky import Sticky
from diffai.ci.workflow import escape_data
from diffai.errors import DiffaiError

TOKEN_VARIABLE = "DIFFAI_GITLAB_TOKEN"
NO_TOKEN = (
    f"{TOKEN_VARIABLE} is not set: no merge request note. CI_JOB_TOKEN cannot write merge "
    "request notes; create a project access token (scope api, role Reporter or higher) and "
    f"store it as a masked CI/CD variable named {TOKEN_VARIABLE}"
)
GITLAB_HINT = (
    f"the token in {TOKEN_VARIABLE} may not write notes here (CI_JOB_TOKEN cannot write merge "
    "request notes at all): use a project access token with scope api, role Reporter or higher"
)
FLAGS = ("policy", "comment", "comment-tag", "fail-on", "report-dir")
FLAGS += ("metrics-baseline", "metrics-candidate")


@dataclass
class JobLog:
    """The ``Runner`` of a GitLab job: plain, escaped lines; GitLab has no outputs or summary."""

    stream: TextIO

    def error(self, message: str, title: str | None = None) -> None:
        self._line("error", message)

    def warning(self, message: str, title: str | None = None) -> None:
        self._line("warning", message)

    def log(self, message: str) -> None:
        self._line("", message)

    def set_outputs(self, outputs: Mapping[str, str]) -> None:
        """GitLab reads no step outputs; the report folder carries the figures."""

    def append_summary(self, markdown: str) -> None:
        """GitLab has no step summary; the note and the report folder carry it."""

    def _line(self, level: str, message: str) -> None:
        prefix = f"diffai: {level}: " if level else "diffai: "
        self.stream.write(prefix + escape_data(message) + "\n")
        self.stream.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffai ci gitlab",
        description="Gate a GitLab merge request: compare, write the report folder "
        "(junit.xml for artifacts:reports:junit), keep one sticky merge request note.",
    )
    parser.add_argument("baseline")
    parser.add_argument("candidate")
    parser.add_argument("--policy")
    parser.add_argument("--comment", choices=COMMENT_POLICIES, default="always")
    parser.add_argument("--comment-tag", default="diffai")
    parser.add_argument("--fail-on", choices=FAIL_ON, default="error")
    parser.add_argument("--report-dir", default="diffai-report")
    parser.add_argument("--metrics-baseline")
    parser.add_argument("--metrics-candidate")
    return parser


def main(argv: Sequence[str], environ: Mapping[str, str], stream: TextIO) -> int:
    """Run the gate in a GitLab job; 0 pass, 1 fail, 2 trouble, as the Action."""
    log = JobLog(stream)
    args = build_parser().parse_args(list(argv))
    try:
        config = Config.from_environ(_as_inputs(args, environ), Path.cwd())
        outcome = measure_and_write(config, log)
    except (InvalidInputs, DiffaiError) as exc:
        log.error(str(exc))
        return EXIT_TROUBLE
    url = post_note(config, environ, outcome, log) if environ.get("CI_MERGE_REQUEST_IID") else ""
    return finish(config, log, outcome, url)


def _as_inputs(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, str]:
    """The flags as the Action's inputs, so one ``Config`` checks both the same way."""
    inputs = {"INPUT_BASELINE": args.baseline, "INPUT_CANDIDATE": args.candidate}
    for flag in FLAGS:
        value = getattr(args, flag.replace("-", "_"))
        inputs[f"INPUT_{flag.upper().replace('-', '_')}"] = value or ""
    return {**inputs, "GITHUB_WORKSPACE": environ.get("CI_PROJECT_DIR", "")}


def post_note(config: Config, environ: Mapping[str, str], outcome: Outcome, log: JobLog) -> str:
    """The sticky note on the pipeline's merge request; its URL, or '' (with a warning)."""
    token = environ.get(TOKEN_VARIABLE, "").strip()
    if not token:
        log.warning(NO_TOKEN)
        return ""
    iid_text = environ["CI_MERGE_REQUEST_IID"].strip()
    if not iid_text.isascii() or not iid_text.isdigit():
        log.warning(f"CI_MERGE_REQUEST_IID {iid_text!r} is not a number: no merge request note")
        return ""
    iid = int(iid_text)
    notes = MergeRequestNotes(gitlab_client(environ, token), iid, merge_request_url(environ, iid))
    trouble = GitHubTrouble(GITLAB_HINT)
    sticky = Sticky(notes, config.marker)
    url = trouble.attempt(
        f"note on merge request !{iid}", lambda: keep_sticky(config.comment, sticky, outcome)
    )
    trouble.report(log)
    return url or ""


def gitlab_client(environ: Mapping[str, str], token: str) -> GitLab:
    delay = float(environ.get("DIFFAI_RETRY_BASE_DELAY", "1"))
    api_url = environ.get("CI_API_V4_URL", "https://gitlab.com/api/v4")
    project = environ.get("CI_PROJECT_ID", "")
    return GitLab(make_gitlab_session(token), api_url, project, retry=RetryPolicy(base_delay=delay))


def merge_request_url(environ: Mapping[str, str], iid: int) -> str:
    project_url = environ.get("CI_MERGE_REQUEST_PROJECT_URL") or environ.get("CI_PROJECT_URL", "")
    return f"{project_url.rstrip('/')}/-/merge_requests/{iid}"
