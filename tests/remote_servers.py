"""Real servers on loopback for the remote sources: a range server with faults, a Hub stand-in.

``RangeServer`` serves files by path with HTTP ranges as S3, a CDN or nginx do,
and counts every byte it sends (``sent``: path -> [start, end) pieces, a cut
response's up to the cut). Faults are queued on it: ``latency`` per request,
``statuses`` answered before the next ranges (a 5xx burst), ``cuts`` (the next
responses drop the connection after that many bytes), ``ignore_range`` (a 200
with the whole body), ``token`` (401 without it, 403 with another).

``HubServer`` adds the Hub's API endpoints the client uses (``paths-info``,
``tree``) and ``resolve``, which redirects to a second server (the CDN, another
port, so another host for the client), as the Hub does.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class RangeServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.latency = 0.0
        self.statuses: deque[int] = deque()
        self.cuts: deque[int] = deque()
        self.ignore_range = False
        self.token: str | None = None
        self.redirects: dict[str, str] = {}  # path -> Location
        self.replaced: dict[str, bytes] = {}  # path -> what it holds after its first request
        self.sent: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.authorizations: list[str] = []
        self.requests = 0
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def bytes_sent(self, path: str | None = None) -> int:
        return sum(end - start for key, pieces in self.sent.items() if path in (None, key)
                   for start, end in pieces)  # fmt: skip

    def overlaps(self) -> list[tuple[str, int]]:
        """(path, byte) pairs of every byte sent twice (each file's first overlap)."""
        found = []
        for path, pieces in self.sent.items():
            reached = 0
            for start, end in sorted(pieces):
                if start < reached:
                    found.append((path, start))
                    break
                reached = end
        return found

    def route(self, handler: BaseHTTPRequestHandler) -> bool:
        """Subclasses answer their own paths here; True when answered."""
        return False

    def serve_file(self, handler: BaseHTTPRequestHandler, path: str) -> None:
        with self._lock:
            self.requests += 1
            status = self.statuses.popleft() if self.statuses else None
            cut = self.cuts.popleft() if self.cuts and status is None else None
        time.sleep(self.latency)
        self.authorizations.append(handler.headers.get("Authorization", ""))
        if status is not None:
            return _answer(handler, status, b"try again")
        if self.token is not None and not self._authorized(handler):
            return None
        if path in self.redirects:
            handler.send_response(302)
            handler.send_header("Location", self.redirects[path])
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return None
        if path not in self.files:
            return _answer(handler, 404, b"no such file")
        self._send_range(handler, path, self.files[path], cut)
        if path in self.replaced:
            self.files[path] = self.replaced.pop(path)
        return None

    def _authorized(self, handler: BaseHTTPRequestHandler) -> bool:
        given = handler.headers.get("Authorization")
        if given == f"Bearer {self.token}":
            return True
        _answer(handler, 403 if given else 401, b"denied")
        return False

    def _send_range(self, handler: BaseHTTPRequestHandler, path: str, data: bytes,
                    cut: int | None) -> None:  # fmt: skip
        asked = RANGE.match(handler.headers.get("Range", ""))
        start, end = 0, len(data)
        handler.protocol_version = "HTTP/1.1"
        if asked and not self.ignore_range:
            start = int(asked[1])
            end = min(len(data), int(asked[2]) + 1) if asked[2] else len(data)
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        else:
            handler.send_response(200)
        handler.send_header("Content-Length", str(end - start))
        handler.send_header("Accept-Ranges", "bytes")
        handler.end_headers()
        body = data[start:end] if cut is None else data[start : min(end, start + cut)]
        try:
            for offset in range(0, len(body), 1 << 16):
                handler.wfile.write(body[offset : offset + (1 << 16)])
                with self._lock:
                    self.sent[path].append(
                        (start + offset, start + min(len(body), offset + (1 << 16)))
                    )
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client closed it: refused a 200, or gave up
        if cut is not None:
            handler.close_connection = True


class HubServer(RangeServer):
    """The Hub's API for ``repos`` (repo -> revision -> path -> bytes); resolve redirects to
    ``cdn``, which serves blobs by SHA-256."""

    def __init__(self, cdn: RangeServer) -> None:
        super().__init__()
        self.cdn = cdn
        self.repos: dict[str, dict[str, dict[str, bytes]]] = {}
        self.api_calls: list[str] = []  # "paths-info" or "tree", one per API request

    def add(self, repo: str, revision: str, path: str, data: bytes) -> None:
        self.repos.setdefault(repo, {}).setdefault(revision, {})[path] = data
        self.cdn.files[f"/blobs/{hashlib.sha256(data).hexdigest()}"] = data

    def route(self, handler: BaseHTTPRequestHandler) -> bool:
        path = urlsplit(handler.path).path  # matched encoded: a revision may hold %2F
        api = re.match(r"^/api/models/([^/]+/[^/]+)/(paths-info|tree)/([^/]+)/?(.*)$", path)
        resolve = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if api is None and resolve is None:
            return False
        api, resolve = (_decoded(found) for found in (api, resolve))
        self.authorizations.append(handler.headers.get("Authorization", ""))
        if self.token is not None and not self._authorized(handler):
            return True
        if api is not None:
            self._api(handler, api[1], api[2], api[3], api[4])
        else:
            self._resolve(handler, resolve[1], resolve[2], resolve[3])  # type: ignore[index]
        return True

    def _api(self, handler: BaseHTTPRequestHandler, repo: str, kind: str, revision: str,
             folder: str) -> None:  # fmt: skip
        self.api_calls.append(kind)
        files = self.repos.get(repo, {}).get(revision)
        if files is None:
            return _answer(handler, 404, b'{"error": "Repository not found"}')
        if kind == "paths-info":
            length = int(handler.headers.get("Content-Length", "0"))
            asked = parse_qs(handler.rfile.read(length).decode()).get("paths", [])
            entries = [_entry(files, path) for path in asked]
            return _json(handler, [entry for entry in entries if entry])
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        names = {path[len(prefix) :].split("/")[0] for path in files if path.startswith(prefix)}
        return _json(handler, [_entry(files, prefix + name) for name in sorted(names)])

    def _resolve(
        self, handler: BaseHTTPRequestHandler, repo: str, revision: str, path: str
    ) -> None:
        data = self.repos.get(repo, {}).get(revision, {}).get(path)
        if data is None:
            return _answer(handler, 404, b"Entry not found")
        handler.send_response(302)
        handler.send_header("Location", f"{self.cdn.url}/blobs/{hashlib.sha256(data).hexdigest()}")
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return None


def _decoded(found: re.Match[str] | None) -> list[str] | None:
    """A route's parts, each percent-decoded, ``[whole, part, ...]`` as a match indexes."""
    return None if found is None else [unquote(part) for part in (found[0], *found.groups())]


def _entry(files: dict[str, bytes], path: str) -> dict[str, object] | None:
    if path in files:
        data = files[path]
        digest = hashlib.sha256(data).hexdigest()
        lfs = {"oid": digest, "size": len(data), "pointerSize": 134}
        return {"type": "file", "oid": digest[:40], "size": len(data), "path": path, "lfs": lfs}
    if any(name.startswith(path.rstrip("/") + "/") for name in files):
        return {"type": "directory", "oid": "0" * 40, "path": path}
    return None


def _answer(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _json(handler: BaseHTTPRequestHandler, document: object) -> None:
    body = json.dumps(document).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _handler(server: RangeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if not server.route(self):
                server.serve_file(self, unquote(urlsplit(self.path).path))

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    return Handler
