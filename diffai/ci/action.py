"""The Action: compare, write the report directory, talk to GitHub, decide the exit status.

``run_action(config, github_factory, runner)`` is the whole Action below
``entrypoint.py``: it takes its collaborators as parameters, never reads the
environment, and opens a GitHub session only when it has something to say
(``github_factory`` is called at most once, and never in ``analyze`` mode).

Three modes share one pipeline:

- ``gate``: measure, write, comment, set the status, exit by the verdict;
- ``analyze`` (``pull_request`` from a fork, read-only token): the same without
  GitHub, plus ``pr.json`` so a later trusted run knows where to post;
- ``publish`` (``workflow_run``, write token): post what ``analyze`` wrote,
  without opening a model file.

Order matters for trust in CI: the report directory and the step summary are
written before any API call, and a failure to comment is a warning, so the
verdict never depends on GitHub being reachable or the token being writable.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from diffai.api import compare
from diffai.ci.config import Config
from diffai.ci.github import GitHub, pull_request_from_event
from diffai.ci.workflow import PR_RECORD, Handoff, Runner, load_event, pr_record, read_handoff
from diffai.errors import CannotComment, DiffaiError, GitHubError, ReportError, UsageError
from diffai.policy import default_policy, load_policy, policy_metric_files
from diffai.renderers.junit import render_junit
from diffai.renderers.markdown import plural, render_markdown
from diffai.renderers.outcome import failed_checks
from diffai.report import Report, write_atomically

EXIT_PASS, EXIT_FAIL, EXIT_TROUBLE = 0, 1, 2
MAX_ANNOTATIONS = 10  # per level: beyond this the log is noise; the summary lists them all
FAILING_VERDICTS = {"error": {"fail"}, "warning": {"fail", "warn"}, "never": set()}
STATUS_STATES = {"pass": "success", "warn": "success", "fail": "failure"}
EVENTS_WITH_PULLS = frozenset({"pull_request", "pull_request_target", "workflow_run"})
GitHubFactory = Callable[[], GitHub]
T = TypeVar("T")

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
}


@dataclass(frozen=True)
class Outcome:
    """What a run found and wrote, as every mode reports it."""

    document: dict[str, Any]
    body: str
    report_path: str
    markdown_path: str

    @property
    def verdict(self) -> str:
        return self.document["verdict"]

    @property
    def changed_tensors(self) -> int:
        summary = self.document["summary"]
        return summary["tensors_compared"] - summary["unchanged"]

    @property
    def changed(self) -> bool:
        """The models differ: a tensor that is not unchanged, or a checkpoint scalar."""
        return self.changed_tensors > 0 or self.document["summary"].get("scalars_changed", 0) > 0

    @property
    def readiness(self) -> float | None:
        return self.document["deployment_readiness"].get("readiness")

    def summary_line(self) -> str:
        """One line for the log and the commit status (GitHub keeps 140 characters)."""
        summary = self.document["summary"]
        failed = len(failed_checks(self.document))
        readiness = "n/a" if self.readiness is None else f"{self.readiness:.2f}"
        return (
            f"{self.verdict}: {plural(failed, 'check')} failed, {self.changed_tensors} of "
            f"{summary['tensors_compared']} tensors differ, readiness {readiness}"
        )


@dataclass(frozen=True)
class Target:
    """Where results go on GitHub: a pull request (or none) and the commit for the status."""

    number: int | None
    sha: str


@dataclass
class GitHubTrouble:
    """GitHub failures collected, so a read-only token yields one warning, not one per call."""

    mode: str
    refused: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def attempt(self, what: str, call: Callable[[], T]) -> T | None:
        try:
            return call()
        except CannotComment as exc:
            self.refused.append(f"{what} ({exc})")
        except GitHubError as exc:
            self.failed.append(f"could not {what}: {exc}")
        except Exception as exc:  # an answer we did not expect must not decide the verdict either
            self.failed.append(f"could not {what}: unexpected {type(exc).__name__}: {exc}")
        return None

    def report(self, runner: Runner) -> None:
        if self.refused:
            hint = READ_ONLY_HINTS[self.mode]
            refused = "; ".join(self.refused)
            runner.warning(
                f"diffai could not {refused}: {hint}. The verdict, the step summary and the "
                "report directory are unaffected.",
                title="diffai: no permission to comment",
            )
        for failure in self.failed:
            runner.warning(f"{failure}. The verdict is unaffected.", title="diffai: GitHub API")


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
        trouble = GitHubTrouble(config.mode)
        target = gate_target(config, load_event(config.github_event_path), github, trouble)
        url = publish_results(config, github, target, outcome, trouble)
        trouble.report(runner)
    return finish(config, runner, outcome, url)


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
    trouble = GitHubTrouble(config.mode)
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
}


def measure_and_write(config: Config, runner: Runner) -> Outcome:
    """Compare, then write everything that must exist whatever GitHub says."""
    report = measure(config)
    document = report.document
    body = render_markdown(document, config.marker)
    outcome = Outcome(document, body, *report_paths(config))
    write_report_dir(config, report, body)
    runner.append_summary(body)
    annotate(runner, document)
    return outcome


def measure(config: Config) -> Report:
    """The comparison, with every path resolved in the workspace but shown as the user wrote it.

    Inside the container the checkout is ``/github/workspace``; a reviewer knows
    the files by their repository paths, so the report says those. The policy's
    metrics files resolve against the policy's folder, inside the workspace too.
    """
    if config.baseline is None or config.candidate is None:  # Config requires both here
        raise UsageError("baseline and candidate are required")
    policy = default_policy()
    if config.policy:
        policy = dataclasses.replace(
            load_policy(config.resolve(config.policy)), source=config.policy
        )
    named_baseline, named_candidate = policy_metric_files(policy)
    report = compare(
        config.resolve(config.baseline),
        config.resolve(config.candidate),
        policy=policy,
        metrics_baseline=_resolved(config, config.metrics_baseline or named_baseline),
        metrics_candidate=_resolved(config, config.metrics_candidate or named_candidate),
    )
    report.document["baseline"]["path"] = config.baseline
    report.document["candidate"]["path"] = config.candidate
    return report


def _resolved(config: Config, path: str | Path | None) -> Path | None:
    return None if path is None else config.resolve(str(path))


def report_paths(config: Config) -> tuple[str, str]:
    """The report's and the comment's paths as the workflow's later steps see them."""
    return str(Path(config.report_dir) / "report.json"), str(Path(config.report_dir) / "comment.md")


def write_report_dir(config: Config, report: Report, body: str) -> None:
    folder = config.resolve(config.report_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"report-dir ({folder}): cannot create: {exc.strerror or exc}") from exc
    write_atomically(folder / "report.json", report.to_json())
    write_atomically(folder / "comment.md", body)
    write_atomically(folder / "junit.xml", render_junit(report.document))


def annotate(runner: Runner, document: dict[str, Any]) -> None:
    """One annotation per failed check, at most ``MAX_ANNOTATIONS`` per level, then a count."""
    emit = {"error": runner.error, "warning": runner.warning}
    failed = failed_checks(document)
    for severity, send in emit.items():
        mine = [check for check in failed if check["severity"] == severity]
        for check in mine[:MAX_ANNOTATIONS]:
            send(check["message"], title=f"diffai: {check['rule']}")
        if len(mine) > MAX_ANNOTATIONS:
            more = len(mine) - MAX_ANNOTATIONS
            send(f"{more} more {severity} checks failed: the step summary lists every one")


def github_has_work(config: Config, runner: Runner) -> bool:
    """Whether gate mode has anything to tell GitHub, and a token to tell it with."""
    commenting = config.comment != "never" and config.github_event_name in EVENTS_WITH_PULLS
    if not (commenting or config.commit_status):
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


COMMENT_RULES: dict[str, Callable[[Outcome], bool]] = {
    "always": lambda outcome: True,
    "on-change": lambda outcome: outcome.changed,
    "on-failure": lambda outcome: outcome.verdict == "fail",
    "never": lambda outcome: False,
}


def sticky_comment(config: Config, github: GitHub, target: Target, outcome: Outcome) -> str | None:
    """Post or update when the rule says so; update an existing comment anyway, so it never lies."""
    assert target.number is not None
    wanted = COMMENT_RULES[config.comment](outcome)
    if not wanted and github.find_comment(target.number, config.marker) is None:
        return None
    return github.upsert_comment(target.number, config.marker, outcome.body)


def commit_status(config: Config, github: GitHub, target: Target, outcome: Outcome) -> None:
    state = STATUS_STATES[outcome.verdict]
    description = outcome.summary_line()
    github.create_status(target.sha, state, config.status_context, description, config.run_url)


def finish(config: Config, runner: Runner, outcome: Outcome, comment_url: str) -> int:
    """Outputs and a log line for every verdict (a failing run still reports), then the status."""
    readiness = outcome.readiness
    runner.set_outputs(
        {
            "verdict": outcome.verdict,
            "report-path": outcome.report_path,
            "markdown-path": outcome.markdown_path,
            "comment-url": comment_url,
            "changed-tensors": str(outcome.changed_tensors),
            "readiness": "" if readiness is None else f"{readiness:.4g}",
        }
    )
    runner.log(f"{outcome.summary_line()}; report in {config.report_dir}")
    return EXIT_FAIL if outcome.verdict in FAILING_VERDICTS[config.fail_on] else EXIT_PASS
