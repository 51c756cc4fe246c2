"""``mode: audit`` over a scripted series of scheduled runs, against the fake GitHub.

Each run is the entry point in-process with a real loopback API, so the issue lifecycle,
its history block, pagination and refusals cross real HTTP exactly as on a runner.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cmarkgfm
import pytest

from diffai.ci.history import BLOCK_END, BLOCK_START
from tests.github_api import BOT, READ_ONLY_TOKEN, FakeGitHub, Issue
from tests.test_action_runner import (
    PERMISSION_TITLE,
    REPOSITORY,
    RUN_ID,
    ActionRunner,
    Step,
    make_runner,
    make_workspace,
    write_failing_candidate,
)

AUDIT_MARKER = "<!-- diffai-audit: drift -->"
RUN_URL = f"https://github.com/{REPOSITORY}/actions/runs/{RUN_ID}"
HISTORY_TITLE = "diffai: audit history"


@pytest.fixture
def action(github_api: FakeGitHub, tmp_path: Path) -> ActionRunner:
    """A checkout with the example models, audited on a schedule."""
    return make_runner(make_workspace(tmp_path), github_api, tmp_path)


def audit_run(action: ActionRunner, verdict: str, **inputs: str) -> Step:
    """One scheduled audit whose production model gives ``verdict`` under the example policy."""
    candidates = {
        "pass": "examples/baseline.safetensors",
        "warn": "examples/candidate.safetensors",
        "fail": "examples/failing.safetensors",
    }
    if verdict == "fail":
        write_failing_candidate(action.workspace)
    inputs = {"mode": "audit", "comment_tag": "drift", "candidate": candidates[verdict], **inputs}
    return action.run("schedule", {"schedule": "0 6 * * 1"}, in_process=True, **inputs)


def history_of(issue: Issue) -> list[dict]:
    """The runs in the issue's hidden block."""
    start = issue.body.index(BLOCK_START) + len(BLOCK_START)
    return json.loads(issue.body[start : issue.body.index(BLOCK_END, start)])["runs"]


def our_issues(github_api: FakeGitHub) -> list[Issue]:
    return [i for i in github_api.issues.values() if AUDIT_MARKER in i.body and i.login == BOT]


def issue_comments(github_api: FakeGitHub, issue: Issue) -> list[str]:
    return [c.body for c in github_api.comments_on(issue.number)]


# --- the lifecycle ---------------------------------------------------------------------


def test_the_issue_follows_the_verdict_over_a_series_of_runs(
    action: ActionRunner, github_api: FakeGitHub
) -> None:
    clean = audit_run(action, "pass")
    assert (clean.code, github_api.issues, clean.outputs["comment-url"]) == (0, {}, "")

    opened = audit_run(action, "warn")
    [issue] = github_api.issues.values()
    assert (issue.state, issue.login, issue.title) == (
        "open",
        BOT,
        "diffai: production model drift (drift)",
    )
    assert issue.body.startswith(f"{AUDIT_MARKER}\n## ⚠️ diffai audit: warn")
    assert opened.outputs["comment-url"] == f"https://github.com/{REPOSITORY}/issues/{issue.number}"
    assert issue_comments(github_api, issue) == []  # opening it is the news

    worse = audit_run(action, "fail")
    assert worse.code == 1  # fail-on: error
    assert list(github_api.issues.values()) == [issue] and issue.state == "open"
    assert "## ❌ diffai audit: fail" in issue.body
    [changed] = issue_comments(github_api, issue)
    assert changed.startswith("The verdict changed from warn to fail (fail: ")

    back = audit_run(action, "pass")
    assert back.code == 0 and issue.state == "closed" and issue.state_reason == "completed"
    assert issue_comments(github_api, issue)[-1].startswith("✅ Back within the policy (pass: ")

    again = audit_run(action, "warn")
    assert again.code == 0 and issue.state == "open"
    assert issue_comments(github_api, issue)[-1].startswith("⚠️ Drift is back (warn: ")
    assert len(issue_comments(github_api, issue)) == 3
    assert len(github_api.calls("POST", r"/issues$")) == 1  # one issue, ever
    runs = history_of(issue)
    assert [run["verdict"] for run in runs] == ["warn", "fail", "pass", "warn"]
    assert {run["run_url"] for run in runs} == {RUN_URL}
    assert runs[-1]["layers"][0][0] == "fc2" and 0 < runs[-1]["layers"][0][1] < 1


def test_the_same_verdict_again_edits_the_body_without_a_comment(
    action: ActionRunner, github_api: FakeGitHub
) -> None:
    audit_run(action, "warn")
    audit_run(action, "warn")

    [issue] = github_api.issues.values()
    assert issue_comments(github_api, issue) == []
    assert len(history_of(issue)) == 2
    assert len(github_api.calls("PATCH", r"/issues/\d+$")) == 1


def test_a_clean_run_after_the_issue_was_closed_only_records_itself(
    action: ActionRunner, github_api: FakeGitHub
) -> None:
    audit_run(action, "warn")
    audit_run(action, "pass")
    audit_run(action, "pass")

    [issue] = github_api.issues.values()
    assert issue.state == "closed" and len(issue_comments(github_api, issue)) == 1
    assert [run["verdict"] for run in history_of(issue)] == ["warn", "pass", "pass"]


# --- the history -----------------------------------------------------------------------


def test_the_history_keeps_the_last_n_runs(action: ActionRunner, github_api: FakeGitHub) -> None:
    for _ in range(4):
        audit_run(action, "warn", audit_history="3")
    audit_run(action, "fail", audit_history="3")

    [issue] = github_api.issues.values()
    assert [run["verdict"] for run in history_of(issue)] == ["warn", "warn", "fail"]
    assert "### Runs, newest first" in issue.body


def test_a_manual_edit_of_the_visible_text_keeps_the_history(
    action: ActionRunner, github_api: FakeGitHub
) -> None:
    audit_run(action, "warn")
    [issue] = github_api.issues.values()
    block = issue.body[issue.body.index(BLOCK_START) :]
    issue.body = f"{AUDIT_MARKER}\nTriaged by @octocat: retrain scheduled.\n\n{block}"

    step = audit_run(action, "warn")

    assert step.annotations("warning", HISTORY_TITLE) == []
    assert len(history_of(issue)) == 2
    assert "Triaged by" not in issue.body  # the body is diffai's; people talk in comments


def test_a_history_block_that_is_not_ours_starts_a_new_history(
    action: ActionRunner, github_api: FakeGitHub
) -> None:
    audit_run(action, "warn")
    [issue] = github_api.issues.values()
    issue.body = issue.body.replace('"verdict": "warn"', '"verdict": "warn", "admin": true')

    step = audit_run(action, "fail")

    [warning] = step.annotations("warning", HISTORY_TITLE)
    assert warning.message.startswith("the audit issue's history block cannot be used (runs[0]")
    assert warning.message.endswith(": starting a new history")
    assert [run["verdict"] for run in history_of(issue)] == ["fail"]
    assert step.code == 1 and issue.state == "open"


# --- what GitHub allows and how it lists -----------------------------------------------


def test_a_read_only_token_degrades_to_summary_and_artifact(
    action: ActionRunner, github_api: FakeGitHub
) -> None:
    step = audit_run(action, "fail", token=READ_ONLY_TOKEN)

    assert step.code == 1 and github_api.issues == {}
    [warning] = step.annotations("warning", PERMISSION_TITLE)
    assert "could not keep the audit issue" in warning.message
    assert "'permissions: issues: write' (and 'contents: read' for the checkout)" in warning.message
    assert "## ❌ diffai: fail" in step.summary
    assert sorted(p.name for p in step.report_dir.iterdir()) == [
        "comment.md",
        "junit.xml",
        "report.html",
        "report.json",
    ]


def test_its_issue_behind_110_others_is_found_on_page_two(
    action: ActionRunner, github_api: FakeGitHub
) -> None:
    for index in range(105):
        github_api.add_issue(f"issue {index}", login="reviewer")
    github_api.add_issue(f"{AUDIT_MARKER}\nquoted by a person", login="reviewer")
    for _ in range(4):
        github_api.add_issue(f"{AUDIT_MARKER}\na pull request", login=BOT, is_pull=True)
    ours = github_api.add_issue(f"{AUDIT_MARKER}\nold body", login=BOT, title="drift")

    step = audit_run(action, "warn")

    assert ours.number == 111 and len(github_api.issues) == 111
    assert ours.body.startswith(f"{AUDIT_MARKER}\n## ⚠️ diffai audit: warn")
    assert step.outputs["comment-url"].endswith(f"/issues/{ours.number}")
    listings = github_api.calls("GET", r"/issues$")
    assert [call.query.get("page", "1") for call in listings] == ["1", "2"]
    assert listings[0].query == {
        "state": "all",
        "sort": "created",
        "direction": "asc",
        "per_page": "100",
    }


# --- the body as GitHub shows it -------------------------------------------------------


def test_the_body_renders_with_well_formed_mermaid_charts(
    action: ActionRunner, github_api: FakeGitHub
) -> None:
    for verdict in ("warn", "fail", "warn"):
        audit_run(action, verdict)
    [issue] = github_api.issues.values()

    unsafe = cmarkgfm.Options.CMARK_OPT_UNSAFE  # keep HTML comments, as GitHub does (hidden)
    html = cmarkgfm.github_flavored_markdown_to_html(issue.body, options=unsafe)
    charts = re.findall(r'<pre lang="mermaid"><code>(.*?)</code></pre>', html, re.S)
    assert len(charts) == 3  # readiness, layers, then the latest report's own
    for chart in charts[:2]:
        lines = [line.strip() for line in chart.strip().splitlines()]
        body = lines[1:] if lines[0].startswith("%%{init:") else lines
        assert body[0] == "xychart-beta" and body[1].startswith("title &quot;")
        [axis] = [line for line in body if line.startswith("x-axis [")]
        ticks = len(re.findall(r"&quot;\d\d-\d\d \d\d:\d\d&quot;", axis))
        series = [line for line in body if line.startswith("line [")]
        assert ticks == 3 and series
        assert all(len(line[6:-1].split(", ")) == ticks for line in series)
        assert all(re.fullmatch(r"line \[[0-9.e, -]+\]", line) for line in series)
    assert "<!-- diffai-history" in html  # kept as a hidden HTML comment, not shown
    assert len(issue.body) <= 65_536
