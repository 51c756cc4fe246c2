"""One sticky post: found by its hidden marker among our own, edited in place, never doubled.

The pull-request comment, the audit issue and the GitLab merge-request note are the same
idea on three listings: a ``Thread`` lists its posts (every page, oldest first, each
marked as ours or not), creates one and edits one. ``Sticky`` holds the rules that make a
post sticky and that none of the three may get wrong on its own:

- only our own posts count: a person's copy of the marker is never edited;
- the oldest of ours with the marker is the one, so a stray second post is left alone;
- an unchanged body is not sent again, so a re-run does not mark the post edited;
- a post deleted between the listing and the edit (404) is created anew;
- a create is not idempotent: before the retry layer sends it again, the listing is read
  again, and a post that the lost answer had made is kept instead of doubled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from diffai.errors import CannotComment

TRIM_NOTE = (
    "\n\n> [!NOTE]\n> This text was cut to the limit of {limit:,} characters: "
    "the full report is in the run's artifact.\n"
)


@dataclass(frozen=True)
class Post:
    """A comment, issue or note as the listing gave it; ``raw`` keeps the API's object."""

    id: int
    body: str
    url: str
    ours: bool
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


class Thread(Protocol):
    """Where one kind of sticky post lives, and the three calls that reach it."""

    limit: int  # the longest body the API accepts

    def posts(self) -> Iterator[Post]: ...

    def create(self, body: str, before_resend: Callable[[], None]) -> Post: ...

    def edit(self, post: Post, body: str) -> Post: ...


class _AlreadyPosted(Exception):
    """Our post, found before its create was sent again: the API had acted, the answer was lost."""

    def __init__(self, post: Post) -> None:
        super().__init__()
        self.post = post


@dataclass(frozen=True)
class Sticky:
    """The one post of ours in ``thread`` that carries ``marker``."""

    thread: Thread
    marker: str

    def find(self) -> Post | None:
        """The oldest post of ours carrying the marker; a person's copy never counts."""
        return next((p for p in self.thread.posts() if p.ours and self.marker in p.body), None)

    def upsert(self, body: str) -> Post:
        """Edit our marked post, or create it when there is none."""
        self._check(body)
        return self.write(body, self.find())

    def write(self, body: str, existing: Post | None) -> Post:
        """Edit ``existing`` (found by ``find``) or create the post; the post as it now is."""
        self._check(body)
        body = trim_body(body, self.marker, self.thread.limit)
        if existing is None:
            return self._create(body)
        try:
            return self._edit(existing, body)
        except CannotComment as refused:
            if refused.status != 404:
                raise
        return self._create(body)  # deleted since it was listed

    def _check(self, body: str) -> None:
        """A body without its marker would be lost to the next run: a bug, refused unsent."""
        if not self.marker or self.marker not in body:
            raise ValueError("the body must contain its (non-empty) marker")

    def _create(self, body: str) -> Post:
        def look_again() -> None:
            found = self.find()
            if found is not None:
                raise _AlreadyPosted(found)

        try:
            return self.thread.create(body, look_again)
        except _AlreadyPosted as posted:
            return self._edit(posted.post, body)

    def _edit(self, post: Post, body: str) -> Post:
        return post if post.body == body else self.thread.edit(post, body)


def trim_body(body: str, marker: str, limit: int) -> str:
    """Fit the API's limit: whole lines, code fences closed, the marker kept, then the note."""
    if len(body) <= limit:
        return body
    note = TRIM_NOTE.format(limit=limit)
    head = body[: limit - len(note) - len(marker) - len("\n```\n")]
    head = head[: head.rfind("\n") + 1] or head
    if marker not in head:
        head = f"{marker}\n{head}"
    if head.count("```") % 2:
        head += "```\n"
    return head + note
