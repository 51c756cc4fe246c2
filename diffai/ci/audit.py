"""``mode: audit``: compare the reference with production on a schedule, keep one sticky issue.

The issue (one per ``comment-tag``, found by its own marker among our issues, open or
closed) follows the verdict:

| issue      | verdict warn/fail                          | verdict pass                  |
|------------|--------------------------------------------|-------------------------------|
| none       | opened                                     | nothing (no drift to report)  |
| open       | body edited; a comment if the verdict moved | commented on, then closed     |
| closed     | reopened, with a comment                   | body edited (history), quiet  |

The body is edited, never answered, on every run: it holds the trend and the latest
report, and (``history.py``) the hidden block of the last runs' figures. Commenting is
for what a watcher must hear about: a new verdict, the drift gone, the drift back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from diffai.ci.config import Config
from diffai.ci.github import GitHub, Issues
from diffai.ci.history import BadHistory, History, decode_block, encode_block, summarize
from diffai.ci.pipeline import GitHubTrouble, Outcome, Runner, finish, measure_and_write
from diffai.ci.sticky import Post, Sticky, trim_body
from diffai.renderers.audit import render_audit_issue
from diffai.renderers.markdown import render_markdown

AUDIT_HINT = (
    "give this job 'permissions: issues: write' (and 'contents: read' for the checkout); "
    "the audit issue keeps its run history, so without it the trend is not recorded"
)
ISSUE_LIMIT = 65_536
MIN_REPORT_ROOM = 2_000  # below this the latest report is only named, not cut to nothing
REPORT_ELSEWHERE = "The latest report did not fit here: it is in the workflow run's artifact."


@dataclass(frozen=True)
class Step:
    """What the issue needs besides its body: a state change, a comment, or neither."""

    state: str | None
    comment: str | None


def audit(config: Config, github: Callable[[], GitHub], runner: Runner) -> int:
    outcome = measure_and_write(config, runner)
    url = ""
    if not config.github_token:
        runner.warning("github-token is empty: no audit issue, and no history recorded")
    else:
        trouble = GitHubTrouble(AUDIT_HINT)
        kept = trouble.attempt(
            "keep the audit issue", lambda: keep_issue(config, github(), outcome, runner)
        )
        url = kept or ""
        trouble.report(runner)
    return finish(config, runner, outcome, url)


def keep_issue(config: Config, github: GitHub, outcome: Outcome, runner: Runner) -> str | None:
    """Open, edit, close or reopen the audit issue; its URL, or None when there is none."""
    sticky = Sticky(Issues(github, issue_title(config)), config.audit_marker)
    existing = sticky.find()
    drifting = outcome.verdict != "pass"
    if existing is None and not drifting:
        return None
    history = read_history(existing, config, runner)
    step = next_step(existing, history, outcome)
    run = summarize(outcome.document, datetime.now(UTC), config.run_url)
    history = history.add(run, config.audit_history)
    post = sticky.write(issue_body(config, outcome, history), existing)
    apply_step(github, post, step)
    return post.url


def read_history(existing: Post | None, config: Config, runner: Runner) -> History:
    """The runs the issue remembers; a block that is not ours starts a new history, warned."""
    if existing is None:
        return History()
    try:
        return decode_block(existing.body, config.run_url_prefix)
    except BadHistory as exc:
        runner.warning(
            f"the audit issue's history block cannot be used ({exc}): starting a new history",
            title="diffai: audit history",
        )
        return History()


def next_step(existing: Post | None, history: History, outcome: Outcome) -> Step:
    """The table in this module's docstring, for an issue that exists or is about to."""
    if existing is None:
        return Step(None, None)  # opening it is the news
    was_open = existing.raw.get("state") == "open"
    drifting = outcome.verdict != "pass"
    line = outcome.summary_line()
    if was_open and not drifting:
        return Step("closed", f"✅ Back within the policy ({line}). Closing this issue.")
    if not was_open and drifting:
        return Step("open", f"⚠️ Drift is back ({line}). Reopening this issue.")
    previous = history.last_verdict
    if was_open and previous not in (None, outcome.verdict):
        return Step(None, f"The verdict changed from {previous} to {outcome.verdict} ({line}).")
    return Step(None, None)


def apply_step(github: GitHub, post: Post, step: Step) -> None:
    """Reopen before saying why, say why before closing: the thread then reads in order."""
    if step.state == "open":
        github.set_issue_state(post.id, "open")
    if step.comment:
        github.comment(post.id, step.comment)
    if step.state == "closed":
        github.set_issue_state(post.id, "closed")


def issue_body(config: Config, outcome: Outcome, history: History) -> str:
    """The trend, the runs and the latest report, the report cut to what the rest leaves.

    The hidden block comes last, and a body cut at the end would lose it: so the body is
    measured without the report first, and only the report gives way.
    """

    def render(report: str) -> str:
        return render_audit_issue(
            outcome.document,
            history.runs,
            marker=config.audit_marker,
            summary_line=outcome.summary_line(),
            report=report,
            block=encode_block(history),
        )

    room = ISSUE_LIMIT - len(render(""))
    if room < MIN_REPORT_ROOM:
        return render(REPORT_ELSEWHERE)
    return render(trim_body(render_markdown(outcome.document), "", room))


def issue_title(config: Config) -> str:
    return f"diffai: production model drift ({config.comment_tag})"
