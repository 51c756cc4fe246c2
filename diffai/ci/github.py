"""The GitHub REST API calls the Action makes: one sticky comment, a commit status, the PR.

Only ``entrypoint.py`` reads the token and builds the session (``make_session``); the
client takes it, the API base (``GITHUB_API_URL``, so GitHub Enterprise works) and the
clocks as parameters, which is what lets the tests talk to a real loopback server.

The library never prints: a token that may not write raises ``CannotComment`` (the caller
warns once and carries on), anything else that fails for good raises ``GitHubError``, and
so does a successful answer whose body is not the JSON the call expects (a proxy's page).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import requests

from diffai._version import __version__
from diffai.ci.github_retry import RetryPolicy
from diffai.ci.rest import RestClient
from diffai.ci.sticky import Post, Sticky
from diffai.errors import CannotComment

__all__ = [
    "COMMENT_LIMIT",
    "GitHub",
    "Issues",
    "PullComments",
    "PullRequest",
    "RetryPolicy",
    "make_session",
    "pull_request_from_event",
]

COMMENT_LIMIT = 65_536  # GitHub refuses longer comment bodies with a 422
STATUS_DESCRIPTION_LIMIT = 140  # likewise for commit status descriptions
STATUS_STATES = frozenset({"error", "failure", "pending", "success"})
PULL_REQUEST_EVENTS = frozenset({"pull_request", "pull_request_target"})


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


class GitHub(RestClient):
    """The calls the Action makes on one repository, each retried by the same policy."""

    def __init__(
        self, session: requests.Session, api_url: str, repository: str, **timing: Any
    ) -> None:
        """``timing``: ``retry`` (a RetryPolicy) and the clocks, as ``RestClient`` takes them."""
        super().__init__(session, api_url, **timing)
        self.repository = repository
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

    def owns(self, item: dict[str, Any]) -> bool:
        """Whether we wrote a comment or issue; with an installation token, whether a bot did.

        Only an app can write as a bot, and a marked comment of another app's would refuse
        the edit rather than be taken over.
        """
        user = item.get("user") or {}
        login = self.identity()
        return user.get("login") == login if login else user.get("type") == "Bot"

    def find_comment(self, number: int, marker: str) -> Post | None:
        """The oldest comment of ours on the PR carrying the marker; never a person's copy."""
        return Sticky(PullComments(self, number), marker).find()

    def upsert_comment(self, number: int, marker: str, body: str) -> str:
        """Edit our marked comment, or create it when there is none; its ``html_url``."""
        return Sticky(PullComments(self, number), marker).upsert(body).url

    def comment(self, number: int, body: str) -> str:
        """A plain comment on an issue or PR (the audit's note of a change); its ``html_url``."""
        return PullComments(self, number).create(body, lambda: None).url

    def set_issue_state(self, number: int, state: str) -> None:
        """Close an issue as completed, or reopen it."""
        reason = {"closed": "completed", "open": "reopened"}[state]
        payload = {"state": state, "state_reason": reason}
        self.answer(self.call("PATCH", self._url(f"/issues/{number}"), json=payload), dict)

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
        self.call("POST", self._url(f"/statuses/{sha}"), json=payload)

    def release_assets(self, release_id: int) -> Iterator[dict[str, Any]]:
        """The assets already attached to a release, every page."""
        return self.pages(self._url(f"/releases/{release_id}/assets"), {}, "id", "name")

    def delete_release_asset(self, asset_id: int) -> None:
        self.call("DELETE", self._url(f"/releases/assets/{asset_id}"))

    def upload_release_asset(self, upload_url: str, name: str, data: bytes, kind: str) -> str:
        """One file attached to a release (at the event's upload host); its download URL."""
        headers = {"Content-Type": kind}
        response = self.call("POST", upload_url, params={"name": name}, data=data, headers=headers)
        return str(self.answer(response, dict, "browser_download_url")["browser_download_url"])

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

    def post(self, item: dict[str, Any], id_key: str = "id") -> Post:
        """An API comment or issue as the sticky logic sees it."""
        return Post(
            int(item[id_key]), item.get("body") or "", str(item["html_url"]), self.owns(item), item
        )

    def _ask_identity(self) -> str | None:
        try:
            response = self.call("GET", f"{self.api_url}/user")
        except CannotComment:  # an installation token may not read /user
            return None
        return str(self.answer(response, dict, "login")["login"])

    def _listed_pull(self, run: dict[str, Any]) -> int | None:
        """The event lists PRs whose head is this branch, including ones into other repos."""
        into_here = f"/repos/{self.repository}".lower()
        for pull in run.get("pull_requests") or []:
            if pull["base"]["repo"]["url"].lower().endswith(into_here):
                return int(pull["number"])
        return None

    def _pull_for_commit(self, sha: str) -> int | None:
        response = self.call("GET", self._url(f"/commits/{sha}/pulls"))
        pulls = self.answer(response, list, "number", "state")
        return next((int(p["number"]) for p in pulls if p["state"] == "open"), None)

    def _pull_for_branch(self, run: dict[str, Any]) -> int | None:
        """A fork's commit is often unknown to the commits endpoint; its branch is not."""
        head_repository = run.get("head_repository")
        if not head_repository:  # the fork was deleted
            return None
        head = f"{head_repository['owner']['login']}:{run['head_branch']}"
        params = {"state": "open", "head": head}
        response = self.call("GET", self._url("/pulls"), params=params)
        pulls = self.answer(response, list, "number")
        return int(pulls[0]["number"]) if pulls else None

    def _url(self, path: str) -> str:
        return f"{self.api_url}/repos/{self.repository}{path}"


@dataclass(frozen=True)
class PullComments:
    """The comments of one PR (or issue), where the sticky comment lives."""

    github: GitHub
    number: int
    limit: int = COMMENT_LIMIT

    def posts(self) -> Iterator[Post]:
        listing = self.github.pages(self._comments_url(), {}, "id", "html_url")
        return (self.github.post(comment) for comment in listing)

    def create(self, body: str, before_resend: Callable[[], None]) -> Post:
        url, payload = self._comments_url(), {"body": body}
        response = self.github.call("POST", url, json=payload, before_resend=before_resend)
        return self.github.post(self.github.answer(response, dict, "id", "html_url"))

    def edit(self, post: Post, body: str) -> Post:
        url = self.github._url(f"/issues/comments/{post.id}")
        response = self.github.call("PATCH", url, json={"body": body})
        return self.github.post(self.github.answer(response, dict, "id", "html_url"))

    def _comments_url(self) -> str:
        return self.github._url(f"/issues/{self.number}/comments")


@dataclass(frozen=True)
class Issues:
    """The repository's issues, open and closed, oldest first: where the audit issue lives.

    GitHub lists pull requests among issues; they are skipped, never taken for ours.
    """

    github: GitHub
    title: str
    limit: int = COMMENT_LIMIT

    def posts(self) -> Iterator[Post]:
        params = {"state": "all", "sort": "created", "direction": "asc"}
        listing = self.github.pages(self.github._url("/issues"), params, "number", "html_url")
        return (self.github.post(i, "number") for i in listing if "pull_request" not in i)

    def create(self, body: str, before_resend: Callable[[], None]) -> Post:
        url, payload = self.github._url("/issues"), {"title": self.title, "body": body}
        response = self.github.call("POST", url, json=payload, before_resend=before_resend)
        return self.github.post(self.github.answer(response, dict, "number", "html_url"), "number")

    def edit(self, post: Post, body: str) -> Post:
        url = self.github._url(f"/issues/{post.id}")
        response = self.github.call("PATCH", url, json={"body": body})
        return self.github.post(self.github.answer(response, dict, "number", "html_url"), "number")


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
