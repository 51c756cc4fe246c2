"""The Action as the runner runs it: ``entrypoint.py`` in a subprocess, against a fake GitHub.

The environment is built the way the runner builds it for a Docker action: every
input under its own hyphenated ``INPUT_*`` name (with ``action.yml``'s defaults)
plus the ``runs.env`` names that ``action.yml`` maps, evaluated from the same
values; the event as a JSON file; ``GITHUB_OUTPUT`` and ``GITHUB_STEP_SUMMARY`` as
files that are read back with the runner's own parsing rules.

The helpers here are shared with ``test_action_modes.py``, which runs the same
entry point in-process for the cases that need no separate interpreter.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file, save_file

from tests.github_api import (
    BOT,
    READ_ONLY_TOKEN,
    REPOSITORY,
    WRITE_TOKEN,
    FakeGitHub,
    Pull,
    Reply,
)

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "entrypoint.py"
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
PR = 7
HEAD_SHA = "4f3c2a1b" * 5
MERGE_SHA = "9e8d7c6b" * 5
RUN_ID = "4242"
MARKER = "<!-- diffai-comment: diffai -->"
DEFAULT_INPUTS = {
    "baseline": "examples/baseline.safetensors",
    "candidate": "examples/candidate.safetensors",
    "policy": "examples/policy.yaml",
}
SECONDARY_LIMIT = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)
PERMISSION_TITLE = "diffai: no permission to comment"


@dataclass(frozen=True)
class Command:
    """A workflow command as the runner decodes it."""

    name: str
    properties: dict[str, str]
    message: str


@dataclass(frozen=True)
class Step:
    """What one run of the Action left behind, read the way the runner reads it."""

    code: int
    stdout: str
    stderr: str
    outputs: dict[str, str]
    summary: str
    report_dir: Path

    @property
    def commands(self) -> list[Command]:
        return parse_commands(self.stdout)

    def annotations(self, name: str, title: str | None = None) -> list[Command]:
        return [
            c
            for c in self.commands
            if c.name == name and (title is None or c.properties.get("title") == title)
        ]


def parse_commands(stdout: str) -> list[Command]:
    """The runner's rule: a line that, after leading blanks, starts with ``::`` is a command."""
    commands = []
    for line in re.split(r"\r\n|\r|\n", stdout):
        line = line.lstrip()
        if not line.startswith("::"):
            continue
        end = line.index("::", 2)
        name, _, props = line[2:end].partition(" ")
        pairs = (item.partition("=") for item in props.split(",") if item)
        properties = {key: unescape(value, property=True) for key, _, value in pairs}
        commands.append(Command(name, properties, unescape(line[end + 2 :])))
    return commands


def unescape(value: str, *, property: bool = False) -> str:
    """The runner's decoding, in the runner's order (``%25`` last)."""
    table = [("%0D", "\r"), ("%0A", "\n")]
    table += [("%3A", ":"), ("%2C", ",")] if property else []
    for escaped, raw in [*table, ("%25", "%")]:
        value = value.replace(escaped, raw)
    return value


def parse_outputs(text: str) -> dict[str, str]:
    """``$GITHUB_OUTPUT`` as the runner parses it: ``name=value`` or ``name<<DELIMITER`` blocks."""
    outputs: dict[str, str] = {}
    lines = iter(text.split("\n"))
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            value = []
            for body in lines:
                if body == delimiter:
                    break
                value.append(body)
            else:
                raise AssertionError(f"output {name!r}: delimiter never closed")
            outputs[name] = "\n".join(value)
        elif line:
            name, value = line.split("=", 1)
            outputs[name] = value
    return outputs


def runner_inputs(given: dict[str, str], token: str) -> dict[str, str]:
    """Every input: given, else ``action.yml``'s default with ``github.token`` substituted."""
    values = {}
    for name, spec in ACTION["inputs"].items():
        value = given.get(name, str(spec.get("default", "")))
        values[name] = value.replace("${{ github.token }}", token)
    return values


def runner_env(values: dict[str, str], *, mapped: bool = True) -> dict[str, str]:
    """The runner's own ``INPUT_NAME-WITH-HYPHENS`` plus ``runs.env`` evaluated (when mapped)."""
    env = {f"INPUT_{name.upper()}": value for name, value in values.items()}
    if mapped:
        for key, expression in ACTION["runs"]["env"].items():
            name = re.fullmatch(r"\$\{\{ inputs\.([\w-]+) \}\}", expression)[1]
            env[key] = values[name]
    return env


def pull_request_event(number: int = PR, head_sha: str = HEAD_SHA) -> dict[str, Any]:
    repo = {"full_name": REPOSITORY}
    return {
        "action": "synchronize",
        "number": number,
        "pull_request": {
            "number": number,
            "head": {"sha": head_sha, "ref": "tune", "repo": repo},
            "base": {"sha": "0" * 40, "ref": "main", "repo": repo},
        },
    }


def workflow_run_event(head_sha: str = HEAD_SHA, owner: str = "forker") -> dict[str, Any]:
    return {
        "workflow_run": {
            "id": 99,
            "event": "pull_request",
            "conclusion": "success",
            "head_sha": head_sha,
            "head_branch": "patch-1",
            "head_repository": {"owner": {"login": owner}},
            "pull_requests": [],
        }
    }


def comment_url(comment_id: int) -> str:
    return f"https://github.com/{REPOSITORY}/pull/{PR}#issuecomment-{comment_id}"


def _load_entrypoint() -> Any:
    spec = importlib.util.spec_from_file_location("diffai_entrypoint", ENTRYPOINT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ActionRunner:
    """Runs the Action in a workspace against the fake GitHub, one step at a time."""

    def __init__(self, workspace: Path, github_api: FakeGitHub, scratch: Path) -> None:
        self.workspace = workspace
        self.github_api = github_api
        self.scratch = scratch
        self.steps = 0

    def run(
        self,
        event_name: str = "pull_request",
        event: dict[str, Any] | None = None,
        *,
        token: str = WRITE_TOKEN,
        in_process: bool = False,
        mapped: bool = True,
        extra_env: dict[str, str] | None = None,
        **inputs: str,
    ) -> Step:
        given = {**DEFAULT_INPUTS, **{k.replace("_", "-"): v for k, v in inputs.items()}}
        env = self._environment(event_name, event, runner_inputs(given, token), mapped)
        env.update(extra_env or {})
        code, stdout, stderr = (self._in_process if in_process else self._subprocess)(env)
        report_dir = self.workspace / runner_inputs(given, token)["report-dir"]
        return Step(
            code,
            stdout,
            stderr,
            parse_outputs(Path(env["GITHUB_OUTPUT"]).read_text()),
            Path(env["GITHUB_STEP_SUMMARY"]).read_text(),
            report_dir,
        )

    def _environment(
        self, event_name: str, event: dict[str, Any] | None, values: dict[str, str], mapped: bool
    ) -> dict[str, str]:
        self.steps += 1
        folder = self.scratch / f"step{self.steps}"
        folder.mkdir()
        event_path = folder / "event.json"
        if event is None and event_name in ("pull_request", "pull_request_target"):
            event = pull_request_event()
        event_path.write_text(json.dumps(event or {}))
        for name in ("output", "summary"):
            (folder / name).touch()
        return {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(folder),
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(self.workspace),
            "GITHUB_EVENT_NAME": event_name,
            "GITHUB_EVENT_PATH": str(event_path),
            "GITHUB_OUTPUT": str(folder / "output"),
            "GITHUB_STEP_SUMMARY": str(folder / "summary"),
            "GITHUB_API_URL": self.github_api.api_url,
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_REPOSITORY": REPOSITORY,
            "GITHUB_RUN_ID": RUN_ID,
            "GITHUB_SHA": MERGE_SHA,
            "DIFFAI_RETRY_BASE_DELAY": "0.01",
            **runner_env(values, mapped=mapped),
        }

    def _subprocess(self, env: dict[str, str]) -> tuple[int, str, str]:
        done = subprocess.run(
            [sys.executable, str(ENTRYPOINT)],
            cwd=self.workspace,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done.returncode, done.stdout, done.stderr

    def _in_process(self, env: dict[str, str]) -> tuple[int, str, str]:
        stream = io.StringIO()
        code = ENTRYPOINT_MODULE.main(env, stream)
        return code, stream.getvalue(), ""


ENTRYPOINT_MODULE = _load_entrypoint()


def write_failing_candidate(workspace: Path) -> str:
    """The example candidate without ``fc1.bias``: the policy forbids removing a tensor."""
    tensors = load_file(workspace / "examples/candidate.safetensors")
    del tensors["fc1.bias"]
    save_file(tensors, workspace / "examples/failing.safetensors")
    return "examples/failing.safetensors"


def make_workspace(tmp_path: Path) -> Path:
    """A checkout: the example models, policy and metrics, as the README's workflow has them."""
    root = tmp_path / "workspace"
    shutil.copytree(ROOT / "examples", root / "examples", ignore=shutil.ignore_patterns("*.py"))
    return root


def make_runner(workspace: Path, github_api: FakeGitHub, tmp_path: Path) -> ActionRunner:
    scratch = tmp_path / "runner"
    scratch.mkdir()
    return ActionRunner(workspace, github_api, scratch)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path)


@pytest.fixture
def action(workspace: Path, github_api: FakeGitHub, tmp_path: Path) -> ActionRunner:
    return make_runner(workspace, github_api, tmp_path)


def assert_only_our_commands(step: Step) -> None:
    """No line of the log is a workflow command other than our escaped annotations."""
    assert {c.name for c in step.commands} <= {"error", "warning"}
    for line in re.split(r"\r\n|\r|\n", step.stdout):
        assert not line.strip() or line.startswith(("::error", "::warning", "diffai: ")), line


# --- one sticky comment ---------------------------------------------------------------------


def test_the_first_run_creates_the_comment(action: ActionRunner, github_api: FakeGitHub) -> None:
    step = action.run()

    [comment] = github_api.comments_on(PR)
    assert step.code == 0, step.stderr  # the example's verdict is warn
    assert comment.login == BOT and comment.body.startswith(MARKER + "\n## ⚠️ diffai: warn")
    assert comment.body == (step.report_dir / "comment.md").read_text()
    assert step.outputs["comment-url"].endswith(f"/pull/{PR}#issuecomment-{comment.id}")
    assert step.stderr == ""
    assert_only_our_commands(step)


def test_a_failing_second_run_edits_the_same_comment_and_exits_1(
    action: ActionRunner, github_api: FakeGitHub, workspace: Path
) -> None:
    first = action.run()
    second = action.run(candidate=write_failing_candidate(workspace))

    [comment] = github_api.comments_on(PR)
    assert (first.code, second.code) == (0, 1)
    assert "## ❌ diffai: fail" in comment.body
    assert len(github_api.calls("POST", "/comments$")) == 1
    assert len(github_api.calls("PATCH", "/comments/")) == 1
    assert second.outputs["comment-url"] == first.outputs["comment-url"]
    assert second.outputs["verdict"] == "fail"
    assert second.annotations("error", "diffai: regression_test.allow_removed")


def test_its_comment_on_page_two_behind_110_others_is_found_and_edited(
    action: ActionRunner, github_api: FakeGitHub
) -> None:
    github_api.add_comments(PR, 110)
    ours = github_api.add_comment(PR, f"{MARKER}\nan old report")

    step = action.run()

    assert step.code == 0
    assert len(github_api.comments_on(PR)) == 111
    assert ours.body.startswith(f"{MARKER}\n## ⚠️ diffai: warn")
    assert [c.path for c in github_api.calls("PATCH")] == [
        f"/repos/{REPOSITORY}/issues/comments/{ours.id}"
    ]
    pages = github_api.calls("GET", "/comments$")
    assert len(pages) == 2 and pages[0].query == {"per_page": "100"}


def test_a_foreign_comment_with_the_marker_is_left_alone(
    action: ActionRunner, github_api: FakeGitHub
) -> None:
    foreign = github_api.add_comment(PR, f"{MARKER}\nquoted by a reviewer", login="mallory")

    action.run()

    assert foreign.body == f"{MARKER}\nquoted by a reviewer"
    assert [c.login for c in github_api.comments_on(PR)] == ["mallory", BOT]
    assert github_api.calls("PATCH") == []


# --- resilience -------------------------------------------------------------------------------


def test_a_502_and_a_secondary_rate_limit_are_retried_into_success(
    action: ActionRunner, github_api: FakeGitHub
) -> None:
    github_api.fail("POST", "/comments$", Reply(502, "<html>502 Bad Gateway</html>"))
    secondary = Reply(403, {"message": SECONDARY_LIMIT}, {"retry-after": "1"})
    github_api.fail("POST", "/comments$", secondary)

    step = action.run()

    assert step.code == 0
    assert len(github_api.comments_on(PR)) == 1
    assert len(github_api.calls("POST", "/comments$")) == 3
    assert step.annotations("warning", "diffai: GitHub API") == []


def test_a_read_only_token_still_gives_summary_artifact_and_exit_status(
    action: ActionRunner, github_api: FakeGitHub, workspace: Path, validate_report
) -> None:
    step = action.run(
        token=READ_ONLY_TOKEN, candidate=write_failing_candidate(workspace), commit_status="true"
    )

    assert step.code == 1  # the verdict decides, not the refused comment
    assert github_api.comments_on(PR) == [] and github_api.statuses == []
    [warning] = step.annotations("warning", PERMISSION_TITLE)
    assert "mode: analyze" in warning.message and "workflow_run" in warning.message
    assert "## ❌ diffai: fail" in step.summary
    assert sorted(p.name for p in step.report_dir.iterdir()) == [
        "comment.md",
        "junit.xml",
        "report.html",
        "report.json",
    ]
    assert step.outputs["verdict"] == "fail" and step.outputs["comment-url"] == ""
    validate_report(json.loads((step.report_dir / "report.json").read_text()))


def test_a_push_comments_nowhere(action: ActionRunner, github_api: FakeGitHub) -> None:
    step = action.run("push", {"ref": "refs/heads/main", "after": MERGE_SHA})

    assert step.code == 0
    assert github_api.received == []
    assert "## ⚠️ diffai: warn" in step.summary
    assert step.outputs["comment-url"] == ""


def test_a_push_with_commit_status_sets_it_on_the_pushed_commit(
    action: ActionRunner, github_api: FakeGitHub
) -> None:
    action.run("push", {"ref": "refs/heads/main"}, commit_status="true", comment_tag="encoder")

    [status] = github_api.statuses
    assert github_api.comments == {}
    assert status["sha"] == MERGE_SHA
    assert status["context"] == "diffai/encoder"
    assert status["state"] == "success" and status["description"].startswith("warn: 1 check failed")
    assert status["target_url"] == f"https://github.com/{REPOSITORY}/actions/runs/{RUN_ID}"


# --- fork-safe: analyze, then publish --------------------------------------------------------


def test_analyze_then_publish_posts_the_comment_gate_posts(
    action: ActionRunner, github_api: FakeGitHub
) -> None:
    action.run()
    [gated] = github_api.comments_on(PR)
    github_api.comments.clear()
    github_api.received.clear()
    github_api.pulls.append(Pull(PR, HEAD_SHA, "patch-1", "forker"))

    analyzed = action.run(token=READ_ONLY_TOKEN, mode="analyze")
    assert github_api.received == []  # analyze never talks to GitHub
    record = json.loads((analyzed.report_dir / "pr.json").read_text())
    assert (record["number"], record["head_sha"], record["marker"]) == (PR, HEAD_SHA, MARKER)

    published = action.run(
        "workflow_run", workflow_run_event(), mode="publish", baseline="", candidate="", policy=""
    )

    [comment] = github_api.comments_on(PR)
    assert (analyzed.code, published.code) == (0, 0)
    assert comment.body == gated.body
    assert published.outputs == {
        **analyzed.outputs,
        "comment-url": published.outputs["comment-url"],
    }
    assert published.outputs["comment-url"].endswith(f"#issuecomment-{comment.id}")


# --- inputs and outputs -----------------------------------------------------------------------


def test_bad_inputs_exit_2_with_one_error_naming_each(
    action: ActionRunner, github_api: FakeGitHub
) -> None:
    step = action.run(comment="sometimes", fail_on="maybe", baseline="models/missing.safetensors")

    [problem] = step.commands
    assert step.code == 2
    assert problem.name == "error" and problem.properties["title"] == "diffai: invalid inputs"
    for name in ("comment:", "fail-on:", "baseline:", "models/missing.safetensors"):
        assert name in problem.message
    assert github_api.received == [] and step.outputs == {}


def test_outputs_are_read_back_with_random_delimiters(action: ActionRunner) -> None:
    step = action.run()

    assert step.outputs == {
        "verdict": "warn",
        "report-path": "diffai-report/report.json",
        "markdown-path": "diffai-report/comment.md",
        "comment-url": step.outputs["comment-url"],
        "changed-tensors": "5",
        "readiness": "0.81",
    }
    assert set(step.outputs) == set(ACTION["outputs"])
    output_text = Path(action.scratch / "step1" / "output").read_text()
    assert len(set(re.findall(r"<<(ghadelimiter_\S+)", output_text))) == 6


def test_a_docker_pin_without_the_runs_env_mapping_reads_hyphenated_inputs(
    action: ActionRunner, github_api: FakeGitHub
) -> None:
    step = action.run(mapped=False, comment_tag="encoder", fail_on="warning")

    assert step.code == 1  # warn fails under fail-on: warning
    [comment] = github_api.comments_on(PR)
    assert comment.body.startswith("<!-- diffai-comment: encoder -->")


# --- hostile tensor names ---------------------------------------------------------------------

HOSTILE = "w%0A::set-output name=verdict::pass%0D::stop-commands::x,y:z"


def test_a_hostile_tensor_name_never_becomes_a_workflow_command(
    action: ActionRunner, workspace: Path
) -> None:
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((4, 4)).astype(np.float32)
    save_file({"keep": weights, HOSTILE: weights}, workspace / "base.safetensors")
    save_file({"keep": weights}, workspace / "cand.safetensors")

    step = action.run(baseline="base.safetensors", candidate="cand.safetensors", policy="")

    assert step.code == 1  # the default policy forbids removing a tensor
    assert_only_our_commands(step)
    assert step.outputs["verdict"] == "fail"
    assert any(HOSTILE in c.message for c in step.annotations("error"))


def test_a_bidi_override_in_a_name_is_spelled_out_in_annotations_and_summary(
    action: ActionRunner, workspace: Path
) -> None:
    """U+202E reverses what follows it: 'fc1\u202egnp.exe' would read as 'fc1exe.png'."""
    weights = np.ones((2, 2), dtype=np.float32)
    name = "fc1\u202egnp.exe\u200b"
    save_file({"keep": weights, name: weights}, workspace / "base.safetensors")
    save_file({"keep": weights}, workspace / "cand.safetensors")

    step = action.run(baseline="base.safetensors", candidate="cand.safetensors", policy="")

    assert step.code == 1
    assert any("fc1\\u202egnp.exe\\u200b" in c.message for c in step.annotations("error"))
    hidden = re.compile("\u202e|\u200b|&#8238;|&#8203;")
    assert not hidden.search(step.stdout) and not hidden.search(step.summary)
    assert "fc1&#92;u202egnp.exe&#92;u200b" in step.summary


def test_a_control_character_in_a_name_is_refused_in_one_escaped_error(
    action: ActionRunner, workspace: Path
) -> None:
    name = "x\n::set-output name=verdict::pass"
    header = json.dumps({name: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    hostile = workspace / "hostile.safetensors"
    hostile.write_bytes(len(header).to_bytes(8, "little") + header + b"\0\0\0\0")

    step = action.run(candidate="hostile.safetensors")

    assert step.code == 2
    [problem] = step.commands
    assert problem.name == "error" and "hostile.safetensors" in problem.message
    assert_only_our_commands(step)
    assert step.outputs == {}
