"""A GitLab REST API (v4) on loopback: the merge-request notes ``diffai ci gitlab`` uses.

A real ``ThreadingHTTPServer``, answering as GitLab does where it matters: tokens in
``PRIVATE-TOKEN``, ``GET /user`` for a project access token's bot user (401 for a CI job
token, which may not read it), 403 for a token whose role may not write notes, system
notes among the listing, offset pagination with both ``Link`` and ``X-Next-Page``
(``link_headers = False`` leaves only the latter, as some proxies do), and canned faults.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.github_api import serving

PROJECT_ID = "4711"
PROJECT_TOKEN = "glpat-project-token"  # a project access token, role Developer: bot user 90
JOB_TOKEN = "glcbt-job-token"  # CI_JOB_TOKEN: no /user, no notes
GUEST_TOKEN = "glpat-guest-token"  # a project access token with the Guest role: read only
BOT_ID, PERSON_ID = 90, 7


@dataclass
class Note:
    id: int
    author_id: int
    body: str
    system: bool = False


@dataclass(frozen=True)
class Fault:
    status: int
    body: Any
    headers: dict[str, str]


class FakeGitLab:
    """The API's state for one merge request of one project; tests set and read it."""

    def __init__(self) -> None:
        self.root = ""
        self.notes: list[Note] = []
        self.received: list[tuple[str, str, dict[str, str]]] = []
        self.link_headers = True
        self._faults: list[tuple[str, Fault]] = []
        self._ids = itertools.count(3001)
        self._lock = threading.Lock()

    @property
    def api_url(self) -> str:
        return f"{self.root}/api/v4"

    def add_note(self, body: str, author_id: int = PERSON_ID, system: bool = False) -> Note:
        note = Note(next(self._ids), author_id, body, system)
        self.notes.append(note)
        return note

    def fail(self, method: str, status: int, body: Any = None, **headers: str) -> None:
        self._faults.append((method, Fault(status, body or {"message": "boom"}, headers)))

    def calls(self, method: str) -> list[tuple[str, str, dict[str, str]]]:
        return [call for call in self.received if call[0] == method]

    def handle(self, method: str, target: str, token: str, raw: bytes) -> Fault:
        split = urlsplit(target)
        query = dict(parse_qsl(split.query))
        with self._lock:
            self.received.append((method, split.path, query))
            for index, (faulty, _) in enumerate(self._faults):
                if faulty == method:
                    return self._faults.pop(index)[1]
            return self._route(method, split.path, query, token, json.loads(raw or b"null"))

    def _route(self, method: str, path: str, query: dict[str, str], token: str, data: Any) -> Fault:
        if token not in (PROJECT_TOKEN, GUEST_TOKEN):
            return Fault(401, {"message": "401 Unauthorized"}, {})
        if path == "/api/v4/user" and method == "GET":
            return Fault(200, {"id": BOT_ID, "username": "project_4711_bot_1", "bot": True}, {})
        notes = f"/api/v4/projects/{PROJECT_ID}/merge_requests/12/notes"
        if path == notes and method == "GET":
            return self._page(query, notes)
        if method in ("POST", "PUT") and token == GUEST_TOKEN:
            return Fault(403, {"message": "403 Forbidden"}, {})
        if path == notes and method == "POST":
            return Fault(201, note_json(self.add_note(data["body"], BOT_ID)), {})
        match = re.fullmatch(rf"{notes}/(\d+)", path)
        if match and method == "PUT":
            return self._edit(int(match[1]), data["body"])
        return Fault(404, {"message": "404 Not found"}, {})

    def _edit(self, note_id: int, body: str) -> Fault:
        note = next((n for n in self.notes if n.id == note_id), None)
        if note is None or note.author_id != BOT_ID:
            return Fault(404 if note is None else 403, {"message": "403 Forbidden"}, {})
        note.body = body
        return Fault(200, note_json(note), {})

    def _page(self, query: dict[str, str], path: str) -> Fault:
        per_page, page = min(int(query.get("per_page", 20)), 100), int(query.get("page", 1))
        shown = self.notes[(page - 1) * per_page : page * per_page]
        more = page * per_page < len(self.notes)
        headers = {"X-Page": str(page), "X-Per-Page": str(per_page)}
        headers["X-Next-Page"] = str(page + 1) if more else ""
        if more and self.link_headers:
            others = "&".join(f"{k}={v}" for k, v in query.items() if k != "page")
            headers["Link"] = f'<{self.api_url}{path[7:]}?{others}&page={page + 1}>; rel="next"'
        return Fault(200, [note_json(note) for note in shown], headers)


def note_json(note: Note) -> dict[str, Any]:
    return {
        "id": note.id,
        "body": note.body,
        "system": note.system,
        "noteable_iid": 12,
        "author": {"id": note.author_id, "username": f"user{note.author_id}"},
    }


def _handler(fake: FakeGitLab) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            reply = fake.handle(self.command, self.path, self.headers.get("PRIVATE-TOKEN", ""), raw)
            data = json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read ``fake.received`` instead."""

    return Handler


@pytest.fixture
def gitlab_api() -> Iterator[FakeGitLab]:
    """A fresh fake GitLab on a free loopback port, for one test."""
    fake = FakeGitLab()
    with serving(_handler(fake)) as fake.root:
        yield fake
