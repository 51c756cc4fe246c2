"""The Action's inputs and the runner's context, read once and validated as one ``Config``.

The runner does not enforce ``required: true`` and passes every input as a
string, so each field is cleaned here by a ``clean_<field>`` converter, and
every problem is collected before anything runs: a user who got three inputs
wrong reads one message naming all three, not three failed runs.

Inputs arrive twice in a container action: under the names ``action.yml``
maps explicitly in ``runs.env`` (``INPUT_GITHUB_TOKEN``) and under the names
the runner derives itself, which keep the hyphen (``INPUT_GITHUB-TOKEN``).
The explicit name wins; the hyphenated one is the fallback for callers that
run the image without our ``action.yml`` (``docker://`` pins).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from diffai.errors import UsageError
from diffai.sources import is_remote

COMMENT_POLICIES = ("always", "on-change", "on-failure", "never")
FAIL_ON = ("error", "warning", "never")
MODES = ("gate", "analyze", "publish", "audit")
HISTORY_RUNS = range(1, 101)  # audit-history: the issue body has room for about 100 runs
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
# The tag ends up inside an HTML comment and a commit-status context: no "--", ">" or spaces.
_TAG = re.compile(r"(?!.*--)[A-Za-z0-9][A-Za-z0-9._/-]{0,63}")
_REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")

#: Inputs and their defaults (what ``action.yml`` declares); None means "not given".
INPUT_DEFAULTS: dict[str, str | None] = {
    "baseline": None,
    "candidate": None,
    "policy": None,
    "github-token": None,
    "comment": "always",
    "comment-tag": "diffai",
    "fail-on": "error",
    "report-dir": "diffai-report",
    "metrics-baseline": None,
    "metrics-candidate": None,
    "commit-status": "false",
    "release-assets": "false",
    "mode": "gate",
    "audit-history": "20",
}

#: The runner's own variables the Action reads, with defaults for runs outside Actions.
CONTEXT_DEFAULTS: dict[str, str | None] = {
    "GITHUB_WORKSPACE": None,
    "GITHUB_EVENT_NAME": "",
    "GITHUB_EVENT_PATH": None,
    "GITHUB_REPOSITORY": "",
    "GITHUB_API_URL": "https://api.github.com",
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_RUN_ID": "",
    "GITHUB_SHA": "",
}


class InvalidInputs(UsageError):
    """One or more inputs are missing or wrong; ``problems`` names each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid inputs: " + "; ".join(problems))


@dataclass(kw_only=True)
class Config:
    """Everything the Action was asked to do, and where it runs; built by ``from_environ``."""

    baseline: str | None = None
    candidate: str | None = None
    policy: str | None = None
    github_token: str | None = field(default=None, repr=False)
    comment: str = "always"
    comment_tag: str = "diffai"
    fail_on: str = "error"
    report_dir: str = "diffai-report"
    metrics_baseline: str | None = None
    metrics_candidate: str | None = None
    commit_status: bool = False
    release_assets: bool = False
    mode: str = "gate"
    audit_history: int = 20
    github_workspace: Path = Path(".")
    github_event_name: str = ""
    github_event_path: Path | None = None
    github_repository: str = ""
    github_api_url: str = "https://api.github.com"
    github_server_url: str = "https://github.com"
    github_run_id: str = ""
    github_sha: str = ""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], cwd: Path) -> Config:
        """Clean every input and context variable; raise ``InvalidInputs`` naming all problems."""
        raw = {**read_inputs(environ), **read_context(environ, cwd)}
        values, problems = clean_all(raw)
        config = cls(**values)  # a field that failed keeps its default for the checks below
        problems += cross_field_problems(config)
        if problems:
            raise InvalidInputs(problems)
        return config

    @property
    def marker(self) -> str:
        """The hidden HTML comment that tells this Action's comment (for this tag) apart."""
        return f"<!-- diffai-comment: {self.comment_tag} -->"

    @property
    def audit_marker(self) -> str:
        """The audit issue's hidden marker: not the comment's, so neither is taken for the other."""
        return f"<!-- diffai-audit: {self.comment_tag} -->"

    @property
    def run_url_prefix(self) -> str | None:
        """What every run URL of this repository starts with; None outside GitHub Actions."""
        if not self.github_repository:
            return None
        return f"{self.github_server_url.rstrip('/')}/{self.github_repository}/actions/runs/"

    @property
    def status_context(self) -> str:
        return f"diffai/{self.comment_tag}"

    @property
    def run_url(self) -> str | None:
        if not (self.github_repository and self.github_run_id):
            return None
        return f"{self.run_url_prefix}{self.github_run_id}"

    def resolve(self, path: str) -> Path:
        """A path as the user wrote it, relative to the checkout (``/github/workspace``)."""
        return self.github_workspace / path

    def resolve_model(self, path: str) -> str | Path:
        """A model: a path in the checkout, or an ``hf://``/``s3://``/``https://`` URL as it is
        (read where it lives, never onto the runner's disk)."""
        return path if is_remote(path) else self.resolve(path)


def read_inputs(environ: Mapping[str, str]) -> dict[str, str | None]:
    """Each input by its explicit name, else the runner's hyphenated one, else its default."""
    values = {}
    for name, default in INPUT_DEFAULTS.items():
        explicit = environ.get(f"INPUT_{name.upper().replace('-', '_')}", "").strip()
        hyphenated = environ.get(f"INPUT_{name.upper()}", "").strip()
        values[name.replace("-", "_")] = explicit or hyphenated or default
    return values


def read_context(environ: Mapping[str, str], cwd: Path) -> dict[str, str | None]:
    values = {
        name.lower(): environ.get(name) or default for name, default in CONTEXT_DEFAULTS.items()
    }
    values["github_workspace"] = values["github_workspace"] or str(cwd)
    return values


def clean_all(raw: dict[str, str | None]) -> tuple[dict[str, Any], list[str]]:
    """Run each field's ``clean_<field>``; a field without one is kept as it is."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for spec in fields(Config):
        cleaner = CLEANERS.get(spec.name)
        try:
            values[spec.name] = cleaner(raw[spec.name]) if cleaner else raw[spec.name]
        except ValueError as exc:
            problems.append(f"{input_name(spec.name)}: {exc}")
    return values, problems


def input_name(field_name: str) -> str:
    """The name a user wrote in ``with:`` (``fail-on``), or the runner variable's name."""
    if field_name.startswith("github_") and field_name != "github_token":
        return field_name.upper()
    return field_name.replace("_", "-")


def _choice(allowed: tuple[str, ...]) -> Callable[[str | None], str]:
    def clean(value: str | None) -> str:
        if value not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
        return value

    return clean


def clean_comment_tag(value: str | None) -> str:
    if not value or not _TAG.fullmatch(value):
        raise ValueError(
            f"{value!r} must be 1-64 letters, digits, '.', '_', '/' or single '-', starting with "
            "a letter or digit (it goes into an HTML comment and a commit-status context)"
        )
    return value


def clean_boolean(value: str | None) -> bool:
    lowered = (value or "").lower()
    if lowered not in _TRUE + _FALSE:
        raise ValueError(f"{value!r} is not a boolean (true or false)")
    return lowered in _TRUE


def clean_audit_history(value: str | None) -> int:
    text = (value or "").strip()
    if not text.isdigit() or int(text) not in HISTORY_RUNS:
        first, last = HISTORY_RUNS[0], HISTORY_RUNS[-1]
        raise ValueError(f"{value!r} is not a whole number of runs from {first} to {last}")
    return int(text)


def clean_report_dir(value: str | None) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


def clean_github_repository(value: str | None) -> str:
    if value and not _REPOSITORY.fullmatch(value):
        raise ValueError(f"{value!r} is not owner/name")
    return value or ""


def clean_github_workspace(value: str | None) -> Path:
    return Path(value or ".")


def clean_github_event_path(value: str | None) -> Path | None:
    return Path(value) if value else None


CLEANERS: dict[str, Callable[[str | None], Any]] = {
    "comment": _choice(COMMENT_POLICIES),
    "comment_tag": clean_comment_tag,
    "fail_on": _choice(FAIL_ON),
    "report_dir": clean_report_dir,
    "commit_status": clean_boolean,
    "release_assets": clean_boolean,
    "mode": _choice(MODES),
    "audit_history": clean_audit_history,
    "github_workspace": clean_github_workspace,
    "github_event_path": clean_github_event_path,
    "github_repository": clean_github_repository,
}


def cross_field_problems(config: Config) -> list[str]:
    """What no single field shows: inputs a mode needs, files that are not in the workspace."""
    problems = []
    if config.mode != "publish":
        problems += _required(config, "baseline", "candidate")
        problems += _missing_files(config, "baseline", "candidate", "policy")
        problems += _missing_files(config, "metrics_baseline", "metrics_candidate")
    else:
        problems += _required(config, "github_token")
    return problems


def _required(config: Config, *names: str) -> list[str]:
    mode = f"mode {config.mode}"
    return [f"{input_name(n)}: required (in {mode})" for n in names if not getattr(config, n)]


def _missing_files(config: Config, *names: str) -> list[str]:
    problems = []
    for name in names:
        path = getattr(config, name)
        if path and not is_remote(path) and not config.resolve(path).exists():
            where = config.github_workspace
            problems.append(
                f"{input_name(name)}: {path!r} does not exist in the workspace ({where})"
            )
    return problems
