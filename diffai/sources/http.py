"""Byte ranges over HTTP(S): the transport every remote source (Hub, S3, plain URL) ends in.

Plain ``requests`` (already a dependency; urllib3's pooled, thread-safe
connections) rather than fsspec's HTTP file system: fsspec's block caches read
ahead past what a reader asked for, so bytes get fetched twice or beyond the
tensors compared; its retries do not resume mid-range; and a server that ignores
``Range`` is read whole before fsspec notices. Here a range is fetched exactly,
resumed at the byte where a dropped connection stopped, retried with backoff on
5xx/429, and a 200 answer to a range request is refused before its body is read.

Redirects are followed by hand (``_follow``): credentials go only to the host
they were given for, never to the one a redirect names (the Hub's resolve URL
sends the bytes from a CDN), and an https URL may not redirect to plain http.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

import requests

from diffai.errors import RemoteUnavailable

if TYPE_CHECKING:
    from diffai.sources.remote import RemoteFile, Settings

#: The first request of a file asks for this much: most safetensors, GGUF and npy
#: headers fit, so opening a file is one round trip, and these bytes are kept (``head``).
HEAD_BYTES = 256 * 1024
#: One request of a tensor stream; a multiple of every itemsize, so blocks hold whole elements.
BLOCK_BYTES = 8 * 1024 * 1024
#: Requests in flight per stream: enough to hide 20 ms of latency at loopback speed.
DEPTH = 4
MAX_REDIRECTS = 5
TIMEOUT_SECONDS = 60
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
#: What a dropped or broken connection raises, at the start of a request or mid-body.
TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


@dataclass(frozen=True)
class Retry:
    """How failed requests are retried: ``attempts`` tries without progress, waiting
    ``delays`` between them (the last repeats); ``sleep`` is injectable so tests stay fast."""

    attempts: int = 6
    delays: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    #: A Retry-After longer than this is not waited for: the store is down, not busy.
    max_wait: float = 60.0

    def wait(self, attempt: int, retry_after: str | None) -> None:
        delay = self.delays[min(attempt, len(self.delays) - 1)]
        if retry_after and retry_after.strip().isdigit():
            delay = max(delay, min(float(retry_after), self.max_wait))
        self.sleep(delay)


@dataclass(frozen=True)
class Endpoint:
    """Where one file's bytes are: its URL, the headers only its own host may see (a token),
    and how refusals read (``hints``: HTTP status -> which credential is missing)."""

    name: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    hints: Mapping[int, str] = field(default_factory=dict)


class Client:
    """One HTTP session shared by every file of a run; counts the bytes it receives."""

    def __init__(self, session: requests.Session | None = None, retry: Retry | None = None,
                 block: int = BLOCK_BYTES, depth: int = DEPTH) -> None:  # fmt: skip
        self.session = session or _pooled_session()
        self.retry = retry or Retry()
        self.block = block
        self.depth = depth
        self.received = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=4 * depth, thread_name_prefix="diffai-range")

    def fetch(self, endpoint: Endpoint, start: int, end: int, size: int | None = None) -> bytes:
        """Bytes ``start..end`` exactly; ``size`` (the file's, once known) is checked against
        every answer, so a file replaced while it is read is refused, not mixed."""
        buffer = bytearray(end - start)
        attempt, position = 0, start
        while position < end:
            try:
                position = self._fill(endpoint, buffer, start, position, end, size)
            except _Resume as drop:
                attempt = 0 if drop.position > position else attempt  # progress resets the count
                position = drop.position
                attempt = self._retry_or_raise(
                    endpoint, attempt, f"the connection dropped ({drop})"
                )
            except TRANSIENT as exc:
                attempt = self._retry_or_raise(endpoint, attempt, f"the connection failed ({exc})")
            except _Retryable as answer:
                attempt = self._retry_or_raise(endpoint, attempt, answer.problem, answer.after)
        return bytes(buffer)

    def stream(self, endpoint: Endpoint, start: int, end: int, size: int) -> Iterator[bytes]:
        """``start..end`` as blocks in order, ``depth`` requests in flight ahead of the reader."""
        bounds = deque(
            (begin, min(begin + self.block, end)) for begin in range(start, end, self.block)
        )
        pending: deque[Future[bytes]] = deque()
        try:
            while bounds or pending:
                while bounds and len(pending) < self.depth:
                    pending.append(self._pool.submit(self.fetch, endpoint, *bounds.popleft(), size))
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()

    def probe(self, endpoint: Endpoint) -> tuple[int, bytes, Endpoint]:
        """The file's size and first bytes, in one request; the endpoint after redirects."""
        response, endpoint = self._follow(endpoint, 0, HEAD_BYTES)
        with response:
            size = _answered_size(endpoint, response, 0, HEAD_BYTES)
            head = response.content[:HEAD_BYTES]
        self._count(len(head))
        if len(head) != min(size, HEAD_BYTES):
            raise RemoteUnavailable(endpoint.name, "the server sent fewer bytes than it announced")
        return size, head, endpoint

    def _fill(self, endpoint: Endpoint, buffer: bytearray, start: int, position: int, end: int,
              size: int | None) -> int:  # fmt: skip
        """Reads into ``buffer`` from ``position`` to ``end``; a drop raises ``_Resume`` with
        the position reached, so the next request asks only for what is still missing."""
        response, _ = self._follow(endpoint, position, end)
        with response:
            _answered_size(endpoint, response, position, end, size)
            view = memoryview(buffer)
            try:
                for piece in response.iter_content(1 << 20):
                    take = min(len(piece), end - position)
                    view[position - start : position - start + take] = piece[:take]
                    position += take
                    self._count(take)
            except TRANSIENT as exc:
                if position < end:
                    raise _Resume(position, exc) from exc
        if position < end:
            raise _Resume(position, requests.ConnectionError("the body ended early"))
        return position

    def _follow(
        self, endpoint: Endpoint, start: int, end: int
    ) -> tuple[requests.Response, Endpoint]:
        """One range request, following redirects by hand (see the module's docstring)."""
        url, headers = endpoint.url, dict(endpoint.headers)
        for _ in range(MAX_REDIRECTS + 1):
            response = self.session.get(
                url, headers={**headers, "Range": f"bytes={start}-{end - 1}",
                              "Accept-Encoding": "identity"},
                stream=True, allow_redirects=False, timeout=TIMEOUT_SECONDS,
            )  # fmt: skip
            if not response.is_redirect:
                _check_status(endpoint, response)
                return response, Endpoint(endpoint.name, url, headers, endpoint.hints)
            url, headers = _redirected(endpoint, url, response, headers)
        raise RemoteUnavailable(endpoint.name, f"more than {MAX_REDIRECTS} redirects")

    def _retry_or_raise(self, endpoint: Endpoint, attempt: int, problem: str,
                        retry_after: str | None = None) -> int:  # fmt: skip
        if attempt + 1 >= self.retry.attempts:
            raise RemoteUnavailable(endpoint.name, f"{problem}, {attempt + 1} times; giving up")
        self.retry.wait(attempt, retry_after)
        return attempt + 1

    def _count(self, count: int) -> None:
        with self._lock:
            self.received += count

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.session.close()


class _Retryable(Exception):
    """A 5xx or 429 answer: worth another try after a while."""

    def __init__(self, problem: str, after: str | None) -> None:
        super().__init__(problem)
        self.problem, self.after = problem, after


class _Resume(requests.ConnectionError):
    """The connection dropped mid-body at ``position``: the next try starts there."""

    def __init__(self, position: int, cause: Exception) -> None:
        super().__init__(str(cause))
        self.position = position


def _pooled_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no ~/.netrc: credentials come only from the source that owns them
    adapter = requests.adapters.HTTPAdapter(pool_connections=8, pool_maxsize=32, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _redirected(endpoint: Endpoint, url: str, response: requests.Response,
                headers: dict[str, str]) -> tuple[str, dict[str, str]]:  # fmt: skip
    target = urljoin(url, response.headers.get("Location", ""))
    response.close()
    old, new = urlsplit(url), urlsplit(target)
    if old.scheme == "https" and new.scheme != "https":
        raise RemoteUnavailable(endpoint.name, f"an https URL redirected to {new.scheme}; refused")
    if new.scheme not in ("https", "http"):
        raise RemoteUnavailable(endpoint.name, f"a redirect to a {new.scheme!r} URL; refused")
    same_host = (old.hostname, old.port) == (new.hostname, new.port)
    return target, headers if same_host else {}


def _check_status(endpoint: Endpoint, response: requests.Response) -> None:
    status = response.status_code
    if status in (200, 206):
        return
    response.close()
    if status in RETRY_STATUSES:
        raise _Retryable(f"the server answered HTTP {status}", response.headers.get("Retry-After"))
    hint = endpoint.hints.get(status, "")
    reason = {401: "not authorized", 403: "access denied", 404: "not found"}.get(status, "refused")
    raise RemoteUnavailable(endpoint.name, f"HTTP {status} ({reason}){'; ' if hint else ''}{hint}")


def _answered_size(endpoint: Endpoint, response: requests.Response, start: int, end: int,
                   size: int | None = None) -> int:  # fmt: skip
    """The file's size from a range answer, which must be exactly the range asked for.

    A 200 is the whole file: accepted only when that is no more than was asked
    (a file smaller than ``HEAD_BYTES``); a server that ignores ``Range`` on a big
    file is refused before its body is read, not downloaded whole.
    """
    if response.status_code == 200:
        length = response.headers.get("Content-Length", "")
        if start == 0 and length.isdigit() and int(length) <= end and size in (None, int(length)):
            return int(length)
        response.close()
        raise RemoteUnavailable(
            endpoint.name,
            "the server ignored the Range header and began sending the whole file; diffai reads "
            "remote models only by byte ranges, so download the file and compare the local copy",
        )
    match = CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    if not match or match[3] == "*" or int(match[1]) != start:
        raise RemoteUnavailable(endpoint.name, "the server answered a range it was not asked for")
    total = int(match[3])
    if int(match[2]) + 1 != min(end, total) or (size is not None and total != size):
        raise RemoteUnavailable(endpoint.name, "the file changed size while it was being read")
    return total


# --- plain URLs -----------------------------------------------------------------------------

#: A plain URL carries its own credentials (a presigned URL does); diffai adds none to it.
URL_HINTS = {
    401: "a plain URL gets no credentials from diffai; use a presigned URL, or hf:// or s3://",
    403: "a plain URL gets no credentials from diffai; use a presigned URL, or hf:// or s3://",
    404: "check the URL",
}


@dataclass(frozen=True)
class UrlFolder:
    """The folder of a plain URL: its files open relative to it (an index's shards); it
    cannot be listed, since HTTP has no listing."""

    name: str
    client: Client

    def names(self) -> list[str]:
        raise RemoteUnavailable(
            self.name, "a plain URL cannot be listed; name the model file or its index.json"
        )

    def open(self, name: str) -> RemoteFile:
        from diffai.sources.remote import RemoteFile  # deferred: it imports this module

        url = urljoin(self.name, name)
        return RemoteFile(url, self.client, Endpoint(url, url, hints=URL_HINTS))


def locate(text: str, settings: Settings) -> tuple[UrlFolder, str | None]:
    folder, _, name = text.rpartition("/")
    return UrlFolder(folder + "/", settings.client), name or None
