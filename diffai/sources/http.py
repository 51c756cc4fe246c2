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
import urllib3

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
TRANSIENT = (
    requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
)  # fmt: skip


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
        self._probes: dict[str | None, tuple[int, bytes]] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=4 * depth, thread_name_prefix="diffai-range")

    def fetch(self, endpoint: Endpoint, start: int, end: int, size: int | None = None) -> bytes:
        """Bytes ``start..end`` exactly; ``size`` (the file's, once known) is checked against
        every answer, so a file replaced while it is read is refused, not mixed."""
        return self._run(_Range(endpoint, start, end, size)).buffer  # type: ignore[return-value]

    def fetch_later(self, endpoint: Endpoint, start: int, end: int, size: int) -> Future[bytes]:
        """``fetch`` in the pool: the bytes come while the caller reads what came before."""
        return self._pool.submit(self.fetch, endpoint, start, end, size)

    def stream(self, endpoint: Endpoint, start: int, end: int, size: int) -> Iterator[bytes]:
        """``start..end`` as blocks in order, ``depth`` requests in flight ahead of the reader.

        The first requests go out now, not at the first ``next``: the comparison asks for
        both sides' streams before it reads either, so their latencies overlap.
        """
        bounds = deque(
            (begin, min(begin + self.block, end)) for begin in range(start, end, self.block)
        )
        pending: deque[Future[bytes]] = deque()
        self._top_up(endpoint, size, bounds, pending)
        return self._drain(endpoint, size, bounds, pending)

    def _top_up(self, endpoint: Endpoint, size: int, bounds: deque[tuple[int, int]],
                pending: deque[Future[bytes]]) -> None:  # fmt: skip
        while bounds and len(pending) < self.depth:
            pending.append(self.fetch_later(endpoint, *bounds.popleft(), size))

    def _drain(self, endpoint: Endpoint, size: int, bounds: deque[tuple[int, int]],
               pending: deque[Future[bytes]]) -> Iterator[bytes]:  # fmt: skip
        try:
            while pending:
                block = pending.popleft().result()
                self._top_up(endpoint, size, bounds, pending)
                yield block
        finally:
            for future in pending:
                future.cancel()

    def probe(self, endpoint: Endpoint, sha256: str | None = None) -> tuple[int, bytes, Endpoint]:
        """The file's size and first bytes, in one request; the endpoint after redirects.

        A file whose store-computed SHA-256 was probed before (the same shard on both
        sides) is not asked for again: the same hash is the same bytes.
        """
        if sha256 in self._probes:
            size, head = self._probes[sha256]
            return size, head, endpoint
        done = self._run(_Range(endpoint, 0, HEAD_BYTES, None))
        assert done.size is not None  # every answer states it
        if sha256:
            self._probes[sha256] = done.size, bytes(done.buffer)
        return done.size, bytes(done.buffer), done.endpoint

    def _run(self, wanted: _Range) -> _Range:
        """Requests until the range is complete: a drop resumes at the byte reached, and
        only tries without progress count towards ``Retry.attempts``."""
        attempt, reached = 0, wanted.position
        while wanted.position < wanted.end:
            try:
                self._fill(wanted)
            except (*TRANSIENT, _Retryable) as exc:
                if wanted.position > reached:
                    attempt, reached = 0, wanted.position
                after = exc.after if isinstance(exc, _Retryable) else None
                attempt = self._retry_or_raise(wanted.endpoint, attempt, _problem(exc), after)
        return wanted

    def _fill(self, wanted: _Range) -> None:
        response, wanted.endpoint = self._follow(wanted.endpoint, wanted.position, wanted.end)
        with response:
            wanted.size = _answered_size(
                wanted.endpoint, response, wanted.position, wanted.end, wanted.size
            )
            wanted.end = min(wanted.end, wanted.size)  # a probe asks more than a small file has
            del wanted.buffer[wanted.end - wanted.start :]
            while wanted.position < wanted.end:
                # read1: what has arrived, so a drop loses none of it and the retry resumes
                # at the very next byte (read(amt) drops a partial read with its error).
                piece = response.raw.read1(min(1 << 20, wanted.end - wanted.position))
                if not piece:
                    break
                offset = wanted.position - wanted.start
                wanted.buffer[offset : offset + len(piece)] = piece
                wanted.position += len(piece)
                self._count(len(piece))
        if wanted.position < wanted.end:
            raise requests.ConnectionError("the body ended early")

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


@dataclass
class _Range:
    """A range being fetched: where it has reached, into a buffer of its final size."""

    endpoint: Endpoint
    start: int
    end: int
    size: int | None
    position: int = -1
    buffer: bytearray = field(default_factory=bytearray, repr=False)

    def __post_init__(self) -> None:
        self.position = self.start
        self.buffer = bytearray(self.end - self.start)


class _Retryable(Exception):
    """A 5xx or 429 answer: worth another try after a while."""

    def __init__(self, problem: str, after: str | None) -> None:
        super().__init__(problem)
        self.after = after


def _problem(exc: Exception) -> str:
    """What failed, never the exception's text: requests puts the URL in it, and an S3 or
    CDN URL carries its signature in the query."""
    if isinstance(exc, _Retryable):
        return str(exc)
    if isinstance(
        exc, (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError)
    ):
        return "the connection dropped mid-body"
    return "the request timed out" if isinstance(exc, requests.Timeout) else "the connection failed"


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
    if status in (200, 206) and response.headers.get("Content-Encoding", "identity") != "identity":
        response.close()
        raise RemoteUnavailable(endpoint.name, "the server compressed a byte range; refused")
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
