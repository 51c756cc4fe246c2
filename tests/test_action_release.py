"""Release gating: on a published release the Action sets the commit status and, asked to,
attaches its report files to the release, over real HTTP to the loopback GitHub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffai.ci.release import checked_upload_url
from diffai.errors import GitHubError
from tests.github_api import READ_ONLY_TOKEN, REPOSITORY, Asset, FakeGitHub
from tests.test_action_runner import ActionRunner, Step, make_runner, make_workspace

RELEASE_ID = 77


@pytest.fixture
def action(tmp_path: Path, github_api: FakeGitHub) -> ActionRunner:
    return make_runner(make_workspace(tmp_path), github_api, tmp_path)


def release_event(github_api: FakeGitHub, upload_root: str | None = None) -> dict:
    root = upload_root or github_api.api_url
    template = f"{root}/repos/{REPOSITORY}/releases/{RELEASE_ID}/assets{{?name,label}}"
    return {"release": {"id": RELEASE_ID, "tag_name": "v2.0.0", "upload_url": template}}


def release(action: ActionRunner, github_api: FakeGitHub, **inputs: str) -> Step:
    event = release_event(github_api)
    return action.run("release", event, in_process=True, **inputs)  # type: ignore[arg-type]


def test_a_release_gets_the_status_and_the_report_files(
    action: ActionRunner, github_api: FakeGitHub
) -> None:
    step = release(action, github_api, release_assets="true", commit_status="true")

    assert step.code == 0
    [status] = github_api.statuses
    assert status["state"] == "success"  # the example's verdict is warn, which does not fail
    assets = {a.name: a for a in github_api.assets.values()}
    folder = action.workspace / "diffai-report"
    assert set(assets) <= {"report.json", "comment.md", "report.html"}
    assert {"report.json", "comment.md"} <= set(assets)
    for name, asset in assets.items():
        assert asset.data == (folder / name).read_bytes() and asset.release_id == RELEASE_ID
    assert assets["report.json"].content_type == "application/json"
    assert json.loads(assets["report.json"].data)["verdict"] == "warn"
    assert assets["comment.md"].content_type.startswith("text/markdown")


def test_without_the_input_nothing_is_attached(
    action: ActionRunner, github_api: FakeGitHub
) -> None:
    release(action, github_api, commit_status="true")
    assert github_api.assets == {} and len(github_api.statuses) == 1


def test_a_rerun_replaces_its_own_assets_and_keeps_anyone_elses(
    action: ActionRunner, github_api: FakeGitHub
) -> None:
    release(action, github_api, release_assets="true")
    first = {a.name: a.id for a in github_api.assets.values()}
    release(action, github_api, release_assets="true")
    again = {a.name: a.id for a in github_api.assets.values()}
    assert set(again) == set(first) and not set(again.values()) & set(first.values())

    theirs = Asset(5, RELEASE_ID, "comment.md", "octocat", "text/plain", b"a person's notes")
    github_api.assets = {5: theirs}
    step = release(action, github_api, release_assets="true")
    assert github_api.assets[5] is theirs
    assert any("of someone else's" in w.message for w in step.annotations("warning"))


def test_a_read_only_token_warns_with_the_permission_and_keeps_the_verdict(
    action: ActionRunner, github_api: FakeGitHub
) -> None:
    step = release(action, github_api, release_assets="true", github_token=READ_ONLY_TOKEN)

    assert step.code == 0 and github_api.assets == {}
    [warning] = step.annotations("warning", "diffai: no permission to attach the report")
    assert "permissions: contents: write" in warning.message


@pytest.mark.parametrize(
    ("upload", "api"),
    [
        ("https://uploads.github.com/repos/o/r/releases/1/assets{?name,label}",
         "https://api.github.com"),
        ("https://ghe.example/api/uploads/repos/o/r/releases/1/assets{?name,label}",
         "https://ghe.example/api/v3"),
    ],
)  # fmt: skip
def test_githubs_upload_hosts_are_accepted(upload: str, api: str) -> None:
    assert checked_upload_url(upload, api) == upload.split("{")[0]


@pytest.mark.parametrize(
    "upload",
    [
        "https://uploads.evil.example/repos/o/r/releases/1/assets",
        "http://uploads.github.com/repos/o/r/releases/1/assets",
        "https://api.github.com.evil.example/x",
        "",
    ],
)
def test_an_upload_url_off_githubs_hosts_never_gets_the_token(upload: str) -> None:
    """The event file is GitHub's, but the token goes wherever the URL says: checked."""
    with pytest.raises(GitHubError, match="is not on the API's host"):
        checked_upload_url(upload, "https://api.github.com")
