"""A remote file read by ranges, and what every remote read of a run shares."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from diffai.sources.http import Client, Endpoint, Retry
from diffai.sources.plan import ReadPlan, Span


@dataclass(frozen=True)
class Settings:
    """What every remote read of a run shares: the environment it was started with (tokens,
    endpoints), one HTTP client (its connection pool, retries and byte count)."""

    environ: Mapping[str, str] = field(repr=False)
    client: Client

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None,
                     retry: Retry | None = None) -> Settings:  # fmt: skip
        return cls(dict(os.environ if environ is None else environ), Client(retry=retry))


class RemoteFile:
    """A file read by ranges through ``Client``: its first ``HEAD_BYTES`` come with the
    request that learns its size and are kept, so no byte is asked for twice."""

    def __init__(self, name: str, client: Client, endpoint: Endpoint,
                 sha256: str | None = None) -> None:  # fmt: skip
        self.name = name
        self.sha256 = sha256
        self._client = client
        self.size, self._head, self._endpoint = client.probe(endpoint, sha256)
        self._plan: ReadPlan | None = None

    def plan(self, spans: Sequence[Span]) -> None:
        """The ranges about to be read, in order: small ones then come as few requests
        (``diffai.sources.plan``); only what lies past the kept head, which is here."""
        head = len(self._head)
        ahead = [(max(start, head), end) for start, end in spans if head < end <= self.size]
        fetch, endpoint = self._client.fetch_later, self._endpoint
        self._plan = ReadPlan(lambda start, end: fetch(endpoint, start, end, self.size), ahead)

    def read(self, start: int, end: int) -> bytes:
        return b"".join(self.stream(start, end))

    def stream(self, start: int, end: int) -> Iterator[bytes]:
        """The kept head's part, then the planned block's or ranges whose first requests are
        already on their way."""
        end = min(end, self.size)
        kept = [self._head[start : min(end, len(self._head))]] if start < len(self._head) else []
        start = max(start, len(self._head))
        if start >= end:
            return iter(kept)
        planned = self._plan.take(start, end) if self._plan is not None else None
        rest = [planned] if planned is not None else self._client.stream(
            self._endpoint, start, end, self.size
        )
        return itertools.chain(kept, rest)
