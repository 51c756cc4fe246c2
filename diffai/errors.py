"""Every failure diffai reports to a user, as one exception tree.

    DiffaiError                   anything the user can act on; exit status 2
    ├── UsageError                bad flags or option values
    ├── UnreadableModel           a model file or folder that cannot be read as a model
    │   ├── MalformedModel        the bytes break the format's rules (bad header, offsets ...)
    │   ├── UnsafePickle          a pickle asks for a global outside the allow-list
    │   ├── MissingExtra          reading it needs an optional package (torch, scipy, h5py)
    │   └── RemoteUnavailable     a remote store refused or failed to serve it (after any retries)
    ├── PolicyError               a policy or metrics file is missing, unreadable or invalid
    ├── MapError                  a name map (--map) is missing, invalid, or does not fit the models
    ├── ReportError               the report could not be written
    └── GitHubError               a GitHub (or GitLab) API call failed for good (after any retries)
        └── CannotComment         the token may not do it (read-only fork token, missing permission)

The library raises these and never prints or exits; ``cli.main`` turns each into
one line on stderr and exit status 2.
"""

from __future__ import annotations

from pathlib import Path


class DiffaiError(Exception):
    """Base of every error diffai reports to a user."""


class UsageError(DiffaiError):
    """The command line or an API argument is wrong."""


class UnreadableModel(DiffaiError):
    """A model artifact cannot be read; the message names the file."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class MalformedModel(UnreadableModel):
    """The file claims a format but breaks its rules."""


class UnsafePickle(UnreadableModel):
    """A pickle names a global that the allow-list refuses; nothing was executed.

    ``problem`` says what the global is and what to do, which differs between a
    pickled object, a tensor kind not read yet and code (``formats.pytorch.refusals``).
    """

    def __init__(self, path: str | Path, global_name: str, problem: str) -> None:
        self.global_name = global_name
        super().__init__(path, problem)


class MissingExtra(UnreadableModel):
    """Reading this file needs an optional dependency that is not installed."""

    def __init__(self, path: str | Path, what: str, extra: str) -> None:
        self.extra = extra
        super().__init__(path, f"{what}; install it with: pip install 'diffai[{extra}]'")


class RemoteUnavailable(UnreadableModel):
    """An ``hf://``, ``s3://`` or ``https://`` model could not be read: refused (401/403/404,
    saying which credential is missing), failed for good after retries, or served wrongly
    (a server that ignores ``Range``). ``path`` is the name the user gave, never a signed URL."""


class PolicyError(DiffaiError):
    """A policy or metrics file cannot be used; the message names the file, line and key."""


class MapError(DiffaiError):
    """A name map cannot be used; the message names the map (file and line, or built-in name),
    the rule, and what is wrong."""


class ReportError(DiffaiError):
    """An output file (report, markdown ...) could not be written."""


class GitHubError(DiffaiError):
    """A GitHub API call failed for good: at once for a request GitHub refuses, else after retries.

    ``message`` is GitHub's own ``message`` when it answered, else what went wrong on the
    way (no response, a wait beyond the retry budget); ``status`` is None without a response.
    GitLab's calls share the client code and so this class; ``service`` names which API it was.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        path: str = "",
        status: int | None = None,
        service: str = "GitHub",
    ) -> None:
        self.message = message
        self.method = method
        self.path = path
        self.status = status
        self.service = service
        call = f"{method} {path}".strip()
        answered = f" -> HTTP {status}" if status else ""
        super().__init__(f"{service} API {call}{answered}: {message}" if call else message)


class CannotComment(GitHubError):
    """The token may not write here (401, or a 403/404 that is not a rate limit).

    Not a failure of the run: a fork's pull request gets a read-only token, so the
    caller warns once and still writes the summary and the report, and the gate decides.
    """
