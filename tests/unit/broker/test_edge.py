"""The connection front's rules (``broker.edge``): pools, header ends, caps, body deadlines."""

from __future__ import annotations

import socket

import pytest

from broker.edge import AddressCounter, BodyDeadline, RefusalLog, header_end, is_long_poll


@pytest.mark.parametrize(
    ("head", "long_poll"),
    [
        (b"POST /api/v1/agent/claim HTTP/1.1\r\n", True),
        (b"POST /api/v1/agent/claim?wait=0 HTTP/1.1\r\n", True),  # a claim is always one
        (b"\r\nPOST /api/v1/agent/claim HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (b"GET /api/v1/jobs/j1?version=3&wait=30 HTTP/1.1\r\n", True),
        (b"GET /api/v1/jobs/j1/logs/stdout?offset=0&wait=5 HTTP/1.1\r\n", True),
        (b"POST /api/v1/agent/jobs/j1/lease?epoch=1&wait=20 HTTP/1.1\r\n", True),
        (b"GET /api/v1/jobs/j1?wait=0 HTTP/1.1\r\n", False),
        (b"GET /api/v1/jobs/j1?wait= HTTP/1.1\r\n", False),
        (b"GET /api/v1/jobs/j1?await=5 HTTP/1.1\r\n", False),
        (b"GET /api/v1/health HTTP/1.1\r\n", False),
        (b"PATCH /api/v1/jobs/j1/inputs/a HTTP/1.1\r\n", False),
        (b"GET /api/v1/agent/claim HTTP/1.1\r\n", False),
        (b"POST /api/v1/agent/claimx HTTP/1.1\r\n", False),
        (b"garbage", False),
        (b"", False),
    ],
)  # fmt: skip
def test_long_polls_are_told_from_ordinary_requests(head: bytes, long_poll: bool) -> None:
    assert is_long_poll(head) is long_poll


@pytest.mark.parametrize(
    ("buffer", "end"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", 27),
        (b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", 22),  # blank lines before a request are skipped
        (b"GET / HTTP/1.1\r\nHost: a\r\n", -1),
        (b"\r\n\r\n", -1),
        (b"", -1),
    ],
)
def test_a_header_is_complete_at_its_blank_line(buffer: bytes, end: int) -> None:
    assert header_end(buffer) == end


def test_the_cap_counts_per_address_and_frees_on_release() -> None:
    counter = AddressCounter(cap=2)
    assert counter.acquire("10.0.0.1") and counter.acquire("10.0.0.1")
    assert not counter.acquire("10.0.0.1")
    assert counter.acquire("10.0.0.2")  # another address has its own count
    counter.release("10.0.0.1")
    assert counter.count("10.0.0.1") == 1 and counter.acquire("10.0.0.1")
    counter.release("10.0.0.2")
    counter.release("10.0.0.2")  # one release too many never goes below zero
    assert counter.count("10.0.0.2") == 0


def test_refusals_are_logged_once_per_address_and_interval_with_the_count() -> None:
    lines: list[tuple[str, int]] = []
    now = [0.0]
    refusals = RefusalLog(lambda address, count: lines.append((address, count)),
                          interval=10, clock=lambda: now[0])  # fmt: skip
    for _ in range(5):
        refusals.refused("a")
    refusals.refused("b")
    assert lines == [("a", 1), ("b", 1)]
    now[0] = 10.0
    refusals.refused("a")
    assert lines[-1] == ("a", 5)  # the four held back plus this one


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_body_must_keep_its_minimum_rate_after_the_grace() -> None:
    left, right = socket.socketpair()
    clock = FakeClock()
    try:
        reader = BodyDeadline(left, idle=5.0, min_rate=100, clock=clock)
        assert reader.deadline() == 105.0
        right.sendall(b"x" * 200)
        assert reader.recv(1000) == b"x" * 200
        assert reader.deadline() == 107.0  # 200 bytes at 100 B/s earn 2 s more
        assert left.gettimeout() is None  # the socket's own timeout is put back
        clock.now = 107.5
        with pytest.raises(TimeoutError, match="slower than 100 bytes/s"):
            reader.recv(1000)
        assert reader.fileno() == left.fileno()  # everything else is the socket's
    finally:
        left.close()
        right.close()


def test_a_silent_body_times_out_at_the_idle_limit() -> None:
    left, right = socket.socketpair()
    try:
        left.settimeout(30.0)  # the app's own, longer: the front's limit wins
        reader = BodyDeadline(left, idle=0.2, min_rate=1)
        with pytest.raises(TimeoutError):
            reader.recv(10)
        assert left.gettimeout() == 30.0
    finally:
        left.close()
        right.close()
