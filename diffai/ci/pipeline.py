"""What every mode and every forge shares: measure, write the report folder, annotate, finish.

The Action's modes (``action.py``, ``audit.py``) and the GitLab command (``gitlab.py``) are
this pipeline with different places to post: the report directory and the step summary
are written before any API call, and a failure to post is a warning, so the verdict never
depends on the forge being reachable or the token being writable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from diffai.api import compare
from diffai.ci.config import Config
from diffai.ci.sticky import Sticky
from diffai.errors import CannotComment, GitHubError, ReportError, UsageError
from diffai.policy import default_policy, load_policy, policy_metric_files
from diffai.renderers.html_report import render_html
from diffai.renderers.junit import render_junit
from diffai.renderers.markdown import SUMMARY_LIMIT, plural, render_markdown
from diffai.renderers.outcome import failed_checks
from diffai.report import Report, write_atomically

EXIT_PASS, EXIT_FAIL, EXIT_TROUBLE = 0, 1, 2
MAX_ANNOTATIONS = 10  # per level: beyond this the log is noise; the summary lists them all
FAILING_VERDICTS = {"error": {"fail"}, "warning": {"fail", "warn"}, "never": set()}
T = TypeVar("T")


class Runner(Protocol):
    """Where a run talks to its CI: GitHub's workflow commands, or a GitLab job log."""

    def error(self, message: str, title: str | None = None) -> None: ...

    def warning(self, message: str, title: str | None = None) -> None: ...

    def log(self, message: str) -> None: ...

    def set_outputs(self, outputs: dict[str, str]) -> None: ...

    def append_summary(self, markdown: str) -> None: ...


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


@dataclass
class GitHubTrouble:
    """GitHub failures collected, so a read-only token yields one warning, not one per call."""

    hint: str  # what to do about a refusal: the permission this mode needs
    title: str = "diffai: no permission to comment"
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
            hint = self.hint
            refused = "; ".join(self.refused)
            runner.warning(
                f"diffai could not {refused}: {hint}. The verdict, the step summary and the "
                "report directory are unaffected.",
                title=self.title,
            )
        for failure in self.failed:
            runner.warning(f"{failure}. The verdict is unaffected.", title="diffai: GitHub API")


def measure_and_write(config: Config, runner: Runner) -> Outcome:
    """Compare, then write everything that must exist whatever GitHub says."""
    report = measure(config)
    document = report.document
    body = render_markdown(document, config.marker)
    outcome = Outcome(document, body, *report_paths(config))
    write_report_dir(config, report, body)
    runner.append_summary(render_markdown(document, limit=SUMMARY_LIMIT))
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
        config.resolve_model(config.baseline),
        config.resolve_model(config.candidate),
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
    write_atomically(folder / "report.json", report.to_json_bytes())
    write_atomically(folder / "comment.md", body)
    write_atomically(folder / "junit.xml", render_junit(report.document))
    write_atomically(folder / "report.html", render_html(report.document))


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


COMMENT_RULES: dict[str, Callable[[Outcome], bool]] = {
    "always": lambda outcome: True,
    "on-change": lambda outcome: outcome.changed,
    "on-failure": lambda outcome: outcome.verdict == "fail",
    "never": lambda outcome: False,
}


def keep_sticky(rule: str, sticky: Sticky, outcome: Outcome) -> str | None:
    """Post or update when the rule says so; update an existing post anyway, so it never lies."""
    existing = sticky.find()
    if existing is None and not COMMENT_RULES[rule](outcome):
        return None
    return sticky.write(outcome.body, existing).url


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
