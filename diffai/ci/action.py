"""The Action: compare, write the report directory, talk to GitHub, decide the exit status.

``run_action(config, github_factory, runner)`` is the whole Action below
``entrypoint.py``: it takes its collaborators as parameters, never reads the
environment, and opens a GitHub session only when it has something to say
(``github_factory`` is called at most once, and never in ``analyze`` mode).

Four modes share one pipeline (``pipeline.py``):

- ``gate``: measure, write, comment, set the status, exit by the verdict;
- ``analyze`` (``pull_request`` from a fork, read-only token): the same without
  GitHub, plus ``pr.json`` so a later trusted run knows where to post;
- ``publish`` (``workflow_run``, write token): post what ``analyze`` wrote,
  without opening a model file;
- ``audit`` (``schedule``): measure, write, keep one sticky issue with the run
  history (``audit.py``).

Order matters for trust in CI: the report directory and the step summary are
written before any API call, and a failure to comment is a warning, so the
verdict never depends on GitHub being reachable or the token being writable.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diffai.ci.audit import AUDIT_HINT, audit
from diffai.ci.config import Config
from diffai.ci.github import GitHub, PullComments, pull_request_from_event
from diffai.ci.pipeline import (
    EXIT_TROUBLE,
    GitHubTrouble,
    Outcome,
    finish,
    keep_sticky,
    measure_and_write,
    report_paths,
)
from diffai.ci.release import RELEASE_HINT, attach_report, wants_release_assets
from diffai.ci.sticky import Sticky
from diffai.ci.workflow import PR_RECORD, Handoff, Runner, load_event, pr_record, read_handoff
from diffai.errors import DiffaiError, UsageError
from diffai.report import write_atomically

STATUS_STATES = {"pass": "success", "warn": "success", "fail": "failure"}
EVENTS_WITH_PULLS = frozenset({"pull_request", "pull_request_target", "workflow_run"})
GitHubFactory = Callable[[], GitHub]

READ_ONLY_HINTS = {
    "gate": (
        "the token is read-only, as it is on pull requests from forks. To comment there, "
        "run this action with mode: analyze under pull_request and mode: publish under "
        "workflow_run (docs/action.md, 'Pull requests from forks')"
    ),
    "publish": (
        "give this job 'permissions: pull-requests: write' (and 'statuses: write' for "
        "commit-status)"
    ),
    "audit": AUDIT_HINT,
}


@dataclass(frozen=True)
class Target:
    """Where results go on GitHub: a pull request (or none) and the commit for the status."""

    number: int | None
    sha: str


def run_action(config: Config, github_factory: GitHubFactory, runner: Runner) -> int:
    """Run the configured mode; any ``DiffaiError`` is one ``::error::`` and exit status 2."""
    try:
        return MODES[config.mode](config, functools.cache(github_factory), runner)
    except DiffaiError as exc:
        runner.error(str(exc), title="diffai")
        return EXIT_TROUBLE


def gate(config: Config, github: GitHubFactory, runner: Runner) -> int:
    outcome = measure_and_write(config, runner)
    url = ""
    if github_has_work(config, runner):
        trouble = GitHubTrouble(READ_ONLY_HINTS[config.mode])
        event = load_event(config.github_event_path)
        target = gate_target(config, event, github, trouble)
        url = publish_results(config, github, target, outcome, trouble)
        trouble.report(runner)
        if wants_release_assets(config):
            release_assets(config, github, event, runner)
    return finish(config, runner, outcome, url)


def release_assets(
    config: Config, github: GitHubFactory, event: dict[str, Any], runner: Runner
) -> None:
    """The report files on the release; a refusal is a warning with the permission to add."""
    trouble = GitHubTrouble(RELEASE_HINT, title="diffai: no permission to attach the report")
    urls = trouble.attempt("attach the report to the release",
                           lambda: attach_report(config, github(), event))  # fmt: skip
    trouble.report(runner)
    if urls:
        runner.log(f"attached to the release: {', '.join(urls)}")


def analyze(config: Config, github: GitHubFactory, runner: Runner) -> int:
    outcome = measure_and_write(config, runner)
    event = load_event(config.github_event_path)
    pull = pull_request_from_event(config.github_event_name, event)
    target = Target(pull.number, pull.head_sha) if pull else Target(None, config.github_sha)
    facts = Handoff(
        number=target.number,
        head_sha=target.sha,
        comment=config.comment,
        verdict=outcome.verdict,
        changed=outcome.changed,
    )
    write_atomically(config.resolve(config.report_dir) / PR_RECORD, pr_record(facts, config.marker))
    return finish(config, runner, outcome, "")


def publish(config: Config, github: GitHubFactory, runner: Runner) -> int:
    handoff = read_handoff(config.resolve(config.report_dir), config.marker)
    config = dataclasses.replace(config, comment=handoff.comment)  # the rule analyze was given
    outcome = handoff_outcome(config, handoff)
    runner.append_summary(outcome.body)
    trouble = GitHubTrouble(READ_ONLY_HINTS[config.mode])
    event = load_event(config.github_event_path)
    target = publish_target(config, handoff, event, github, trouble)
    url = publish_results(config, github, target, outcome, trouble)
    trouble.report(runner)
    return finish(config, runner, outcome, url)


def handoff_outcome(config: Config, handoff: Handoff) -> Outcome:
    """The outcome analyze recorded; its files must agree, or they are not one run's."""
    outcome = Outcome(handoff.document, handoff.body, *report_paths(config))
    try:
        facts = (outcome.verdict, outcome.changed, outcome.summary_line())
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise UsageError(f"{outcome.report_path}: not a diffai report ({exc!r})") from exc
    if facts[:2] != (handoff.verdict, handoff.changed):
        raise UsageError(f"{PR_RECORD} and {outcome.report_path} are not from the same run")
    return outcome


MODES: dict[str, Callable[[Config, GitHubFactory, Runner], int]] = {
    "gate": gate,
    "analyze": analyze,
    "publish": publish,
    "audit": audit,
}


def github_has_work(config: Config, runner: Runner) -> bool:
    """Whether gate mode has anything to tell GitHub, and a token to tell it with."""
    commenting = config.comment != "never" and config.github_event_name in EVENTS_WITH_PULLS
    if not (commenting or config.commit_status or wants_release_assets(config)):
        return False
    if not config.github_token:
        runner.warning("github-token is empty: no comment and no commit status")
        return False
    return True


def gate_target(
    config: Config, event: dict[str, Any], github: GitHubFactory, trouble: GitHubTrouble
) -> Target:
    """The PR of a pull_request event, or of a workflow_run by lookup; else the pushed commit."""
    if config.github_event_name != "workflow_run":
        pull = pull_request_from_event(config.github_event_name, event)
        return Target(pull.number, pull.head_sha) if pull else Target(None, config.github_sha)
    head_sha = event["workflow_run"]["head_sha"]
    pull = trouble.attempt(
        "find the pull request of the workflow run", lambda: github().pull_request_for_run(event)
    )
    return Target(pull.number if pull else None, head_sha)


def publish_target(
    config: Config,
    handoff: Handoff,
    event: dict[str, Any],
    github: GitHubFactory,
    trouble: GitHubTrouble,
) -> Target:
    """Where the hand-off says to post, once the trusted event confirms it.

    ``pr.json`` comes from a fork's run and could name any pull request or commit.
    Under ``workflow_run`` the event (written by GitHub, not the fork) names the
    commit, and its pull request is looked up: a fork can only post on its own
    PR, and only set the status of its own commit.
    """
    if config.github_event_name != "workflow_run":
        return Target(handoff.number, handoff.head_sha)
    run_sha = event["workflow_run"]["head_sha"]
    if handoff.head_sha != run_sha:
        raise UsageError(f"{PR_RECORD}: head_sha {handoff.head_sha} is not the run's {run_sha}")
    if handoff.number is None:
        return Target(None, run_sha)
    pull = trouble.attempt(
        "find the pull request of the workflow run", lambda: github().pull_request_for_run(event)
    )
    if pull is not None and pull.number != handoff.number:
        theirs = f"#{pull.number}"
        raise UsageError(f"{PR_RECORD}: pull request #{handoff.number} is not the run's {theirs}")
    return Target(pull.number if pull else None, run_sha)


def publish_results(
    config: Config, github: GitHubFactory, target: Target, outcome: Outcome, trouble: GitHubTrouble
) -> str:
    """Comment and status, each failure collected in ``trouble``; the comment's URL or ''."""
    url = None
    if target.number is not None and config.comment != "never":
        where = f"comment on pull request #{target.number}"
        url = trouble.attempt(where, lambda: sticky_comment(config, github(), target, outcome))
    if config.commit_status and target.sha:
        where = f"set the commit status of {target.sha[:12]}"
        trouble.attempt(where, lambda: commit_status(config, github(), target, outcome))
    return url or ""


def sticky_comment(config: Config, github: GitHub, target: Target, outcome: Outcome) -> str | None:
    assert target.number is not None
    sticky = Sticky(PullComments(github, target.number), config.marker)
    return keep_sticky(config.comment, sticky, outcome)


def commit_status(config: Config, github: GitHub, target: Target, outcome: Outcome) -> None:
    state = STATUS_STATES[outcome.verdict]
    description = outcome.summary_line()
    github.create_status(target.sha, state, config.status_context, description, config.run_url)
