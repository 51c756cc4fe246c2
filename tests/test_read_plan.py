"""Many small ranges of a remote file as few requests (``diffai.sources.plan``), over a real
range server on loopback that counts what it sends."""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator
from concurrent.futures import Future

import pytest

from diffai.sources.http import Client, Endpoint, Retry
from diffai.sources.plan import FetchLater, ReadPlan
from diffai.sources.remote import RemoteFile
from tests.remote_servers import RangeServer

#: A file of 300 ranges of 8 KiB after a kept head, as a MoE model's experts lie.
HEAD, PIECE, PIECES = 256 * 1024, 8 * 1024, 300
SPANS = [(HEAD + i * PIECE, HEAD + (i + 1) * PIECE) for i in range(PIECES)]


@pytest.fixture
def served() -> Iterator[tuple[RangeServer, RemoteFile]]:
    server = RangeServer()
    server.files["/model.bin"] = os.urandom(HEAD + PIECES * PIECE + 100)
    client = Client(retry=Retry(sleep=lambda _: None))
    url = f"{server.url}/model.bin"
    yield server, RemoteFile(url, client, Endpoint(url, url))
    client.close()
    server.close()


def test_touching_ranges_come_as_few_blocks_each_byte_once(served) -> None:
    server, remote = served
    remote.plan(SPANS)
    data = server.files["/model.bin"]
    for start, end in SPANS:
        assert b"".join(remote.stream(start, end)) == data[start:end]
    # 2.4 MB of ranges in one 4 MiB block: the probe and one request, not 301.
    assert server.requests == 2
    assert server.overlaps() == []
    assert server.bytes_sent() == HEAD + PIECES * PIECE


def test_blocks_break_at_gaps(served) -> None:
    server, remote = served
    every_other = SPANS[::2]  # no two touch: a block each, nothing between them fetched
    remote.plan(every_other)
    for start, end in every_other:
        assert b"".join(remote.stream(start, end)) == server.files["/model.bin"][start:end]
    assert server.requests == 1 + len(every_other)
    assert server.bytes_sent() == HEAD + len(every_other) * PIECE


class _Data(bytearray):
    """Bytes a test can hold a weak reference to (bytes itself cannot be)."""


def _recording() -> tuple[list[tuple[int, int]], FetchLater]:
    asked: list[tuple[int, int]] = []

    def fetch_later(start: int, end: int) -> Future[bytes]:
        asked.append((start, end))
        done: Future[bytes] = Future()
        done.set_result(bytes(end - start))
        return done

    return asked, fetch_later


def test_blocks_break_at_their_size_and_are_asked_for_depth_ahead() -> None:
    asked, fetch_later = _recording()
    spans = [(i * 256, (i + 1) * 256) for i in range(100)]
    plan = ReadPlan(fetch_later, spans, block=10 * 256, depth=2)
    assert asked == []  # nothing before the first read
    plan.take(*spans[0])
    assert asked == [(0, 2560), (2560, 5120), (5120, 7680)]  # the block read and two ahead
    for span in spans[1:]:
        assert plan.take(*span) is not None
    assert asked == [(i * 2560, (i + 1) * 2560) for i in range(10)]


def test_a_block_is_let_go_with_its_last_range() -> None:
    kept: list[weakref.ref[bytes]] = []

    def fetch_later(start: int, end: int) -> Future[bytes]:
        done: Future[bytes] = Future()
        data = _Data(end - start)
        kept.append(weakref.ref(data))
        done.set_result(data)
        return done

    spans = [(i * 256, (i + 1) * 256) for i in range(4)]
    plan = ReadPlan(fetch_later, spans, depth=0)
    plan.take(*spans[0])
    assert kept[0]() is not None  # three ranges of it still to come
    for span in spans[1:]:
        plan.take(*span)
    assert kept[0]() is None


def test_a_range_the_plan_does_not_hold_is_streamed_as_before(served) -> None:
    server, remote = served
    remote.plan(SPANS[:10])
    start, end = SPANS[20]
    assert b"".join(remote.stream(start, end)) == server.files["/model.bin"][start:end]
    assert server.requests == 2  # the probe, then that range alone: the plan fetched nothing


def test_a_range_taken_twice_is_fetched_again(served) -> None:
    server, remote = served
    remote.plan(SPANS[:3])
    for start, end in (*SPANS[:3], SPANS[0]):
        assert b"".join(remote.stream(start, end)) == server.files["/model.bin"][start:end]
    assert server.requests == 3  # probe, the block, and the first range once more
