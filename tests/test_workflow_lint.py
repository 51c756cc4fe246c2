"""The project's workflows, action.yml and every workflow the docs tell users to copy, checked
the way a security review would: zizmor (offline) and GitHub's published schemas."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_action_files import (
    ROOT,
    WORKFLOWS,
    documented_workflow_texts,
    steps_using,
    workflow,
)

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is in the test extra: pip install -e '.[test]'"
    return found


@pytest.fixture(scope="module")
def documented(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documented workflows as a repository's .github/workflows, for the tools to read."""
    root = tmp_path_factory.mktemp("documented")
    folder = root / ".github/workflows"
    folder.mkdir(parents=True)
    for name, text in documented_workflow_texts().items():
        (folder / name).write_text(text)
    return root


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120)


def test_the_docs_hold_the_workflows_this_checks(documented: Path) -> None:
    assert len(list((documented / ".github/workflows").glob("*.yml"))) == 7


@pytest.mark.parametrize("where", ["project", "documented"])
def test_zizmor_finds_nothing(documented: Path, where: str) -> None:
    """Every finding is fixed or ignored inline with its reason (``zizmor: ignore[...]``)."""
    target = WORKFLOWS if where == "project" else documented
    done = run(tool("zizmor"), "--offline", "--no-progress", "--format", "plain", target)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No findings to report" in done.stdout + done.stderr


@pytest.mark.parametrize("where", ["project", "documented"])
def test_workflows_match_githubs_schema(documented: Path, where: str) -> None:
    folder = WORKFLOWS if where == "project" else documented / ".github/workflows"
    files = sorted(folder.glob("*.yml"))
    done = run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *files)
    assert done.returncode == 0, done.stdout + done.stderr


def test_action_yml_matches_githubs_schema() -> None:
    done = run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-actions",
               ROOT / "action.yml")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_fork_safe_publish_reads_only_the_validated_artifact() -> None:
    """The one finding kept by design, zizmor's dangerous-triggers on ``workflow_run``: its
    job never checks out or runs anything; it downloads the triggering run's artifact and
    hands it to diffai's publish mode, which validates it field by field."""
    [publish] = [
        workflow(text) for text in documented_workflow_texts().values()
        if "workflow_run" in workflow(text)["on"]
    ]  # fmt: skip
    [job] = publish["jobs"].values()
    download, diffai = job["steps"]
    assert download["uses"].startswith("actions/download-artifact@")
    assert download["with"]["run-id"] == "${{ github.event.workflow_run.id }}"
    assert diffai["uses"].startswith("OWNER/diffai@") and diffai["with"]["mode"] == "publish"
    assert not any("run" in step for step in job["steps"])
    assert not steps_using(publish, "actions/checkout")
    assert set(publish["permissions"]) == {"actions", "pull-requests", "statuses"}
    assert "write" not in (publish["permissions"]["actions"], publish.get("contents"))


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.yml")), ids=lambda p: p.name)
def test_every_checkout_keeps_no_credentials(path: Path) -> None:
    for step in steps_using(workflow(path), "actions/checkout@"):
        assert step["with"]["persist-credentials"] is False
