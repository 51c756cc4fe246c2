"""The GitLab REST API calls of ``diffai ci gitlab``: one sticky merge-request note.

The same sticky rules as the GitHub comment (``sticky.py``), the same answer checks and
pagination (``rest.py``) and the same retries (``github_retry.py``); only the endpoints
differ. The note is "ours" when its author is the token's user (``GET /user``: a project
access token has a bot user of its own). ``CI_JOB_TOKEN`` may not read ``/user`` nor
write notes, so it is refused like a read-only GitHub token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import requests

from diffai._version import __version__
from diffai.ci.rest import RestClient
from diffai.ci.sticky import Post

NOTE_LIMIT = 1_000_000  # GitLab refuses longer notes


def make_gitlab_session(token: str) -> requests.Session:
    """A session that authenticates every request; the token lives only in its headers."""
    session = requests.Session()
    session.headers.update({"PRIVATE-TOKEN": token, "User-Agent": f"diffai/{__version__}"})
    return session


class GitLab(RestClient):
    """The calls on one project (``CI_API_V4_URL``, ``CI_PROJECT_ID``), each retried."""

    service = "GitLab"

    def __init__(
        self, session: requests.Session, api_url: str, project_id: str, **timing: Any
    ) -> None:
        super().__init__(session, api_url, **timing)
        self.project_id = project_id
        self._user_id: int | None = None

    def __repr__(self) -> str:
        return f"GitLab(api_url={self.api_url!r}, project_id={self.project_id!r})"

    def user_id(self) -> int:
        """The token's user, who authors our notes; CannotComment for a CI job token."""
        if self._user_id is None:
            user = self.answer(self.call("GET", f"{self.api_url}/user"), dict, "id")
            self._user_id = int(user["id"])
        return self._user_id

    def url(self, path: str) -> str:
        return f"{self.api_url}/projects/{self.project_id}{path}"


@dataclass(frozen=True)
class MergeRequestNotes:
    """The notes of one merge request; ``web_url`` is the merge request's page."""

    gitlab: GitLab
    iid: int
    web_url: str
    limit: int = NOTE_LIMIT

    def posts(self) -> Iterator[Post]:
        params = {"sort": "asc", "order_by": "created_at"}
        listing = self.gitlab.pages(self._notes_url(), params, "id", "body", "author")
        return (self._post(note) for note in listing)

    def create(self, body: str, before_resend: Callable[[], None]) -> Post:
        url, payload = self._notes_url(), {"body": body}
        response = self.gitlab.call("POST", url, json=payload, before_resend=before_resend)
        return self._post(self.gitlab.answer(response, dict, "id", "body", "author"))

    def edit(self, post: Post, body: str) -> Post:
        url = f"{self._notes_url()}/{post.id}"
        response = self.gitlab.call("PUT", url, json={"body": body})
        return self._post(self.gitlab.answer(response, dict, "id", "body", "author"))

    def _post(self, note: dict[str, Any]) -> Post:
        """A system note ("changed the description") is GitLab's, never ours."""
        author = note.get("author") or {}
        ours = not note.get("system") and author.get("id") == self.gitlab.user_id()
        url = f"{self.web_url}#note_{note['id']}"
        return Post(int(note["id"]), str(note.get("body") or ""), url, ours, note)

    def _notes_url(self) -> str:
        return self.gitlab.url(f"/merge_requests/{self.iid}/notes")
