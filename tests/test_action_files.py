"""The Action's files agree: action.yml, the Config, README and docs, the image, the workflows.

No Docker engine runs here, so the container's contract is read from the
Dockerfile, and then replayed: its COPY lines are carried out into a scratch
root, the package is installed from there the way its RUN line installs it, and
the entry point runs from that install, away from the source tree.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from diffai.ci.config import INPUT_DEFAULTS
from tests.test_action_runner import parse_outputs

ROOT = Path(__file__).resolve().parents[1]
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
WORKFLOWS = ROOT / ".github" / "workflows"


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def instructions(name: str) -> list[str]:
    return [arguments for instruction, arguments in dockerfile() if instruction == name]


def markdown_table(text: str, heading: str) -> dict[str, list[str]]:
    """The first table under a heading: first cell (code span stripped) -> the other cells."""
    section = text.split(f"\n{heading}\n", 1)[1]
    rows = re.findall(r"^\|(.+)\|$", section.split("\n\n|", 1)[0] + section, re.M)
    table = {}
    for row in rows:
        cells = [cell.strip() for cell in row.split(" | ")]
        if cells[0].startswith("`"):
            table[cells[0].strip("`")] = cells[1:]
        elif table:
            break
    return table


def workflow(path: Path | str) -> dict[str, Any]:
    document = yaml.safe_load(Path(path).read_text() if isinstance(path, Path) else path)
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads `on` as true
    return document


def job_permissions(document: dict[str, Any], step: dict[str, Any]) -> dict[str, str]:
    """The permissions the step's job runs with: its own, else the workflow's."""
    [job] = [job for job in document["jobs"].values() if step in job.get("steps", [])]
    return job.get("permissions", document["permissions"])


def steps_using(document: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    return [
        step
        for job in document["jobs"].values()
        for step in job.get("steps", [])
        if str(step.get("uses", "")).startswith(prefix)
    ]


# --- action.yml ----------------------------------------------------------------------------


def test_action_yml_runs_the_dockerfile() -> None:
    assert ACTION["runs"]["using"] == "docker"
    assert ACTION["runs"]["image"] == "Dockerfile"


def test_every_input_is_declared_with_the_default_the_config_applies() -> None:
    inputs = ACTION["inputs"]
    assert list(inputs) == list(INPUT_DEFAULTS)
    for name, default in INPUT_DEFAULTS.items():
        declared = inputs[name].get("default", "")
        if name == "github-token":
            assert declared == "${{ github.token }}"
        else:
            assert declared == (default or ""), name
    assert [n for n, spec in inputs.items() if spec.get("required")] == ["baseline", "candidate"]


def test_every_input_is_mapped_explicitly_into_the_container() -> None:
    expected = {
        f"INPUT_{name.upper().replace('-', '_')}": f"${{{{ inputs.{name} }}}}"
        for name in INPUT_DEFAULTS
    }
    assert ACTION["runs"]["env"] == expected


def test_outputs() -> None:
    assert list(ACTION["outputs"]) == [
        "verdict",
        "report-path",
        "markdown-path",
        "comment-url",
        "changed-tensors",
        "readiness",
    ]


@pytest.mark.parametrize("page", ["README.md", "docs/action.md"])
def test_the_inputs_and_outputs_tables_match_action_yml(page: str) -> None:
    text = (ROOT / page).read_text()
    if page == "README.md":
        text = text.split("\n## GitHub Action\n", 1)[1].split("\n## ", 1)[0]
    inputs = markdown_table(text, "### Inputs" if page == "README.md" else "## Inputs")
    outputs = markdown_table(text, "### Outputs" if page == "README.md" else "## Outputs")

    assert list(inputs) == list(ACTION["inputs"])
    assert list(outputs) == list(ACTION["outputs"])
    for name, spec in ACTION["inputs"].items():
        default = "required" if spec.get("required") else f"`{spec['default']}`"
        assert inputs[name][0] == (default if default != "``" else "none"), name


# --- the container ---------------------------------------------------------------------------


def test_the_image_is_slim_python_without_torch() -> None:
    [base] = instructions("FROM")
    env = " ".join(instructions("ENV"))
    runs = " ".join(instructions("RUN"))

    assert base == "python:3.11-slim"
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env
    assert "pip install --no-cache-dir" in runs
    assert "apt-get purge -y --auto-remove gcc" in runs  # the kernel's compiler stays out
    assert "torch" not in runs  # torch stays optional
    # the extras the image carries: gguf's dequantizers (1.4 MB), h5py for .keras/.h5 (and so
    # MAT v7.3 too), google-crc32c for TensorFlow checkpoints, boto3 and huggingface_hub for
    # s3:// and hf:// models read by ranges, onnxruntime for functional gates, nothing more
    assert re.findall(r"/src\[([^\]]*)\]", runs) == ["gguf,keras,tensorflow,remote,run"]
    assert "USER" not in dict(dockerfile())  # the runner's mounts need the default user


def test_the_entrypoint_is_in_exec_form() -> None:
    [entrypoint] = instructions("ENTRYPOINT")

    assert json.loads(entrypoint) == ["python", "/app/entrypoint.py"]
    assert "COPY" in dict(dockerfile()) and any(
        c.split()[-1] == "/app/entrypoint.py" for c in instructions("COPY")
    )


def test_the_build_context_keeps_what_the_image_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore
    for copy in instructions("COPY"):
        for source in copy.split()[:-1]:
            assert source in allowed, source
            assert (ROOT / source).exists(), source


def docker_ignored() -> Callable[[str, list[str]], set[str]]:
    """The ``**/`` patterns of .dockerignore (caches, a locally built kernel) for copytree."""
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    return shutil.ignore_patterns(*(line[3:] for line in ignore if line.startswith("**/")))


def replay_image(root: Path) -> Path:
    """The Dockerfile's COPY and pip lines carried out under ``root``; the install folder.

    The pip line builds the kernel from diffai/_kernel.c, as the image build does.
    """
    site = root / "site-packages"
    for instruction, arguments in dockerfile():
        if instruction == "COPY":
            *sources, target = arguments.split()
            for source in sources:
                destination = root / target.lstrip("/")
                if target.endswith("/"):
                    destination = destination / Path(source).name
                destination.parent.mkdir(parents=True, exist_ok=True)
                if (ROOT / source).is_dir():  # without what .dockerignore keeps out
                    shutil.copytree(ROOT / source, destination, ignore=docker_ignored())
                else:
                    shutil.copy(ROOT / source, destination)
        elif instruction == "RUN":
            [install] = [step for step in arguments.split("&&") if "pip install" in step]
            pip = shlex.split(install)
            assert pip[:3] == ["pip", "install", "--no-cache-dir"]
            source = root / pip[-1].lstrip("/")
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                 "--no-build-isolation", "--target", str(site), str(source)],
                check=True, capture_output=True, cwd=root,
            )  # fmt: skip
    return site


def test_the_entrypoint_runs_from_the_package_installed_as_the_image_installs_it(
    tmp_path: Path,
) -> None:
    site = replay_image(tmp_path / "image")
    workspace = tmp_path / "workspace"
    shutil.copytree(ROOT / "examples", workspace / "examples")
    output = tmp_path / "output"
    output.touch()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(site),  # the install, not the source tree
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_OUTPUT": str(output),
        "GITHUB_EVENT_NAME": "push",
        "INPUT_BASELINE": "examples/baseline.safetensors",
        "INPUT_CANDIDATE": "examples/candidate.safetensors",
        "INPUT_POLICY": "examples/policy.yaml",
    }
    check = "import diffai, sys; sys.stdout.write(diffai.__file__)"
    imported = subprocess.run(
        [sys.executable, "-c", check], env=env, cwd=workspace, capture_output=True
    )

    done = subprocess.run(
        [sys.executable, str(tmp_path / "image/app/entrypoint.py")],
        env=env, cwd=workspace, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert imported.stdout.decode().startswith(str(site))
    assert done.returncode == 0, done.stdout + done.stderr
    assert parse_outputs(output.read_text())["verdict"] == "warn"
    assert (workspace / "diffai-report/comment.md").read_text().startswith("<!-- diffai-comment")


# --- workflows -------------------------------------------------------------------------------


def test_ci_runs_the_readme_test_command_on_push_and_pull_request() -> None:
    ci = workflow(WORKFLOWS / "ci.yml")
    readme = (ROOT / "README.md").read_text()
    command = re.findall(r"```bash\n(python -m pip install -q -e .+?)\n```", readme)[0]

    assert set(ci["on"]) == {"push", "pull_request"}
    [python] = steps_using(ci, "actions/setup-python")
    assert python["with"]["python-version"] == "3.11"
    assert command in [step.get("run") for step in ci["jobs"]["test"]["steps"]]


def test_the_self_test_uses_the_action_on_the_examples_and_guards_forks() -> None:
    test = workflow(WORKFLOWS / "self-test.yml")
    gate, analyze = test["jobs"]["gate"], test["jobs"]["analyze"]
    [gate_step] = steps_using({"jobs": {"gate": gate}}, "./")
    [analyze_step] = steps_using({"jobs": {"analyze": analyze}}, "./")

    assert gate_step["with"]["baseline"] == "examples/baseline.safetensors"
    assert gate_step["with"]["candidate"] == "examples/candidate.safetensors"
    assert gate_step["with"]["policy"] == "examples/policy.yaml"
    assert gate["permissions"]["pull-requests"] == "write"
    assert "github.event.pull_request.head.repo.full_name == github.repository" in gate["if"]
    assert "!= github.repository" in analyze["if"]
    assert analyze_step["with"]["mode"] == "analyze"
    assert analyze["permissions"] == {"contents": "read"}


def test_the_self_test_audits_on_a_schedule() -> None:
    test = workflow(WORKFLOWS / "self-test.yml")
    audit = test["jobs"]["audit"]
    [step] = steps_using({"jobs": {"audit": audit}}, "./")

    assert {"schedule", "workflow_dispatch"} <= set(test["on"])
    assert "schedule" in audit["if"] and "schedule" not in test["jobs"]["gate"]["if"]
    assert step["with"]["mode"] == "audit"
    assert audit["permissions"] == {"contents": "read", "issues": "write"}


def test_a_release_pushes_the_image_to_ghcr() -> None:
    release = workflow(WORKFLOWS / "release.yml")

    assert release["on"] == {"release": {"types": ["published"]}}
    assert release["permissions"]["packages"] == "write"
    [push] = steps_using(release, "docker/build-push-action")
    assert push["with"]["push"] is True
    [meta] = steps_using(release, "docker/metadata-action")
    assert meta["with"]["images"].startswith("ghcr.io/")


# --- the documented workflows ----------------------------------------------------------------


def documented_workflow_texts() -> dict[str, str]:
    """Every whole workflow the docs tell users to copy, by a name of its place."""
    found = {}
    for doc in (ROOT / "README.md", ROOT / "docs/action.md"):
        blocks = re.findall(r"```yaml\n(.+?)```", doc.read_text(), re.S)
        found |= {
            f"{doc.stem}-{index}.yml": block
            for index, block in enumerate(blocks)
            if re.search(r"^on:", block, re.M)
        }
    return found


def documented_workflows() -> list[dict[str, Any]]:
    return [workflow(block) for block in documented_workflow_texts().values()]


def test_the_docs_show_the_four_workflows_and_the_fork_pair() -> None:
    triggers = [set(doc["on"]) for doc in documented_workflows()]

    for expected in ({"pull_request"}, {"release"}, {"schedule", "workflow_dispatch"}):
        assert expected in triggers
    assert {"workflow_run"} in triggers


@pytest.mark.parametrize("index", range(7))
def test_each_documented_workflow_is_complete_and_uses_real_inputs(index: int) -> None:
    document = documented_workflows()[index]
    [step] = steps_using(document, "OWNER/diffai@")
    inputs = step["with"]
    mode = inputs.get("mode", "gate")

    assert "permissions" in document
    assert set(inputs) <= set(ACTION["inputs"])
    if mode != "publish":
        assert {"baseline", "candidate"} <= set(inputs)
    if mode == "analyze":
        assert document["permissions"] == {"contents": "read"}
    if mode == "publish":
        assert document["permissions"]["pull-requests"] == "write"
        assert not steps_using(document, "actions/checkout")  # never the fork's code
    if inputs.get("commit-status"):
        assert job_permissions(document, step)["statuses"] == "write"
