"""The Action's decisions, run in-process through ``entrypoint.main`` against the fake GitHub.

Same entry point, same environment and same loopback HTTP as the subprocess tests,
without an interpreter start per case: the comment rules, the exit status for each
``fail-on``, GitHub failures, ``workflow_run`` lookups and the checks ``publish`` makes
on a hand-off that came from an untrusted fork.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from diffai.ci.pipeline import MAX_ANNOTATIONS, annotate
from diffai.ci.workflow import Runner
from tests.github_api import READ_ONLY_TOKEN, FakeGitHub, Pull, Reply
from tests.test_action_runner import (
    HEAD_SHA,
    MARKER,
    PERMISSION_TITLE,
    PR,
    ActionRunner,
    Step,
    make_runner,
    make_workspace,
    parse_commands,
    workflow_run_event,
    write_failing_candidate,
)

SAME = "examples/baseline.safetensors"  # compared with itself: pass, nothing changed


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path)


@pytest.fixture
def action(workspace: Path, github_api: FakeGitHub, tmp_path: Path) -> ActionRunner:
    return make_runner(workspace, github_api, tmp_path)


def run(action: ActionRunner, *args: object, **inputs: str) -> Step:
    return action.run(*args, in_process=True, **inputs)  # type: ignore[arg-type]


def candidate_for(verdict: str, workspace: Path) -> str:
    """A candidate that gives this verdict under the example policy."""
    if verdict == "fail":
        return write_failing_candidate(workspace)
    return {"pass": SAME, "warn": "examples/candidate.safetensors"}[verdict]


# --- when to comment ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "verdict", "existing", "expected"),
    [
        pytest.param("always", "pass", False, "created", id="always-identical"),
        pytest.param("on-change", "pass", False, "none", id="on-change-identical"),
        pytest.param("on-change", "warn", False, "created", id="on-change-changed"),
        pytest.param("on-change", "pass", True, "updated", id="on-change-keeps-it-current"),
        pytest.param("on-failure", "warn", False, "none", id="on-failure-warn"),
        pytest.param("on-failure", "fail", False, "created", id="on-failure-fail"),
        pytest.param("on-failure", "pass", True, "updated", id="on-failure-keeps-it-current"),
        pytest.param("never", "fail", False, "none", id="never"),
        pytest.param("never", "fail", True, "untouched", id="never-leaves-it-alone"),
    ],
)
def test_the_comment_rule(
    action: ActionRunner,
    github_api: FakeGitHub,
    workspace: Path,
    rule: str,
    verdict: str,
    existing: bool,
    expected: str,
) -> None:
    old = github_api.add_comment(PR, f"{MARKER}\nstale") if existing else None

    step = run(action, comment=rule, candidate=candidate_for(verdict, workspace))

    comments = github_api.comments_on(PR)
    assert step.outputs["verdict"] == verdict
    if expected == "none":
        assert comments == [] and step.outputs["comment-url"] == ""
    elif expected == "untouched":
        assert [c.body for c in comments] == [f"{MARKER}\nstale"]
    else:
        [comment] = comments
        assert comment.body.startswith(f"{MARKER}\n## ")
        assert (old is not None) == (expected == "updated")
    if rule == "never":
        assert github_api.received == []


# --- the exit status ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fail_on", "verdict", "code"),
    [
        pytest.param("error", "pass", 0, id="error-pass"),
        pytest.param("error", "warn", 0, id="error-warn"),
        pytest.param("error", "fail", 1, id="error-fail"),
        pytest.param("warning", "pass", 0, id="warning-pass"),
        pytest.param("warning", "warn", 1, id="warning-warn"),
        pytest.param("warning", "fail", 1, id="warning-fail"),
        pytest.param("never", "fail", 0, id="never-fail"),
    ],
)
def test_the_exit_status_follows_fail_on(
    action: ActionRunner, workspace: Path, fail_on: str, verdict: str, code: int
) -> None:
    step = run(action, "push", {}, fail_on=fail_on, candidate=candidate_for(verdict, workspace))

    assert (step.outputs["verdict"], step.code) == (verdict, code)


def test_an_unreadable_model_is_trouble_even_with_fail_on_never(
    action: ActionRunner, workspace: Path
) -> None:
    (workspace / "broken.safetensors").write_bytes(b"\xff" * 64)

    step = run(action, candidate="broken.safetensors", fail_on="never")

    [problem] = step.commands
    assert step.code == 2 and problem.name == "error"
    assert "broken.safetensors" in problem.message
    assert step.outputs == {} and step.summary == ""


# --- GitHub failures never flip the verdict ---------------------------------------------


def test_a_github_outage_is_one_warning_and_the_verdict_stands(
    action: ActionRunner, github_api: FakeGitHub, workspace: Path, validate_report
) -> None:
    github_api.fail("GET", "/comments$", *[Reply(503, "<html>down</html>")] * 5)

    step = run(action, candidate=write_failing_candidate(workspace))

    [warning] = step.annotations("warning", "diffai: GitHub API")
    assert "HTTP 503" in warning.message and "The verdict is unaffected" in warning.message
    assert step.code == 1 and step.outputs["verdict"] == "fail"
    validate_report(json.loads((step.report_dir / "report.json").read_text()))


def test_a_garbled_answer_from_github_is_a_warning_too(
    action: ActionRunner, github_api: FakeGitHub
) -> None:
    github_api.fail("POST", "/comments$", Reply(201, "<html>a proxy's page</html>"))

    step = run(action)

    [warning] = step.annotations("warning", "diffai: GitHub API")
    assert "unexpected" in warning.message
    assert step.code == 0 and step.outputs["verdict"] == "warn"


def test_an_empty_token_skips_github_with_a_warning(
    action: ActionRunner, github_api: FakeGitHub
) -> None:
    step = run(action, github_token="")

    assert step.code == 0 and github_api.received == []
    assert any("github-token is empty" in w.message for w in step.annotations("warning"))


def test_a_workflow_run_comments_on_its_pull_request_and_sets_the_head_status(
    action: ActionRunner, github_api: FakeGitHub
) -> None:
    github_api.pulls.append(Pull(PR, HEAD_SHA, "patch-1", "forker"))

    step = run(action, "workflow_run", workflow_run_event(), commit_status="true")

    [comment] = github_api.comments_on(PR)
    [status] = github_api.statuses
    assert step.code == 0 and comment.body.startswith(MARKER)
    assert (status["sha"], status["state"]) == (HEAD_SHA, "success")


def test_a_failing_verdict_sets_a_failure_status_on_the_pr_head(
    action: ActionRunner, github_api: FakeGitHub, workspace: Path
) -> None:
    run(action, commit_status="true", candidate=write_failing_candidate(workspace))

    [status] = github_api.statuses
    assert (status["sha"], status["state"], status["context"]) == (
        HEAD_SHA,
        "failure",
        "diffai/diffai",
    )
    assert status["description"].startswith("fail: 2 checks failed")


# --- publish: the hand-off comes from a fork ---------------------------------------------


@pytest.fixture
def analyzed(action: ActionRunner, github_api: FakeGitHub) -> Path:
    """The report directory of an analyze run on the fork's PR, and the PR on the server."""
    github_api.pulls.append(Pull(PR, HEAD_SHA, "patch-1", "forker"))
    step = run(action, token=READ_ONLY_TOKEN, mode="analyze")
    assert step.code == 0 and github_api.received == []
    return step.report_dir


def publish(action: ActionRunner, event: dict | None = None, **inputs: str) -> Step:
    inputs = {"baseline": "", "candidate": "", "policy": "", **inputs}
    return run(action, "workflow_run", event or workflow_run_event(), mode="publish", **inputs)


def edit_record(report_dir: Path, **changes: object) -> None:
    path = report_dir / "pr.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_publish_never_opens_a_model_file(
    action: ActionRunner, github_api: FakeGitHub, analyzed: Path
) -> None:
    step = publish(action, baseline="gone.safetensors", candidate="gone.safetensors")

    assert step.code == 0, step.stdout
    assert len(github_api.comments_on(PR)) == 1
    assert "## ⚠️ diffai: warn" in step.summary


def test_publish_follows_the_comment_rule_analyze_was_given(
    action: ActionRunner, github_api: FakeGitHub
) -> None:
    github_api.pulls.append(Pull(PR, HEAD_SHA, "patch-1", "forker"))
    run(action, token=READ_ONLY_TOKEN, mode="analyze", comment="on-failure")

    step = publish(action)  # its own comment input is the default, always

    assert step.code == 0 and github_api.comments == {}  # warn: on-failure stays silent
    assert json.loads((step.report_dir / "pr.json").read_text())["comment"] == "on-failure"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"number": PR + 1}, "is not the run's #7", id="another-pull-request"),
        pytest.param({"head_sha": "b" * 40}, "is not the run's", id="another-commit"),
        pytest.param({"number": "7"}, "number must be a positive integer", id="number-string"),
        pytest.param({"number": True}, "number must be a positive integer", id="number-bool"),
        pytest.param({"number": 0}, "number must be a positive integer", id="number-zero"),
        pytest.param({"head_sha": "abc"}, "head_sha must be 40 hex digits", id="short-sha"),
        pytest.param({"marker": "<!-- x -->"}, "is not this step's", id="other-marker"),
        pytest.param({"verdict": "pass"}, "not from the same run", id="mixed-runs"),
        pytest.param({"version": 2}, "version must be 1", id="future-version"),
    ],
)
def test_publish_refuses_a_tampered_hand_off(
    action: ActionRunner,
    github_api: FakeGitHub,
    analyzed: Path,
    changes: dict,
    message: str,
) -> None:
    edit_record(analyzed, **changes)

    step = publish(action, commit_status="true")

    [problem] = step.commands
    assert step.code == 2 and problem.name == "error"
    assert message in problem.message
    assert github_api.comments == {} and github_api.statuses == []


def test_publish_refuses_an_oversized_comment(
    action: ActionRunner, github_api: FakeGitHub, analyzed: Path
) -> None:
    (analyzed / "comment.md").write_text(MARKER + "\n" + "x" * 70_000)

    step = publish(action)

    assert step.code == 2 and "comment.md" in step.commands[0].message
    assert github_api.comments == {}


def test_publish_without_the_artifact_says_how_to_get_it(action: ActionRunner) -> None:
    step = publish(action)

    [problem] = step.commands
    assert step.code == 2 and "download the analyze run's artifact" in problem.message


def test_publish_with_a_read_only_token_names_the_permission(
    action: ActionRunner, github_api: FakeGitHub, analyzed: Path
) -> None:
    step = publish(action, token=READ_ONLY_TOKEN)

    [warning] = step.annotations("warning", PERMISSION_TITLE)
    assert "pull-requests: write" in warning.message
    assert step.code == 0 and github_api.comments == {}


def test_publish_of_a_push_run_sets_only_the_status(
    action: ActionRunner, github_api: FakeGitHub, analyzed: Path
) -> None:
    edit_record(analyzed, number=None)

    step = publish(action, commit_status="true")

    assert step.code == 0 and github_api.comments == {}
    assert [s["sha"] for s in github_api.statuses] == [HEAD_SHA]


# --- annotations ---------------------------------------------------------------------------


def test_annotations_stop_at_the_cap_with_a_count() -> None:
    checks = [
        {"rule": f"rule{i}", "severity": "error", "status": "fail", "message": f"broke {i}"}
        for i in range(MAX_ANNOTATIONS + 3)
    ]
    document = {"regression_test": {"checks": checks}, "deployment_readiness": {}}
    stream = io.StringIO()

    annotate(Runner(stream), document)

    commands = parse_commands(stream.getvalue())
    assert len(commands) == MAX_ANNOTATIONS + 1
    assert commands[-1].message == "3 more error checks failed: the step summary lists every one"
    assert commands[0].properties == {"title": "diffai: rule0"}
