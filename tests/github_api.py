"""A GitHub REST API on loopback: the part the Action uses, answering the way GitHub does.

A real ``ThreadingHTTPServer``, so retries, pagination and headers cross real HTTP. Tests
program it (tokens, comments, pull requests, canned faults) and read what it received.
Honest where it matters: 401 "Bad credentials", 403 "Resource not accessible by
integration" for read-only tokens and for ``GET /user`` with an installation token, 422
"Validation Failed" for over-long bodies, ``Link`` headers that point at
``/repositories/{id}/...`` as GitHub's do, and (``prefix = "/api/v3"``) GitHub Enterprise.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

OWNER = "octo"
REPOSITORY = f"{OWNER}/models"  # the one repository it serves; any other is 404
REPOSITORY_ID = 1296269  # what GitHub's pagination links name it by
BOT = "github-actions[bot]"
WRITE_TOKEN = "ghs_write_token"  # GITHUB_TOKEN with pull-requests: write
READ_ONLY_TOKEN = "ghs_read_only_token"  # GITHUB_TOKEN of a pull_request run from a fork
USER_TOKEN = "ghp_user_token"  # a personal access token: it may GET /user
APP = "diffai-reviewer[bot]"
APP_TOKEN = "ghs_app_token"  # a GitHub App's installation token: it writes as APP
FORBIDDEN = "Resource not accessible by integration"


@dataclass(frozen=True)
class Token:
    login: str
    can_write: bool = True


@dataclass(frozen=True)
class Reply:
    """One answer, its body sent as JSON (a dict or list), an HTML page (a str) or raw (bytes).

    A str is what proxies send; bytes, labelled JSON, make a cut-off body. ``delay`` holds
    the answer back that long, past a client's timeout; ``acts`` makes a canned fault take
    effect all the same, as when GitHub did the work and the answer was lost.
    """

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    acts: bool = False


@dataclass(frozen=True)
class Received:
    method: str
    path: str  # without the Enterprise prefix and the query
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    json: Any
    raw: bytes = b""  # the body as sent: an upload's bytes


@dataclass
class Comment:
    id: int
    number: int
    login: str
    body: str


@dataclass
class Issue:
    number: int
    login: str
    title: str
    body: str
    state: str = "open"
    state_reason: str | None = None
    is_pull: bool = False  # GitHub lists pull requests among the issues


@dataclass
class Asset:
    id: int
    release_id: int
    name: str
    uploader: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Pull:
    number: int
    head_sha: str
    branch: str
    owner: str  # of the head repository: a fork's owner for a fork
    state: str = "open"


def error(status: int, message: str, **extra: Any) -> Reply:
    docs = "https://docs.github.com/rest"
    return Reply(status, {"message": message, "documentation_url": docs, **extra})


REPO = f"(?:/repos/{REPOSITORY}|/repositories/{REPOSITORY_ID})"
ROUTES = [  # (method, path, FakeGitHub method)
    ("GET", r"/user", "get_user"),
    ("GET", rf"{REPO}/issues/(?P<number>\d+)/comments", "list_comments"),
    ("POST", rf"{REPO}/issues/(?P<number>\d+)/comments", "create_comment"),
    ("PATCH", rf"{REPO}/issues/comments/(?P<comment_id>\d+)", "edit_comment"),
    ("GET", rf"{REPO}/issues", "list_issues"),
    ("POST", rf"{REPO}/issues", "create_issue"),
    ("PATCH", rf"{REPO}/issues/(?P<number>\d+)", "edit_issue"),
    ("POST", rf"{REPO}/statuses/(?P<sha>[0-9a-f]{{40}})", "create_status"),
    ("GET", rf"{REPO}/commits/(?P<sha>[0-9a-f]{{40}})/pulls", "pulls_for_commit"),
    ("GET", rf"{REPO}/pulls", "list_pulls"),
    ("GET", rf"{REPO}/releases/(?P<release_id>\d+)/assets", "list_assets"),
    ("POST", rf"{REPO}/releases/(?P<release_id>\d+)/assets", "upload_asset"),  # the upload host
    ("DELETE", rf"{REPO}/releases/assets/(?P<asset_id>\d+)", "delete_asset"),
]


class FakeGitHub:
    """The API's state; every public attribute may be read or set by a test."""

    def __init__(self) -> None:
        self.root = ""  # http://127.0.0.1:PORT, set by the fixture
        self.prefix = ""  # "/api/v3" makes it a GitHub Enterprise server
        self.tokens = {
            WRITE_TOKEN: Token(BOT),
            READ_ONLY_TOKEN: Token(BOT, can_write=False),
            USER_TOKEN: Token("octocat"),
            APP_TOKEN: Token(APP),
        }
        self.comments: dict[int, Comment] = {}
        self.issues: dict[int, Issue] = {}
        self.statuses: list[dict[str, Any]] = []
        self.pulls: list[Pull] = []
        self.assets: dict[int, Asset] = {}
        self.received: list[Received] = []
        self._faults: list[tuple[str, str, Reply]] = []
        self._ids = itertools.count(1001)
        self._lock = threading.Lock()

    @property
    def api_url(self) -> str:
        """What ``GITHUB_API_URL`` says on a runner talking to this server."""
        return f"{self.root}{self.prefix}"

    # --- programming and inspecting it -------------------------------------------------

    def fail(self, method: str, path_pattern: str, *replies: Reply) -> None:
        """Answer the next matching requests (``re.search`` on the path) with these replies."""
        self._faults.extend((method, path_pattern, reply) for reply in replies)

    def add_comment(self, number: int, body: str, login: str = BOT) -> Comment:
        comment = Comment(next(self._ids), number, login, body)
        self.comments[comment.id] = comment
        return comment

    def add_comments(self, number: int, count: int, login: str = "reviewer") -> None:
        for index in range(count):
            self.add_comment(number, f"comment {index}", login)

    def add_issue(self, body: str, login: str = BOT, **fields: Any) -> Issue:
        issue = Issue(len(self.issues) + 1, login, fields.pop("title", "an issue"), body, **fields)
        self.issues[issue.number] = issue
        return issue

    def comments_on(self, number: int) -> list[Comment]:
        return [c for c in self.comments.values() if c.number == number]

    def calls(self, method: str, path_pattern: str = "") -> list[Received]:
        return [r for r in self.received if r.method == method and re.search(path_pattern, r.path)]

    # --- the HTTP side ------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Reply:
        split = urlsplit(target)
        if not split.path.startswith(f"{self.prefix}/"):  # Enterprise serves only /api/v3/...
            return error(404, "Not Found")
        path = split.path.removeprefix(self.prefix)
        is_json = headers.get("content-type", "application/json").startswith("application/json")
        payload = json.loads(raw) if raw and is_json else None
        request = Received(method, path, dict(parse_qsl(split.query)), headers, payload, raw)
        with self._lock:
            self.received.append(request)
            fault = self._fault_for(request)
            if fault is None:
                return self._route(request)
            if fault.acts:
                self._route(request)  # done, but the client hears only the fault
            return fault

    def _fault_for(self, request: Received) -> Reply | None:
        for index, (method, pattern, _) in enumerate(self._faults):
            if method == request.method and re.search(pattern, request.path):
                return self._faults.pop(index)[2]
        return None

    def _route(self, request: Received) -> Reply:
        token = self.tokens.get(request.headers.get("authorization", "").removeprefix("Bearer "))
        if token is None:
            return error(401, "Bad credentials")
        for method, pattern, name in ROUTES:
            match = re.fullmatch(pattern, request.path)
            if match and method == request.method:
                if method != "GET" and not token.can_write:
                    return error(403, FORBIDDEN)
                return getattr(self, name)(request, token, **match.groupdict())
        return error(404, "Not Found")

    # --- the endpoints ------------------------------------------------------------------

    def get_user(self, request: Received, token: Token) -> Reply:
        if token.login.endswith("[bot]"):  # installation tokens may not read /user
            return error(403, FORBIDDEN)
        return Reply(200, {"login": token.login, "id": 1, "type": "User"})

    def list_comments(self, request: Received, token: Token, number: str) -> Reply:
        items = [comment_json(c, self.api_url) for c in self.comments_on(int(number))]
        return self._page(request, items, f"/issues/{number}/comments")

    def list_issues(self, request: Received, token: Token) -> Reply:
        state = request.query.get("state", "open")
        issues = [i for i in self.issues.values() if state in (i.state, "all")]
        return self._page(request, [issue_json(i) for i in issues], "/issues")

    def create_issue(self, request: Received, token: Token) -> Reply:
        invalid = _invalid_body(request.json)
        if invalid:
            return invalid
        issue = self.add_issue(request.json["body"], token.login, title=request.json["title"])
        return Reply(201, issue_json(issue))

    def edit_issue(self, request: Received, token: Token, number: str) -> Reply:
        issue = self.issues.get(int(number))
        if issue is None:
            return error(404, "Not Found")
        changes = request.json or {}
        if "body" in changes and (invalid := _invalid_body(changes)):
            return invalid
        for name in ("body", "title", "state", "state_reason"):
            if name in changes:
                setattr(issue, name, changes[name])
        return Reply(200, issue_json(issue))

    def _page(self, request: Received, items: list[dict[str, Any]], path: str) -> Reply:
        """One page of a listing, with the Link header GitHub sends (by repository id)."""
        per_page = min(int(request.query.get("per_page", 30)), 100)
        page = int(request.query.get("page", 1))
        shown = items[(page - 1) * per_page : page * per_page]
        query = "&".join(f"{k}={v}" for k, v in request.query.items() if k != "page")
        pages = f"{self.api_url}/repositories/{REPOSITORY_ID}{path}?{query}"
        return Reply(200, shown, _link(pages, page, len(items), per_page))

    def create_comment(self, request: Received, token: Token, number: str) -> Reply:
        invalid = _invalid_body(request.json)
        if invalid:
            return invalid
        comment = Comment(next(self._ids), int(number), token.login, request.json["body"])
        self.comments[comment.id] = comment
        return Reply(201, comment_json(comment, self.api_url))

    def edit_comment(self, request: Received, token: Token, comment_id: str) -> Reply:
        comment = self.comments.get(int(comment_id))
        invalid = error(404, "Not Found") if comment is None else _invalid_body(request.json)
        if invalid:
            return invalid
        comment.body = request.json["body"]
        return Reply(200, comment_json(comment, self.api_url))

    def create_status(self, request: Received, token: Token, sha: str) -> Reply:
        status = {"context": "default", **(request.json or {}), "sha": sha}
        if status.get("state") not in {"error", "failure", "pending", "success"}:
            return error(422, "Validation Failed", errors=[{"field": "state", "code": "invalid"}])
        if len(status.get("description") or "") > 140:
            too_long = "description is too long (maximum is 140 characters)"
            return error(422, "Validation Failed", errors=[{"message": too_long}])
        self.statuses.append(status)
        return Reply(201, {"id": len(self.statuses), "creator": {"login": token.login}, **status})

    def pulls_for_commit(self, request: Received, token: Token, sha: str) -> Reply:
        """A fork's commit is not in this repository's branches: GitHub often lists no PR."""
        found = [p for p in self.pulls if p.head_sha == sha and p.owner == OWNER]
        return Reply(200, [_pull_json(p) for p in found])

    def list_pulls(self, request: Received, token: Token) -> Reply:
        state, head = request.query.get("state", "open"), request.query.get("head")
        found = [p for p in self.pulls if state in (p.state, "all")]
        return Reply(200, [_pull_json(p) for p in found if head in (None, f"{p.owner}:{p.branch}")])


    def list_assets(self, request: Received, token: Token, release_id: str) -> Reply:
        found = [a for a in self.assets.values() if a.release_id == int(release_id)]
        return self._page(request, [asset_json(a) for a in found], f"/releases/{release_id}/assets")

    def upload_asset(self, request: Received, token: Token, release_id: str) -> Reply:
        name = request.query.get("name", "")
        if any(a.release_id == int(release_id) and a.name == name for a in self.assets.values()):
            return error(422, "Validation Failed", errors=[{"code": "already_exists"}])
        kind = request.headers.get("content-type", "")
        asset = Asset(next(self._ids), int(release_id), name, token.login, kind, request.raw)
        self.assets[asset.id] = asset
        return Reply(201, asset_json(asset))

    def delete_asset(self, request: Received, token: Token, asset_id: str) -> Reply:
        if self.assets.pop(int(asset_id), None) is None:
            return error(404, "Not Found")
        return Reply(204)


def asset_json(asset: Asset) -> dict[str, Any]:
    kind = "Bot" if "[bot]" in asset.uploader else "User"
    download = f"https://github.com/{REPOSITORY}/releases/download/v1/{asset.name}"
    return {
        "id": asset.id,
        "name": asset.name,
        "content_type": asset.content_type,
        "size": len(asset.data),
        "uploader": {"login": asset.uploader, "type": kind},
        "browser_download_url": download,
    }


def comment_json(comment: Comment, base: str) -> dict[str, Any]:
    page = f"https://github.com/{REPOSITORY}/pull/{comment.number}"
    return {
        "id": comment.id,
        "url": f"{base}/repos/{REPOSITORY}/issues/comments/{comment.id}",
        "html_url": f"{page}#issuecomment-{comment.id}",
        "body": comment.body,
        "user": {"login": comment.login, "type": "Bot" if "[bot]" in comment.login else "User"},
    }


def issue_json(issue: Issue) -> dict[str, Any]:
    kind = "pull" if issue.is_pull else "issues"
    item = {
        "id": 500_000 + issue.number,
        "number": issue.number,
        "html_url": f"https://github.com/{REPOSITORY}/{kind}/{issue.number}",
        "title": issue.title,
        "body": issue.body,
        "state": issue.state,
        "state_reason": issue.state_reason,
        "user": {"login": issue.login, "type": "Bot" if "[bot]" in issue.login else "User"},
    }
    if issue.is_pull:
        item["pull_request"] = {"url": f"https://api.github.com/repos/{REPOSITORY}/pulls/1"}
    return item


def _link(url: str, page: int, total: int, per_page: int) -> dict[str, str]:
    """GitHub's Link header: prev, next, last, first; none at all for a single page."""
    last = max(1, -(-total // per_page))
    if last == 1:
        return {}
    wanted = {"prev": page - 1, "next": page + 1, "last": last, "first": 1}
    shown = {rel: n for rel, n in wanted.items() if 1 <= n <= last and n != page}
    return {"Link": ", ".join(f'<{url}&page={n}>; rel="{rel}"' for rel, n in shown.items())}


def _invalid_body(payload: Any) -> Reply | None:
    body = (payload or {}).get("body")
    if not body:
        return error(422, "Validation Failed", errors=[{"field": "body", "code": "missing_field"}])
    if len(body) > 65_536:
        too_long = "Body is too long (maximum is 65536 characters)"
        return error(422, "Validation Failed", errors=[{"field": "body", "message": too_long}])
    return None


def _pull_json(pull: Pull) -> dict[str, Any]:
    head = {"sha": pull.head_sha, "ref": pull.branch, "label": f"{pull.owner}:{pull.branch}"}
    return {
        "number": pull.number,
        "state": pull.state,
        "html_url": f"https://github.com/{REPOSITORY}/pull/{pull.number}",
        "head": head,
        "base": {"repo": {"full_name": REPOSITORY}},
    }


def _encode(body: Any) -> tuple[bytes, str]:
    """The bytes of a ``Reply`` body, and their content type."""
    if isinstance(body, bytes):
        return body, "application/json"
    if isinstance(body, str):
        return body.encode(), "text/html"
    return json.dumps(body).encode(), "application/json"


def _handler(fake: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {name.lower(): value for name, value in self.headers.items()}
            reply = fake.handle(self.command, self.path, headers, raw)
            time.sleep(reply.delay)  # outside the fake's lock: the client's retry gets in
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._answer(reply)  # unless the client timed out and hung up: the delay's point

        def _answer(self, reply: Reply) -> None:
            data, content_type = _encode(reply.body) if reply.status != 204 else (b"", "")
            self.send_response(reply.status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in {"x-ratelimit-remaining": "4999", **reply.headers}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read ``fake.received`` instead."""

    return Handler


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A loopback server on a free port for the length of a test; its root URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def github_api() -> Iterator[FakeGitHub]:
    """A fresh fake GitHub on a free loopback port, for one test."""
    fake = FakeGitHub()
    with serving(_handler(fake)) as fake.root:
        yield fake
