"""``diffai ci gitlab`` in a GitLab job, against a loopback GitLab: one sticky MR note."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from diffai import cli
from diffai.ci import gitlab_cli
from tests.gitlab_api import (
    BOT_ID,
    GUEST_TOKEN,
    JOB_TOKEN,
    PROJECT_ID,
    PROJECT_TOKEN,
    FakeGitLab,
)

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- diffai-comment: diffai -->"
MR_URL = "https://gitlab.example.com/group/models/-/merge_requests/12"
ARGS = ["examples/baseline.safetensors", "examples/candidate.safetensors"]
ARGS += ["--policy", "examples/policy.yaml"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("*.py"))
    return tmp_path


def job(
    gitlab_api: FakeGitLab, project: Path, *args: str, token: str | None = PROJECT_TOKEN, **env: str
) -> tuple[int, str]:
    """One job of a merge request pipeline; the exit status and the job log."""
    environ = {
        "CI_PROJECT_DIR": str(project),
        "CI_API_V4_URL": gitlab_api.api_url,
        "CI_PROJECT_ID": PROJECT_ID,
        "CI_MERGE_REQUEST_IID": "12",
        "CI_MERGE_REQUEST_PROJECT_URL": "https://gitlab.example.com/group/models",
        "CI_JOB_TOKEN": JOB_TOKEN,
        "DIFFAI_RETRY_BASE_DELAY": "0.01",
        **({"DIFFAI_GITLAB_TOKEN": token} if token else {}),
        **env,
    }
    log = io.StringIO()
    code = gitlab_cli.main([*ARGS, *args], environ, log)
    return code, log.getvalue()


def ours(gitlab_api: FakeGitLab) -> list:
    return [note for note in gitlab_api.notes if note.author_id == BOT_ID]


def test_the_note_is_created_then_edited_in_place(gitlab_api: FakeGitLab, project: Path) -> None:
    first, log = job(gitlab_api, project)
    [note] = ours(gitlab_api)
    assert first == 0 and note.body.startswith(f"{MARKER}\n## ⚠️ diffai: warn")
    assert f"{MR_URL}#note_{note.id}" not in log  # no outputs in GitLab; the log says the verdict
    assert "diffai: warn: 1 check failed" in log

    failing, _ = job(gitlab_api, project, "--fail-on", "warning")
    unchanged, _ = job(gitlab_api, project)

    assert (failing, unchanged) == (1, 0)
    assert ours(gitlab_api) == [note]
    assert len(gitlab_api.calls("POST")) == 1 and len(gitlab_api.calls("PUT")) == 0
    assert (project / "diffai-report" / "junit.xml").read_text().startswith("<?xml")


def test_a_persons_note_and_a_system_note_with_the_marker_are_left_alone(
    gitlab_api: FakeGitLab, project: Path
) -> None:
    person = gitlab_api.add_note(f"{MARKER}\nquoted")
    system = gitlab_api.add_note(f"{MARKER}\nchanged the description", BOT_ID, system=True)

    job(gitlab_api, project)

    assert person.body == f"{MARKER}\nquoted" and system.body.endswith("description")
    assert len(ours(gitlab_api)) == 2  # the system note, and our new one


@pytest.mark.parametrize("link_headers", [True, False], ids=["link", "x-next-page"])
def test_its_note_behind_110_others_is_found_on_page_two(
    gitlab_api: FakeGitLab, project: Path, link_headers: bool
) -> None:
    gitlab_api.link_headers = link_headers
    for index in range(110):
        gitlab_api.add_note(f"review {index}")
    mine = gitlab_api.add_note(f"{MARKER}\nold", BOT_ID)

    job(gitlab_api, project)

    assert mine.body.startswith(f"{MARKER}\n## ⚠️ diffai: warn") and len(gitlab_api.notes) == 111
    listings = [query for method, path, query in gitlab_api.calls("GET") if "notes" in path]
    assert [query.get("page", "1") for query in listings] == ["1", "2"]
    assert listings[0] == {"sort": "asc", "order_by": "created_at", "per_page": "100"}


def test_a_502_and_a_429_are_retried(gitlab_api: FakeGitLab, project: Path) -> None:
    gitlab_api.fail("GET", 502)
    gitlab_api.fail("POST", 429, {"message": "Retry later"}, **{"Retry-After": "0"})

    code, log = job(gitlab_api, project)

    assert code == 0 and len(ours(gitlab_api)) == 1 and "could not" not in log


def test_without_a_token_the_log_says_ci_job_token_cannot_write_notes(
    gitlab_api: FakeGitLab, project: Path
) -> None:
    code, log = job(gitlab_api, project, token=None)

    assert code == 0 and gitlab_api.received == []
    assert "diffai: warning: DIFFAI_GITLAB_TOKEN is not set: no merge request note. " in log
    assert "CI_JOB_TOKEN cannot write merge request notes" in log
    assert (project / "diffai-report" / "report.json").exists()


@pytest.mark.parametrize("token", [JOB_TOKEN, GUEST_TOKEN], ids=["job-token", "guest-role"])
def test_a_token_that_may_not_write_is_one_warning_and_the_verdict_stands(
    gitlab_api: FakeGitLab, project: Path, token: str
) -> None:
    code, log = job(gitlab_api, project, "--fail-on", "warning", token=token)

    assert code == 1 and ours(gitlab_api) == []
    [warning] = [
        line for line in log.splitlines() if line.startswith("diffai: warning: diffai could")
    ]
    assert "could not note on merge request !12" in warning
    assert "CI_JOB_TOKEN cannot write merge request notes at all" in warning


def test_outside_a_merge_request_pipeline_nothing_is_posted(
    gitlab_api: FakeGitLab, project: Path
) -> None:
    code, _ = job(gitlab_api, project, CI_MERGE_REQUEST_IID="")

    assert code == 0 and gitlab_api.received == []


def test_a_bad_flag_is_trouble_in_one_line(gitlab_api: FakeGitLab, project: Path) -> None:
    code, log = job(gitlab_api, project, "--comment-tag", "a b")

    assert code == 2 and log.count("\n") == 1
    assert log.startswith("diffai: error: invalid inputs: comment-tag: 'a b' must be")


def test_the_diffai_command_runs_it(
    gitlab_api: FakeGitLab, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI_PROJECT_DIR", str(project))
    monkeypatch.delenv("CI_MERGE_REQUEST_IID", raising=False)

    assert cli.main(["ci", "gitlab", *ARGS, "--report-dir", "out"]) == 0
    assert (project / "out" / "junit.xml").exists()
