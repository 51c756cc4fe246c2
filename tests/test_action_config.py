"""Inputs and runner variables: one validated ``Config``, or one message naming each problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffai.ci.config import Config, InvalidInputs

TOKEN = "ghs_secret_value"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    for name in ("base.safetensors", "cand.safetensors", "policy.yaml"):
        (tmp_path / name).write_text("")
    return tmp_path


def environ(workspace: Path, **inputs: str) -> dict[str, str]:
    """The explicit ``runs.env`` names (``INPUT_FAIL_ON``) for the given inputs."""
    given = {"baseline": "base.safetensors", "candidate": "cand.safetensors", **inputs}
    env = {f"INPUT_{name.upper()}": value for name, value in given.items()}
    return {"GITHUB_WORKSPACE": str(workspace), **env}


def config(workspace: Path, **inputs: str) -> Config:
    return Config.from_environ(environ(workspace, **inputs), cwd=Path("/nowhere"))


def problems(workspace: Path, env: dict[str, str]) -> list[str]:
    with pytest.raises(InvalidInputs) as caught:
        Config.from_environ(env, cwd=workspace)
    return caught.value.problems


def test_defaults(workspace: Path) -> None:
    cfg = config(workspace)

    assert (cfg.comment, cfg.comment_tag, cfg.fail_on, cfg.mode) == (
        "always",
        "diffai",
        "error",
        "gate",
    )
    assert (cfg.report_dir, cfg.commit_status, cfg.policy, cfg.github_token) == (
        "diffai-report",
        False,
        None,
        None,
    )
    assert cfg.github_api_url == "https://api.github.com"
    assert cfg.marker == "<!-- diffai-comment: diffai -->"
    assert cfg.status_context == "diffai/diffai"


def test_the_explicit_name_wins_and_the_hyphenated_one_is_the_fallback(workspace: Path) -> None:
    env = {
        **environ(workspace),
        "INPUT_COMMENT_TAG": "explicit",
        "INPUT_COMMENT-TAG": "hyphenated",
        "INPUT_FAIL-ON": "warning",
        "INPUT_GITHUB-TOKEN": TOKEN,
    }

    cfg = Config.from_environ(env, cwd=workspace)

    assert (cfg.comment_tag, cfg.fail_on, cfg.github_token) == ("explicit", "warning", TOKEN)


def test_an_empty_explicit_input_falls_back_to_the_runner_default(workspace: Path) -> None:
    env = {**environ(workspace), "INPUT_COMMENT": "", "INPUT_COMMENT-TAG": "  ", "INPUT_MODE": ""}

    cfg = Config.from_environ(env, cwd=workspace)

    assert (cfg.comment, cfg.comment_tag, cfg.mode) == ("always", "diffai", "gate")


def test_every_bad_input_is_named_at_once(workspace: Path) -> None:
    env = {
        "GITHUB_WORKSPACE": str(workspace),
        "INPUT_CANDIDATE": "missing.safetensors",
        "INPUT_COMMENT": "sometimes",
        "INPUT_FAIL_ON": "errors",
        "INPUT_COMMIT_STATUS": "yes please",
        "INPUT_COMMENT_TAG": "a--b",
        "INPUT_MODE": "deploy",
        "INPUT_METRICS_BASELINE": "eval/none.json",
        "GITHUB_REPOSITORY": "not a repo",
    }

    found = problems(workspace, env)

    assert [p.split(":", 1)[0] for p in found] == [
        "comment",
        "comment-tag",
        "fail-on",
        "commit-status",
        "mode",
        "GITHUB_REPOSITORY",
        "baseline",
        "candidate",
        "metrics-baseline",
    ]
    assert "'sometimes' is not one of always, on-change, on-failure, never" in found[0]
    assert found[6] == "baseline: required (in mode gate)"
    assert "'missing.safetensors' does not exist in the workspace" in found[7]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("True", True), ("TRUE", True), ("false", False), ("False", False)],
)
def test_commit_status_reads_yaml_booleans(workspace: Path, value: str, expected: bool) -> None:
    assert config(workspace, commit_status=value).commit_status is expected


@pytest.mark.parametrize("tag", ["diffai", "llm-encoder", "v2.1", "team/model_a", "x"])
def test_good_comment_tags(workspace: Path, tag: str) -> None:
    assert config(workspace, comment_tag=tag).marker == f"<!-- diffai-comment: {tag} -->"


@pytest.mark.parametrize("tag", ["a--b", "x -->", "-x", "two words", "a>b", "x" * 65])
def test_comment_tags_that_could_break_the_marker_are_refused(workspace: Path, tag: str) -> None:
    assert problems(workspace, environ(workspace, comment_tag=tag))[0].startswith("comment-tag:")


def test_publish_needs_no_models_but_a_token(workspace: Path) -> None:
    env = {"GITHUB_WORKSPACE": str(workspace), "INPUT_MODE": "publish"}

    assert problems(workspace, env) == ["github-token: required (in mode publish)"]
    assert Config.from_environ({**env, "INPUT_GITHUB_TOKEN": TOKEN}, cwd=workspace).baseline is None


def test_paths_resolve_in_the_workspace(workspace: Path) -> None:
    cfg = config(workspace, report_dir="out/diffai")

    assert cfg.resolve(cfg.report_dir) == workspace / "out/diffai"
    assert cfg.resolve("/github/home/model.pt") == Path("/github/home/model.pt")


def test_without_github_workspace_the_working_directory_is_the_workspace(workspace: Path) -> None:
    env = {"INPUT_BASELINE": "base.safetensors", "INPUT_CANDIDATE": "cand.safetensors"}

    assert Config.from_environ(env, cwd=workspace).github_workspace == workspace


def test_the_token_never_shows_in_a_repr(workspace: Path) -> None:
    cfg = config(workspace, github_token=TOKEN)

    assert cfg.github_token == TOKEN
    assert TOKEN not in repr(cfg)


def test_the_run_url_needs_the_repository_and_the_run(workspace: Path) -> None:
    env = {
        **environ(workspace),
        "GITHUB_SERVER_URL": "https://ghe.example.com/",
        "GITHUB_REPOSITORY": "octo/models",
        "GITHUB_RUN_ID": "12",
    }

    assert Config.from_environ(env, cwd=workspace).run_url == (
        "https://ghe.example.com/octo/models/actions/runs/12"
    )
    assert config(workspace).run_url is None
