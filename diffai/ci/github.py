"""The GitHub REST API calls the Action makes: one sticky comment, a commit status, the PR.

Only ``entrypoint.py`` reads the token and builds the session (``make_session``); the
client takes it, the API base (``GITHUB_API_URL``, so GitHub Enterprise works) and the
clocks as parameters, which is what lets the tests talk to a real loopback server.

The library never prints: a token that may not write raises ``CannotComment`` (the caller
warns once and carries on), anything else that fails for good raises ``GitHubError``, and
so does a successful answer whose body is not the JSON the call expects (a proxy's page).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from diffai._version import __version__
from diffai.ci.github_retry import RetryingSender, RetryPolicy, api_message
from diffai.errors import CannotComment, GitHubError

__all__ = [
    "COMMENT_LIMIT",
    "GitHub",
    "PullRequest",
    "RetryPolicy",
    "make_session",
    "pull_request_from_event",
]

COMMENT_LIMIT = 65_536  # GitHub refuses longer comment bodies with a 422
STATUS_DESCRIPTION_LIMIT = 140  # likewise for commit status descriptions
STATUS_STATES = frozenset({"error", "failure", "pending", "success"})
PULL_REQUEST_EVENTS = frozenset({"pull_request", "pull_request_target"})
TRIM_NOTE = (
    "\n\n> [!NOTE]\n> This comment was cut to GitHub's limit of 65,536 characters: "
    "the full report is in the workflow run's artifact.\n"
)

# GitHub answers 403 (and 404 for what the token may not even see) when a permission is
# missing; rate limits were ruled out by the retry layer before a 403 gets here.
_ERROR_FOR_STATUS: dict[int, type[GitHubError]] = {
    401: CannotComment,
    403: CannotComment,
    404: CannotComment,
}


class _AlreadyPosted(Exception):
    """Our comment, found before its POST was sent again: GitHub had acted, the answer was lost."""

    def __init__(self, comment: dict[str, Any]) -> None:
        super().__init__()
        self.comment = comment


@dataclass(frozen=True)
class PullRequest:
    """The pull request to comment on, and the commit the run judged."""

    number: int
    head_sha: str


def make_session(token: str) -> requests.Session:
    """A session that authenticates every request; the token lives only in its headers."""
    session = requests.Session()
    session.headers.update(
        {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": f"diffai/{__version__}",
        }
    )
    return session


def pull_request_from_event(event_name: str, event: dict[str, Any]) -> PullRequest | None:
    """The PR a ``pull_request(_target)`` event is about; other events need the API, or have none.

    ``workflow_run`` names its PR only for same-repository branches: see
    ``GitHub.pull_request_for_run``.
    """
    if event_name not in PULL_REQUEST_EVENTS:
        return None
    pull = event["pull_request"]
    return PullRequest(pull["number"], pull["head"]["sha"])


class GitHub:
    """The calls the Action makes on one repository, each retried by the same policy."""

    def __init__(
        self,
        session: requests.Session,
        api_url: str,
        repository: str,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.repository = repository
        self._sender = RetryingSender(session, retry or RetryPolicy(), sleep, clock, wall_clock)
        self._identity: str | None = None
        self._identity_asked = False

    def __repr__(self) -> str:
        return f"GitHub(api_url={self.api_url!r}, repository={self.repository!r})"

    def identity(self) -> str | None:
        """The token's login, which authors the sticky comment; None for an installation token.

        An installation token (``GITHUB_TOKEN``, or a GitHub App's) may not read
        ``GET /user`` and writes as a bot: ``github-actions[bot]``, or ``<app>[bot]``.
        """
        if not self._identity_asked:
            self._identity, self._identity_asked = self._ask_identity(), True
        return self._identity

    def find_comment(self, number: int, marker: str) -> dict[str, Any] | None:
        """The oldest comment of ours carrying the marker; a person's copy never counts.

        With an installation token "ours" is any bot's: only an app can write as one, and
        a marked comment of another app's would refuse the edit rather than be taken over.
        """
        login = self.identity()
        ours = (
            comment
            for comment in self._comments(number)
            if _written_by(comment, login) and marker in (comment.get("body") or "")
        )
        return next(ours, None)

    def upsert_comment(self, number: int, marker: str, body: str) -> str:
        """Edit our marked comment, or create it when there is none; its ``html_url``.

        An unchanged body is not sent again, so a re-run does not mark the comment edited.
        A comment deleted between the listing and the edit (GitHub: 404) is created anew.
        """
        if not marker or marker not in body:
            raise ValueError("the comment body must contain its (non-empty) marker")
        body = trim_body(body, marker)
        existing = self.find_comment(number, marker)
        if existing is None:
            return self._post_comment(number, marker, body)
        try:
            return self._edit_comment(existing, body)
        except CannotComment as refused:
            if refused.status != 404:
                raise
        return self._post_comment(number, marker, body)  # deleted since it was listed

    def create_status(
        self,
        sha: str,
        state: str,
        context: str,
        description: str,
        target_url: str | None = None,
    ) -> None:
        """A commit status under our own context; the description is cut to GitHub's 140."""
        if state not in STATUS_STATES:
            raise ValueError(f"status state {state!r} is not one of {sorted(STATUS_STATES)}")
        payload = {
            "state": state,
            "context": context,
            "description": shorten(description, STATUS_DESCRIPTION_LIMIT),
        }
        if target_url:
            payload["target_url"] = target_url
        self._call("POST", self._url(f"/statuses/{sha}"), json=payload)

    def pull_request_for_run(self, event: dict[str, Any]) -> PullRequest | None:
        """The PR behind a ``workflow_run`` event, paired with the commit that run judged.

        GitHub lists it in the event only for branches of this repository; for a fork it
        is looked up by commit, then by the fork's ``owner:branch``. None: no open PR.
        """
        run = event["workflow_run"]
        number = (
            self._listed_pull(run)
            or self._pull_for_commit(run["head_sha"])
            or self._pull_for_branch(run)
        )
        return PullRequest(number, run["head_sha"]) if number else None

    def _ask_identity(self) -> str | None:
        try:
            response = self._call("GET", f"{self.api_url}/user")
        except CannotComment:  # an installation token may not read /user
            return None
        return str(_answer(response, dict, "login")["login"])

    def _comments(self, number: int) -> Iterator[dict[str, Any]]:
        """Every comment on the PR, oldest first, one page of 100 at a time."""
        url: str | None = self._url(f"/issues/{number}/comments")
        params: dict[str, Any] | None = {"per_page": 100}
        while url:
            response = self._call("GET", url, params=params)
            yield from _answer(response, list, "id", "html_url")
            url, params = self._next_page(response), None  # the next link keeps the query

    def _next_page(self, response: requests.Response) -> str | None:
        """Link rel="next", only on the API host: the session would send it the token."""
        url = response.links.get("next", {}).get("url")
        if url and not url.startswith(f"{self.api_url}/"):
            raise GitHubError(f"refusing to follow a next-page link off the API: {url}")
        return url

    def _post_comment(self, number: int, marker: str, body: str) -> str:
        """Create our comment; before sending the POST again, look whether GitHub made it anyway.

        A POST is not idempotent: the timeout or the 502 may come after the comment was created.
        """

        def look_again() -> None:
            found = self.find_comment(number, marker)
            if found is not None:
                raise _AlreadyPosted(found)

        url = self._url(f"/issues/{number}/comments")
        try:
            response = self._call("POST", url, json={"body": body}, before_resend=look_again)
        except _AlreadyPosted as posted:
            return self._edit_comment(posted.comment, body)
        return str(_answer(response, dict, "html_url")["html_url"])

    def _edit_comment(self, comment: dict[str, Any], body: str) -> str:
        """PATCH our comment, unless it already says this."""
        if comment.get("body") == body:
            return str(comment["html_url"])
        url = self._url(f"/issues/comments/{comment['id']}")
        response = self._call("PATCH", url, json={"body": body})
        return str(_answer(response, dict, "html_url")["html_url"])

    def _listed_pull(self, run: dict[str, Any]) -> int | None:
        """The event lists PRs whose head is this branch, including ones into other repos."""
        into_here = f"/repos/{self.repository}".lower()
        for pull in run.get("pull_requests") or []:
            if pull["base"]["repo"]["url"].lower().endswith(into_here):
                return int(pull["number"])
        return None

    def _pull_for_commit(self, sha: str) -> int | None:
        response = self._call("GET", self._url(f"/commits/{sha}/pulls"))
        pulls = _answer(response, list, "number", "state")
        return next((int(p["number"]) for p in pulls if p["state"] == "open"), None)

    def _pull_for_branch(self, run: dict[str, Any]) -> int | None:
        """A fork's commit is often unknown to the commits endpoint; its branch is not."""
        head_repository = run.get("head_repository")
        if not head_repository:  # the fork was deleted
            return None
        head = f"{head_repository['owner']['login']}:{run['head_branch']}"
        params = {"state": "open", "head": head}
        response = self._call("GET", self._url("/pulls"), params=params)
        pulls = _answer(response, list, "number")
        return int(pulls[0]["number"]) if pulls else None

    def _url(self, path: str) -> str:
        return f"{self.api_url}/repos/{self.repository}{path}"

    def _call(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """The successful response; the failure mapped to CannotComment or GitHubError."""
        response = self._sender.send(method, url, **kwargs)
        if response.ok:
            return response
        error = _ERROR_FOR_STATUS.get(response.status_code, GitHubError)
        path = urlsplit(url).path
        raise error(api_message(response), method=method, path=path, status=response.status_code)


def _written_by(comment: dict[str, Any], login: str | None) -> bool:
    """Whether ``login`` wrote the comment; with no login (an installation token), any bot."""
    user = comment.get("user") or {}
    return user.get("login") == login if login else user.get("type") == "Bot"


def _answer(response: requests.Response, shape: type[Any], *keys: str) -> Any:
    """A successful answer's body, checked: a list of objects or one object, with these keys.

    Anything else (a proxy's login page, a cut-off body) is a GitHubError naming the call,
    raised at once: sending the request again would not change what came back.
    """
    try:
        data = response.json()
    except ValueError:
        kind = response.headers.get("content-type") or "no content type"
        problem = f"a body that is not JSON ({kind})"
    else:
        problem = _shape_problem(data, shape, keys)
        if problem is None:
            return data
    path = urlsplit(response.url).path
    method = response.request.method or ""
    status = response.status_code
    raise GitHubError(f"unexpected answer: {problem}", method=method, path=path, status=status)


def _shape_problem(data: Any, shape: type[Any], keys: tuple[str, ...]) -> str | None:
    """What is wrong with a body's shape; None when nothing is."""
    if not isinstance(data, shape):
        return f"JSON that is not {'a list' if shape is list else 'an object'}"
    for item in data if shape is list else [data]:
        if not isinstance(item, dict):
            return "a list item that is not an object"
        missing = [key for key in keys if key not in item]
        if missing:
            return f"an object without {', '.join(missing)}"
    return None


def trim_body(body: str, marker: str, limit: int = COMMENT_LIMIT) -> str:
    """Fit GitHub's limit: whole lines, code fences closed, the marker kept, then the note."""
    if len(body) <= limit:
        return body
    head = body[: limit - len(TRIM_NOTE) - len(marker) - len("\n```\n")]
    head = head[: head.rfind("\n") + 1] or head
    if marker not in head:
        head = f"{marker}\n{head}"
    if head.count("```") % 2:
        head += "```\n"
    return head + TRIM_NOTE


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
